"""convert, fold_batchnorm and recalibrate on every keras.applications family with batch
norm: predictions kept, every BN after a linear layer folded, the folded file loading
with plain Keras.

Families left out: ConvNeXt normalizes with LayerNormalization and VGG16/19 have no
normalization (fold_batchnorm refuses a model without BN); Keras 3.15 has no RegNet.
MobileNetV3Large has the same blocks (hard-swish `x + 3.0` nodes included) as
MobileNetV3Small, which stands for both.

The models are float64. Randomly initialized BN networks amplify float32 rounding:
measured at these sizes, perturbing the input by 1e-7 (relative) moves the outputs by
1e-5 to 5e-4 of their largest value (up to 0.28 with moving statistics from 4 samples),
and a folded float32 model differs from its original by as much. In float64 the
folding alone is measured: up to 2.2e-12 of the largest output (EfficientNetV2B0),
convert 0. Allowed: 1e-9, which a wrong ε, a lost bias or a wrong channel misses by
orders of magnitude. TensorFlow only: JAX computes in float64 only with
`jax_enable_x64` set before start-up (the graphs are the same on every backend, and
tests/test_any_graph.py covers their kinds of node on all of them).

`pytest tests/test_applications.py -s -k fold` prints the table of docs/tools.md.
"""

import collections
import re

import keras
import numpy as np
import pytest

import kbn
from kbn import _bn_layers, _keras_compat
from plain_keras import PlainKeras

L = keras.layers
A = keras.applications
TOLERANCE = 1e-9

# Family → (constructor, the smallest input side it accepts).
FAMILIES = {
    "ResNet50": (A.ResNet50, 32), "ResNet50V2": (A.ResNet50V2, 32),
    "DenseNet121": (A.DenseNet121, 32), "MobileNet": (A.MobileNet, 32),
    "MobileNetV2": (A.MobileNetV2, 32), "MobileNetV3Small": (A.MobileNetV3Small, 32),
    "EfficientNetB0": (A.EfficientNetB0, 32), "EfficientNetV2B0": (A.EfficientNetV2B0, 32),
    "Xception": (A.Xception, 71), "InceptionV3": (A.InceptionV3, 75),
    "InceptionResNetV2": (A.InceptionResNetV2, 75), "NASNetMobile": (A.NASNetMobile, 32),
}
LINEAR = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D, L.DepthwiseConv2D,
          L.SeparableConv1D, L.SeparableConv2D, L.Conv1DTranspose, L.Conv2DTranspose,
          L.Conv3DTranspose)

Application = collections.namedtuple("Application", "name model calibration x expected report")


@pytest.fixture(scope="module", params=list(FAMILIES))
def application(request):
    """A float64 family member: dropout off, random γ and β, moving statistics those of
    4 calibration samples (recalibrate, biased variance); one family at a time in memory."""
    constructor, side = FAMILIES[request.param]
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        keras.utils.set_random_seed(0)
        model = constructor(weights=None, input_shape=(side, side, 3), classes=10,
                            classifier_activation=None)
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)
    for layer in _keras_compat.sublayers(model):
        if isinstance(layer, L.Dropout):
            layer.rate = 0.0  # training mode then differs from inference in BN alone
    rng = np.random.default_rng(0)
    for layer in _bn_layers.batch_norm_layers(model):
        shape = tuple(layer.moving_mean.shape)
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
        if layer.beta is not None:
            layer.beta.assign(rng.normal(0.0, 0.2, shape))
    calibration = rng.normal(size=(4, side, side, 3))
    report = kbn.recalibrate(model, calibration, batch_size=4, unbiased=False)
    x = rng.normal(size=(2, side, side, 3))
    return Application(request.param, model, calibration, x, predict(model, x), report)


@pytest.fixture(scope="module")
def plain_keras():
    with PlainKeras() as plain:
        yield plain


def predict(model, x, training=False):
    """One call's output; a training-mode call leaves the moving statistics as they were."""
    if not training:
        return keras.ops.convert_to_numpy(model(x))
    saved = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
    output = keras.ops.convert_to_numpy(model(x, training=True))
    for variable, value in zip(model.non_trainable_variables, saved):
        variable.assign(value)
    return output


def relative_error(actual, expected):
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


