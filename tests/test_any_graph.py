"""convert, fold_batchnorm, recalibrate and BatchStatsMonitor on any functional graph Keras
builds: operation nodes that are not layers (`x + 3.0`, `keras.ops.multiply` on Keras
tensors, as in MobileNetV3's hard-swish), layers called twice, a nested model."""

import keras
import numpy as np
import pytest

import kbn
from kbn import _bn_layers, _cloning
from kbn.callbacks import BatchStatsMonitor
from plain_keras import PlainKeras
from test_fold import TOLERANCE, randomize

pytestmark = pytest.mark.all_backends

L = keras.layers
X = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")


def hard_swish(x):
    """MobileNetV3's: an Add, a layer and two Multiply nodes."""
    return x * L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)


def graph_model():
    """Every kind of node, and each way a BN is placed among them (see `FOLDED`, `KEPT`)."""
    inner_inputs = keras.Input((6, 6, 4))
    hidden = L.BatchNormalization(name="inner_bn")(L.Conv2D(4, 1, name="inner_conv")(
        inner_inputs))
    inner = keras.Model(inner_inputs, hidden + 1.0, name="inner")

    inputs = keras.Input((8, 8, 3))
    x = kbn.BatchNormalization(name="bn_conv")(L.Conv2D(4, 3, name="conv")(inputs))
    x = kbn.BatchNormalization(name="bn_after_op")(hard_swish(x))
    x = L.BatchNormalization(name="bn_forward")(keras.ops.multiply(x, 2.0))
    x = L.Conv2D(4, 1, name="valid_conv")(x)
    shared_conv = L.Conv2D(4, 1, name="shared_conv")
    shared_bn = kbn.BatchNormalization(name="bn_shared")
    left = shared_conv(shared_bn(x))
    right = L.BatchNormalization(name="bn_after_shared_conv")(shared_conv(shared_bn(inner(x))))
    merged = keras.ops.concatenate([left, right], axis=-1)
    return randomize(keras.Model(inputs, L.Dense(3, name="head")(L.Flatten()(merged))))


FOLDED = {"bn_conv": "backward into conv", "bn_forward": "forward into valid_conv",
          "inner_bn": "backward into inner_conv"}
KEPT = {  # BN name: what its reason names
    "bn_after_op": ["operation before it (multiply", "operation after it (multiply"],
    "bn_shared": ["called more than once"],
    "bn_after_shared_conv": ["shared_conv) is shared", "operation after it (concatenate"],
}


def operations(model):
    return [op for op in model.operations if not isinstance(op, L.Layer)]


def test_convert_copies_operation_nodes_and_shared_layers():
    model = graph_model()
    converted = kbn.convert(model)
    assert all(type(layer) is kbn.BatchNormalization
               for layer in _bn_layers.batch_norm_layers(converted))
    assert len(_bn_layers.batch_norm_layers(converted)) == 6
    copied, original = operations(converted), operations(model)
    assert [type(op) for op in copied] == [type(op) for op in original]
    assert not {id(op) for op in copied} & {id(op) for op in original}
    assert _cloning.call_count(converted.get_layer("shared_conv")) == 2
    expected = keras.ops.convert_to_numpy(model(X))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(converted(X)), expected,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(converted(X, training=True)),
                               keras.ops.convert_to_numpy(model(X, training=True)),
                               rtol=1e-5, atol=1e-5)


def test_fold_keeps_what_it_cannot_fold_and_says_why(tmp_path):
    model = graph_model()
    expected = keras.ops.convert_to_numpy(model(X))
    folded, report = kbn.fold_batchnorm(model, return_report=True)
    assert report.folded == FOLDED
    assert sorted(report.kept) == sorted(KEPT)
    for name, words in KEPT.items():
        for word in words:
            assert word in report.kept[name], (name, report.kept[name])
    actual = keras.ops.convert_to_numpy(folded(X))
    assert np.max(np.abs(actual - expected)) <= TOLERANCE * np.max(np.abs(expected))
    path = str(tmp_path / "folded.keras")
    folded.save(path)
    with PlainKeras() as plain:
        assert plain.relative_error(path, X, expected) <= TOLERANCE


def test_calls_per_pass_counts_shared_layers_and_nested_models_called_twice():
    model = graph_model()
    calls = _cloning.calls_per_pass(model)
    count = {name: calls[id(model.get_layer(name))] for name in
             ("conv", "shared_conv", "bn_shared", "inner", "head")}
    assert count == {"conv": 1, "shared_conv": 2, "bn_shared": 2, "inner": 1, "head": 1}
    assert calls[id(model.get_layer("inner").get_layer("inner_bn"))] == 1
    inner = model.get_layer("inner")
    inputs = keras.Input((6, 6, 4))
    twice = keras.Model(inputs, inner(inner(inputs)))
    assert _cloning.calls_per_pass(twice)[id(inner.get_layer("inner_bn"))] == 2


def test_recalibrate_leaves_shared_layers_and_serves_the_others():
    model = graph_model()
    report = kbn.recalibrate(model, X, batch_size=len(X), unbiased=False)
    assert list(report.skipped) == ["bn_shared"]
    assert "called 2 times in one forward pass" in report.skipped["bn_shared"]
    assert sorted(change.name for change in report.layers) == sorted(
        ["bn_conv", "bn_after_op", "bn_forward", "inner_bn", "bn_after_shared_conv"])
    # The statistics of each layer's training-mode input over the one batch.
    names = ["bn_conv", "bn_after_op", "bn_after_shared_conv"]
    moving = {name: [keras.ops.convert_to_numpy(v) for v in
                     (model.get_layer(name).moving_mean, model.get_layer(name).moving_variance)]
              for name in names}
    probe = keras.Model(model.input, [model.get_layer(name).input for name in names])
    for name, values in zip(names, probe(X, training=True)):
        values = keras.ops.convert_to_numpy(values)
        np.testing.assert_allclose(moving[name][0], values.mean(axis=(0, 1, 2)), rtol=1e-4,
                                   atol=1e-5, err_msg=name)
        np.testing.assert_allclose(moving[name][1], values.var(axis=(0, 1, 2)), rtol=1e-4,
                                   atol=1e-5, err_msg=name)


def test_monitor_logs_every_layer_but_the_shared_one(tmp_path):
    model = graph_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    monitor = BatchStatsMonitor(str(tmp_path), every_n_steps=1, verbose=False)
    y = np.zeros((len(X), 3), "float32")
    model.fit(X, y, batch_size=4, epochs=1, callbacks=[monitor], verbose=0)
    logged = {record["layer"] for record in monitor.history if "mean_shift" in record}
    assert logged == {"bn_conv", "bn_after_op", "bn_forward", "inner_bn", "bn_after_shared_conv"}
    assert monitor.events == []


class _Shift(keras.Operation):
    """An operation node whose config does not serialize (a function argument)."""

    def __init__(self, amount):
        super().__init__()
        self.amount = amount

    def call(self, x):
        return x + self.amount()

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, x.dtype)


def test_an_operation_without_a_config_is_shared_by_the_copy():
    inputs = keras.Input((5,))
    shift = _Shift(lambda: 1.5)
    outputs = kbn.BatchNormalization(name="bn")(shift(L.Dense(4, name="dense")(inputs)))
    model = randomize(keras.Model(inputs, outputs))
    x = X.reshape(-1, 8)[:, :5]
    for copy in (kbn.convert(model, to="keras"), kbn.fold_batchnorm(model)):
        assert shift in copy.operations
        np.testing.assert_allclose(keras.ops.convert_to_numpy(copy(x)),
                                   keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-5)
