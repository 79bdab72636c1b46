"""Export: a model with kbn layers, and its folded copy, go through Keras's
`model.export` to a TensorFlow SavedModel, ONNX (tf2onnx) and LiteRT (the TFLite
converter), and each runtime's predictions are the Keras model's. The converters
treat kbn's layer as they treat `keras.layers.BatchNormalization`, and the
exported inference graphs hold no training-mode op.

What the converters do with Keras's own layer (measured, and asserted by
`test_keras_layer_baseline`): the TFLite converter folds every batch norm into
the convolution or dense layer before it (no MUL, no ADD left); tf2onnx folds a
batch norm into a bias-free `Conv` only, and leaves one `Mul` and one `Add` for
a batch norm after a convolution with a bias or after a dense layer (the bias
add sits between). kbn's layer must leave no more ops than that, of any type.

The models are channels-last: TensorFlow's CPU convolution without oneDNN
(`TF_ENABLE_ONEDNN_OPTS=0`) has no channels-first kernel.
"""

import collections
import contextlib
import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kbn
from kbn import _bn_layers
from layer_pairs import random_weights

# Keras's tf2onnx shim (keras/src/export/tf2onnx_lib.py) sets `np.object` for tf2onnx.
pytestmark = pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")

L = keras.layers
FORMATS = ("tf_saved_model", "onnx", "litert")
# The kbn options that have an inference form (`track_moving_statistics=False`
# normalizes with the batch's own statistics at inference too: not a deployable form).
OPTIONS = {
    "plain": {},
    "renorm": {"renorm": True},
    "ghost batches": {"virtual_batch_size": 2},
    "several axes": {"axis": [1, 3]},
    "cumulative average": {"momentum": None},
}
# The options whose layer Keras 3 has too (same numbers at inference as `plain`).
LIKE_KERAS = ("plain", "renorm", "ghost batches", "cumulative average")
# Exported predictions are the same float32 sums, reordered by the converters
# (and by folding): measured up to 7.3e-7 of the largest output (LiteRT; ONNX
# 4.2e-7, the SavedModel 0), either oneDNN setting. Allowed: 1e-5 of it.
TOLERANCE = 1e-5
# Ops that only a training-mode forward pass needs: the moving updates, the
# batch statistics, NaN safety's test and ghost batches' size check.
TRAINING_OPS = {
    "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp", "Assert", "Mean",
    "Sum", "Square", "SquaredDifference", "IsFinite", "StopGradient",
}


@dataclasses.dataclass
class Exported:
    """A model exported to one format and read back with that format's runtime.

    Attributes:
        path: the exported file or folder.
        predict: numpy inputs → numpy outputs, run by the runtime.
        ops: how many of each op type the runtime's graph holds.
    """

    path: str
    predict: object
    ops: collections.Counter


@dataclasses.dataclass
class Case:
    """One model, its Keras prediction on `inputs()`, and its export read back."""

    model: keras.Model
    expected: np.ndarray
    exported: Exported


