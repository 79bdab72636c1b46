"""Training scripts that show what batch normalization does.

python -m train.compare            # no BN vs Keras BN vs kbn BN (the `make run` job)
python -m train.train --bn kbn     # one run
python -m train.lr_sweep           # every variant over a range of learning rates
python -m train.diff_runs A B      # how far two runs are apart (e.g. 1 process vs 2 workers)
"""

import os


def _import_tensorflow_quietly():
    """Imports TensorFlow with its start-up noise kept out of the terminal.

    TF_CPP_MIN_LOG_LEVEL silences most of it; TensorFlow 2.21 still prints a few
    C++ lines (oneDNN, CUDA drivers) while its libraries load, so stderr points
    to /dev/null for the import only. Python errors are raised after it is restored.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)


_import_tensorflow_quietly()
