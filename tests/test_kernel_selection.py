"""The one place a kernel is chosen: which calls take the fast path, and the switch."""

import functools

import numpy as np
import pytest
import tensorflow as tf

import kbn
from kbn import _generic, _tf_fast


def kernel_for(monkeypatch, path, shape=(8, 4), training=True, mask=None, **config):
    monkeypatch.setenv("KBN_PATH", path)
    layer = kbn.BatchNormalization(**config)
    layer.build(shape)
    return layer._kernel(tf.zeros(shape), training=training, mask=mask)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(8, 4), (2, 3, 4), (2, 3, 3, 4), (2, 2, 3, 3, 4)])
def test_channels_last_float32_takes_the_fast_path(monkeypatch, shape, training):
    assert kernel_for(monkeypatch, "auto", shape, training) is _tf_fast
    assert kernel_for(monkeypatch, "fused", shape, training) is _tf_fast.always_fused
    assert kernel_for(monkeypatch, "compiled", shape, training) is _tf_fast.always_compiled
    assert kernel_for(monkeypatch, "generic", shape, training) is _generic


@pytest.mark.parametrize("onednn, kernel", [(True, "always_fused"), (False, "always_compiled")])
def test_fast_names_the_kernel_of_this_cpu_configuration(monkeypatch, onednn, kernel):
    """`KBN_PATH=fast` is what `auto` takes for large tensors: the fused kernel
    with oneDNN, the compiled passes without (TensorFlow's own report, read once)."""
    from tensorflow.python.util import _pywrap_util_port

    assert _tf_fast.ONEDNN == _pywrap_util_port.IsMklEnabled()
    forced = {True: _tf_fast.always_fused, False: _tf_fast.always_compiled}[_tf_fast.ONEDNN]
    assert kernel_for(monkeypatch, "fast") is forced
    monkeypatch.setattr(_tf_fast, "ONEDNN", onednn)
    big = tf.zeros((256, 1024))
    def forward(x, training):
        if training:
            return _tf_fast.train_forward(x, None, None, 1e-3, (1,), [0], None)[0]
        return _tf_fast.infer_forward(x, tf.zeros([1024]), tf.ones([1024]), None, None, 1e-3,
                                      (1,))

    for training in (True, False):
        graph = tf.function(functools.partial(forward, training=training))
        types = {op.type for op in graph.get_concrete_function(big).graph.get_operations()}
        compiled = bool({"PartitionedCall", "StatefulPartitionedCall"} & types)
        assert ("FusedBatchNormV3" in types) == (kernel == "always_fused"), types
        # Inference never calls a compiled function (exporters see plain ops).
        assert compiled == (kernel == "always_compiled" and training), types


@pytest.mark.parametrize(
    "kwargs",
    [
        {"axis": 1, "shape": (2, 4, 3, 3)},  # channels first
        {"mask": tf.ones((8,), bool)[:, None]},  # a mask
        {"synchronized": True},  # synchronized in training
        {"epsilon": 1e-6},  # below the fused kernel's smallest epsilon
    ],
)
def test_what_the_fast_path_cannot_serve_falls_back(monkeypatch, kwargs):
    assert kernel_for(monkeypatch, "auto", **kwargs) is _generic
    assert kernel_for(monkeypatch, "fast", **kwargs) is _generic
    assert kernel_for(monkeypatch, "compiled", **kwargs) is _generic


@pytest.mark.parametrize("config", [{"renorm": True}, {"virtual_batch_size": 4, "renorm": True}])
def test_renorm_never_asks_for_a_kernel(monkeypatch, config):
    """Their math lives in `_generic` only (the output needs the statistics first)."""
    layer = kbn.BatchNormalization(**config)
    layer.build((8, 4))

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel module was asked for")

    monkeypatch.setattr(layer, "_kernel", refuse)
    layer(np.ones((8, 4), "float32"), training=True)


@pytest.mark.parametrize("backend", ["jax", "numpy", "openvino"])
@pytest.mark.parametrize("path", ["auto", "fast"])
def test_backends_without_a_fast_module_keep_the_generic_path(monkeypatch, backend, path):
    """Only the backend's name is faked here; the layer reads it through Keras's
    public `keras.backend.backend()`. (PyTorch has a fast module of its own.)"""
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    assert kernel_for(monkeypatch, path, (2, 3, 3, 4)) is _generic


def test_unknown_switch_value_is_refused(monkeypatch):
    with pytest.raises(ValueError, match=r"KBN_PATH.*'fastest'"):
        kernel_for(monkeypatch, "fastest")


def test_both_paths_give_the_same_numbers_inside_fit(monkeypatch):
    """End to end: a fit() with a last, smaller batch, on each path."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(130, 6)).astype("float32")
    results = {}
    for path in ("auto", "fused", "compiled", "generic"):
        monkeypatch.setenv("KBN_PATH", path)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, use_bias=False),
                                  kbn.BatchNormalization(momentum=0.8), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, x[:, :1], batch_size=32, epochs=2, verbose=0)  # last batch: 2 samples
        results[path] = model.get_weights()
    for path in ("auto", "fused", "compiled"):
        for a, b in zip(results[path], results["generic"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_ghost_batches_take_a_kernel_unless_masked(monkeypatch):
    assert kernel_for(monkeypatch, "fused", virtual_batch_size=4) is _tf_fast.always_fused
    assert kernel_for(monkeypatch, "compiled", virtual_batch_size=4) is _tf_fast.always_compiled
    layer = kbn.BatchNormalization(virtual_batch_size=4)
    layer.build((8, 4))
    asked = []
    monkeypatch.setattr(layer, "_kernel", lambda *a, **k: asked.append(1) or _generic)
    layer(np.ones((8, 4), "float32"), training=True, mask=np.ones((8,), bool))
    assert not asked  # a mask goes to _generic without asking