def conv_model(batch_norm, dense_batch_norm=True, **options):
    """Two convolution + BN + ReLU blocks and a dense + BN + ReLU head on 16×16×3
    inputs; `batch_norm` is a BN class, or None for the same network without BN
    (every convolution then with a bias, as folding gives it one). The dense
    head's BN takes the options but `axis` ((N, 16) has no axis 3)."""
    keras.utils.set_random_seed(0)

    def normalized(x, **layer_options):
        return x if batch_norm is None else batch_norm(**layer_options)(x)

    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same")(inputs)
    x = L.ReLU()(normalized(x, **options))
    x = L.Conv2D(8, 3, padding="same", use_bias=batch_norm is None)(x)
    x = L.ReLU()(normalized(x, **options))
    x = L.Dense(16)(L.Flatten()(x))
    if dense_batch_norm:
        x = normalized(x, **{**options, "axis": -1})
    outputs = L.Dense(4)(L.ReLU()(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    # Non-zero biases: converters drop a zero bias, which would hide the bias a fold adds.
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    for layer in _bn_layers.batch_norm_layers(model):
        for weight in layer.weights:
            weight.assign(random_weights(layer, rng)[weight.name])
    return model


def keras_twin(model, dense_batch_norm):
    """The same network with `keras.layers.BatchNormalization`, `model`'s weights copied
    (γ, β and the moving statistics: all that inference reads)."""
    twin = conv_model(L.BatchNormalization, dense_batch_norm)
    for layer, twin_layer in zip(model.layers, twin.layers, strict=True):
        if _bn_layers.is_batch_norm(layer):
            weights = {weight.name: weight for weight in layer.weights}
            for twin_weight in twin_layer.weights:
                twin_weight.assign(weights[twin_weight.name])
        else:
            twin_layer.set_weights(layer.get_weights())
    return twin


@contextlib.contextmanager
def kernel_path(path):
    """`KBN_PATH` set while a model is traced (the export traces it)."""
    before = os.environ.get("KBN_PATH")
    os.environ["KBN_PATH"] = path
    try:
        yield
    finally:
        if before is None:
            del os.environ["KBN_PATH"]
        else:
            os.environ["KBN_PATH"] = before


def export(model, directory, format):
    """`model.export` to `format` in `directory`, read back with that format's runtime."""
    if format == "tf_saved_model":
        path = str(directory / "saved_model")
        model.export(path, format=format, verbose=False)
        return read_saved_model(path)
    if format == "onnx":
        pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (pip install kbn[dev])")
        onnxruntime = pytest.importorskip("onnxruntime", reason="needs onnxruntime (kbn[dev])")
        path = str(directory / "model.onnx")
        model.export(path, format=format, verbose=False)
        return read_onnx(path, onnxruntime)
    interpreter = pytest.importorskip(
        "ai_edge_litert.interpreter", reason="needs the LiteRT runtime, ai-edge-litert (kbn[dev])"
    )
    path = str(directory / "model.tflite")
    model.export(path, format=format, verbose=False)
    return read_litert(path, interpreter)


def read_saved_model(path):
    """The serving signature of a SavedModel, as TensorFlow Serving calls it."""
    serve = tf.saved_model.load(path).signatures["serving_default"]
    (input_name,) = serve.structured_input_signature[1]
    (output_name,) = serve.structured_outputs

    def predict(x):
        return serve(**{input_name: tf.constant(x)})[output_name].numpy()

    return Exported(path, predict, collections.Counter(node.op for node in graph_nodes(serve)))


def graph_nodes(concrete_function):
    """Every node of a traced function's graph, its function library included
    (the model's body sits in a called function)."""
    graph = concrete_function.graph.as_graph_def()
    nodes = list(graph.node)
    for function in graph.library.function:
        nodes.extend(function.node_def)
    return nodes


def read_onnx(path, onnxruntime):
    """An ONNX file in ONNX Runtime (CPU), and the op types of its graph."""
    import onnx  # tf2onnx's dependency

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def predict(x):
        return session.run(None, {input_name: x})[0]

    graph = onnx.load(path).graph
    return Exported(path, predict, collections.Counter(node.op_type for node in graph.node))


def read_litert(path, interpreter_module):
    """A .tflite file in the LiteRT interpreter (its serving signature), and its ops."""
    runner = interpreter_module.Interpreter(model_path=path, num_threads=1)
    signature = runner.get_signature_list()["serving_default"]
    (input_name,), (output_name,) = signature["inputs"], signature["outputs"]
    serve = runner.get_signature_runner("serving_default")

    def predict(x):
        return serve(**{input_name: x})[output_name]

    # LiteRT's Python API has no public op list; `_get_ops_details` is what its
    # own model analyzer reads. Used here only.
    ops = collections.Counter(op["op_name"] for op in runner._get_ops_details())
    return Exported(path, predict, ops)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """`exports(kind, option, format, path, dense_batch_norm)`: the model of `kind`
    ("kbn", "folded" for kbn's folded by `kbn.fold_batchnorm`, "keras" for its Keras
    twin, "bare" for the network without BN) exported to `format`, traced on
    kernel path `path`, as a `Case`; each one exported once per module."""
    done = {}

    def get(kind, option="plain", format="litert", path="auto", dense_batch_norm=True):
        key = (kind, option, format, path, dense_batch_norm)
        if key not in done:
            model = conv_model(None if kind == "bare" else kbn.BatchNormalization,
                               dense_batch_norm, **OPTIONS[option])
            if kind == "folded":
                model = kbn.fold_batchnorm(model)
            elif kind == "keras":
                model = keras_twin(model, dense_batch_norm)
            with kernel_path(path):
                # The Keras prediction, which also builds the model for export.
                expected = model.predict(inputs(), verbose=0)
                exported = export(model, tmp_path_factory.mktemp("export"), format)
            done[key] = Case(model, expected, exported)
        return done[key]

    return get


def inputs(batch=5):
    """A batch of 5: ghost batches of 2 do not divide it, and inference must not care."""
    return np.random.default_rng(2).normal(size=(batch, 16, 16, 3)).astype("float32")


def relative_error(expected, actual):
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("kind", ["kbn", "folded"])
@pytest.mark.parametrize("option", OPTIONS)
def test_predictions(exports, option, kind, format):
    """Each runtime's predictions are the Keras model's, folded or not. (The measured
    error and op list, for docs/tools.md, show with `pytest -rP`.)"""
    case = exports(kind, option, format)
    error = relative_error(case.expected, case.exported.predict(inputs()))
    print(f"{kind} {option} {format}: relative error {error:.1e}, ops {dict(case.exported.ops)}")
    assert error <= TOLERANCE


@pytest.mark.parametrize("format", FORMATS)
def test_predictions_on_the_fused_kernel(exports, format):
    """The fused kernel's inference form (FusedBatchNormV3) exports too."""
    case = exports("kbn", "plain", format, path="fused")
    error = relative_error(case.expected, case.exported.predict(inputs()))
    print(f"fused kernel {format}: relative error {error:.1e}, ops {dict(case.exported.ops)}")
    assert error <= TOLERANCE


def test_keras_layer_baseline(exports):
    """What the converters leave of Keras's own layer, next to the network without BN
    (the measurement that sets the expectation for kbn's): LiteRT folds all three BNs
    away; tf2onnx folds the one after the bias-free convolution and keeps a Mul and
    an Add for the other two. A converter release that changes this changes
    docs/tools.md too."""
    keras_litert = exports("keras", format="litert").exported
    bare_litert = exports("bare", format="litert").exported
    assert keras_litert.ops - bare_litert.ops == collections.Counter()
    keras_onnx = exports("keras", format="onnx").exported
    bare_onnx = exports("bare", format="onnx").exported
    assert keras_onnx.ops - bare_onnx.ops == collections.Counter({"Mul": 2, "Add": 2})


@pytest.mark.parametrize("format", ["onnx", "litert"])
@pytest.mark.parametrize("option", LIKE_KERAS)
def test_no_more_ops_than_keras_layer(exports, option, format):
    """kbn's layer converts to no more ops, of any type, than Keras's layer with the
    same weights (measured: the same op list)."""
    exported = exports("kbn", option, format).exported
    keras_exported = exports("keras", option, format).exported
    assert exported.ops - keras_exported.ops == collections.Counter()


@pytest.mark.parametrize("format", ["onnx", "litert"])
def test_fused_kernel_converts_like_keras_layer(exports, format):
    """The fused kernel's form too (`KBN_PATH=fused`), after convolutions. (On a 2-D
    tensor the kernel's input is reshaped to 4-D and back, and the converters keep the
    reshapes, see docs/tools.md; by default that is from 8192 features on. The head
    has no BN here for that reason.)"""
    exported = exports("kbn", "plain", format, path="fused", dense_batch_norm=False).exported
    keras_exported = exports("keras", "plain", format, dense_batch_norm=False).exported
    assert exported.ops - keras_exported.ops == collections.Counter()
    # Measured: fewer than Keras's in ONNX, where tf2onnx folds the kernel's
    # BatchNormalization node into the Conv even across the bias.
    bare = exports("bare", format=format).exported
    assert exported.ops - bare.ops == collections.Counter()


@pytest.mark.parametrize("format", ["onnx", "litert"])
@pytest.mark.parametrize("option", LIKE_KERAS)
def test_folded_model_has_no_batch_norm_arithmetic(exports, option, format):
    """The folded model converts to the ops of the same network without BN (every
    convolution with a bias): nothing is left of batch norm beside the convolutions."""
    folded = exports("folded", option, format).exported
    bare = exports("bare", format=format).exported
    assert folded.ops == bare.ops


@pytest.mark.parametrize(("kind", "format", "multiply_adds"), [
    ("kbn", "litert", 2), ("folded", "litert", 2), ("folded", "onnx", 2),
    ("kbn", "onnx", 3),  # + the dense head's BN, which tf2onnx keeps for Keras's layer too
])
def test_several_axes_keep_one_multiply_add(exports, kind, format, multiply_adds):
    """A BN with `axis=[1, 3]` scales each (row, channel) pair: no convolution can
    absorb that, and `fold_batchnorm` keeps it. It runs as one multiply and one add
    per layer (2 layers); LiteRT folds the dense head's plain BN away, and the fold does."""
    exported = exports(kind, "several axes", format).exported
    bare = exports("bare", format=format).exported
    arithmetic = {"MUL", "ADD", "Mul", "Add"}
    excess = collections.Counter(
        {op: n for op, n in (exported.ops - bare.ops).items() if op in arithmetic}
    )
    mul, add = ("MUL", "ADD") if format == "litert" else ("Mul", "Add")
    assert excess == collections.Counter({mul: multiply_adds, add: multiply_adds})
    assert "BatchNormalization" not in exported.ops


def training_ops(nodes):
    """The training-mode ops among a graph's nodes (a fused BN counts when it
    computes batch statistics)."""
    found = {node.op for node in nodes if node.op in TRAINING_OPS}
    found |= {node.op for node in nodes
              if node.op.startswith("FusedBatchNorm") and node.attr["is_training"].b}
    return found


@pytest.mark.parametrize("path", ["fused", "compiled", "generic"])
@pytest.mark.parametrize("option", OPTIONS)
def test_inference_graph_has_no_training_ops(exports, option, path):
    """The exported SavedModel (what the ONNX and LiteRT converters read too) runs
    inference only; the same check finds the moving updates and the batch statistics
    in a training-mode trace of the model."""
    case = exports("kbn", option, "tf_saved_model", path=path)
    serve = tf.saved_model.load(case.exported.path).signatures["serving_default"]
    assert training_ops(graph_nodes(serve)) == set()
    with kernel_path(path):
        training = tf.function(lambda x: case.model(x, training=True)).get_concrete_function(
            tf.TensorSpec((4, 16, 16, 3), tf.float32)
        )
    found = training_ops(graph_nodes(training))
    assert "AssignVariableOp" in found
    assert found & {"Mean", "FusedBatchNormV3"}