def test_recalibrate_gives_every_layer_its_batch_statistics(application):
    model = application.model
    names = [layer.name for layer in _bn_layers.batch_norm_layers(model)]
    assert [change.name for change in application.report.layers] == names
    assert application.report.skipped == {}
    for layer in _bn_layers.batch_norm_layers(model):  # moved off the initial (0, 1)
        assert np.any(keras.ops.convert_to_numpy(layer.moving_mean) != 0.0), layer.name
        assert np.any(keras.ops.convert_to_numpy(layer.moving_variance) != 1.0), layer.name
    # Moving statistics that are the calibration batch's: inference normalizes that
    # batch exactly as training does, in every layer at once.
    inference = predict(model, application.calibration)
    training = predict(model, application.calibration, training=True)
    assert relative_error(inference, training) <= TOLERANCE


def test_convert_keeps_predictions_in_inference_and_training(application):
    model = application.model
    converted = kbn.convert(model)
    classes = [type(layer) for layer in _bn_layers.batch_norm_layers(converted)]
    assert classes == [kbn.BatchNormalization] * len(_bn_layers.batch_norm_layers(model))
    assert relative_error(predict(converted, application.x), application.expected) <= TOLERANCE
    # Copies with equal weights; each call's batch statistics are its own.
    assert relative_error(predict(converted, application.x, training=True),
                          predict(model, application.x, training=True)) <= TOLERANCE


def graph_operations(model):
    """Every operation of `model`'s graph and of its nested models' graphs."""
    for operation in model.operations:
        yield operation
        if isinstance(operation, keras.Model):
            yield from graph_operations(operation)


def expected_folds(model):
    """{BN name: "backward" or "forward"}, read off the graph independently of kbn.fold:
    backward after a linear layer, with no activation, called once, whose output goes
    to this BN alone and is no model output; else forward into the one Dense or
    "valid" convolution that takes the BN's output."""
    operations = list(graph_operations(model))
    consumers = collections.defaultdict(list)
    for operation in operations:
        for node in _keras_compat.inbound_nodes(operation):
            for tensor in _keras_compat.node_inputs(node):
                consumers[id(tensor)].append(operation)
    outputs = {id(tensor) for operation in [model, *operations]
               if isinstance(operation, keras.Model) for tensor in operation.outputs}
    folds = {}
    for bn in _bn_layers.batch_norm_layers(model):
        producer = _keras_compat.producer(bn.input)
        if (isinstance(producer, LINEAR) and producer.get_config()["activation"] == "linear"
                and len(_keras_compat.inbound_nodes(producer)) == 1
                and id(bn.input) not in outputs
                and len(consumers[id(bn.input)]) == 1):
            folds[bn.name] = "backward"
            continue
        after = consumers[id(bn.output)]
        if (id(bn.output) not in outputs and len(after) == 1
                and type(after[0]) in (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)
                and getattr(after[0], "padding", "valid") == "valid"):
            folds[bn.name] = "forward"
    return folds


def test_fold_keeps_predictions_and_folds_every_bn_it_can(application, plain_keras, tmp_path):
    model = application.model
    bn_count = len(_bn_layers.batch_norm_layers(model))
    folded, report = kbn.fold_batchnorm(model, return_report=True)
    expected = expected_folds(model)
    assert {name: where.split()[0] for name, where in report.folded.items()} == expected
    assert len(report.kept) == bn_count - len(expected)
    assert all(report.kept.values())  # each with its reason
    left = _bn_layers.batch_norm_layers(folded)
    assert sorted(layer.name for layer in left) == sorted(report.kept)
    assert all(type(layer) is L.BatchNormalization for layer in left)
    error = relative_error(predict(folded, application.x), application.expected)
    assert error <= TOLERANCE

    path = tmp_path / f"{application.name}.keras"
    folded.save(str(path))
    assert plain_keras.relative_error(str(path), application.x, application.expected) \
        <= TOLERANCE
    path.unlink()  # up to 430 MB (InceptionResNetV2 in float64); pytest keeps tmp_path

    backward = sum(where.startswith("backward") for where in report.folded.values())
    reasons = collections.Counter(_reason_kind(reason) for reason in report.kept.values())
    print(f"\n| {application.name} | {bn_count} | {backward} | {len(report.folded) - backward} "
          f"| {len(report.kept)} | {'; '.join(f'{n}: {r}' for r, n in reasons.items())} "
          f"| {error:.1e} |")


def _reason_kind(reason):
    """A kept BN's reason with the layer names left out (for the table)."""
    return re.sub(r"\((\w+), ", "(", reason)
