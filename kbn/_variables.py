"""Running a model without keeping what the run does to its variables.

    with restored_variables(model):
        model(x, training=True)          # moves BN's moving statistics …
    # … which are back to what they were here, on every backend

Used wherever kbn or the pipeline calls a model in training mode only to look
(kbn.recalibrate, the activation monitor, the inference-gap check, train.explain).
"""

import contextlib

import keras


@contextlib.contextmanager
def restored_variables(model, variables=None):
    """Saves `variables` (default: all of `model.variables`) and assigns them back on exit,
    also when the block raises."""
    variables = list(model.variables if variables is None else variables)
    saved = [keras.ops.convert_to_numpy(variable) for variable in variables]
    try:
        yield
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)
