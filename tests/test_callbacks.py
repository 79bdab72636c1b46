"""kbn.callbacks.ActivationInputMonitor on user models: what it logs, when, and that it
changes nothing."""

import importlib.util

import keras
import numpy as np
import pytest

import kbn
from kbn.callbacks import ActivationInputMonitor, BatchStatsMonitor
from tensorboard_events import scalar_values, tags_by_plugin

pytestmark = pytest.mark.all_backends

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 5)).astype("float32")
Y = RNG.integers(0, 3, 64)


def functional_fused():
    """A functional model whose non-linearity sits inside Dense (no Activation layer)."""
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(7, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(hidden)
    return keras.Model(inputs, outputs)


def sequential_bn():
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6, use_bias=False, name="dense"),
            kbn.BatchNormalization(name="bn"),
            keras.layers.Activation("sigmoid", name="sigmoid"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )


def _fit(model, monitor, epochs=1, batch_size=16):
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    model.fit(
        X, Y, epochs=epochs, batch_size=batch_size, callbacks=[monitor], verbose=0, shuffle=False
    )


def test_fused_activation_is_probed_before_the_nonlinearity(tmp_path):
    model = functional_fused()
    kernel, bias = [w.copy() for w in model.get_layer("hidden").get_weights()]
    monitor = ActivationInputMonitor(X[:32], str(tmp_path), every_n_steps=100)
    _fit(model, monitor)
    first = monitor.history[0]
    assert (
        first["step"] == 0 and first["layer"] == "hidden"
    )  # the output layer is not chosen by default
    expected = np.percentile((X[:32] @ kernel + bias).ravel(), [15, 50, 85])
    np.testing.assert_allclose(
        [first["p15"], first["p50"], first["p85"]], expected, rtol=1e-5, atol=1e-6
    )
    # The activation is restored after probing.
    assert model.get_layer("hidden").activation is keras.activations.get("tanh")


@pytest.mark.parametrize("every, steps, expected_logs", [(1, 4, 5), (2, 4, 3), (3, 8, 3)])
def test_logs_every_n_steps(tmp_path, every, steps, expected_logs):
    monitor = ActivationInputMonitor(X[:8], str(tmp_path), every_n_steps=every)
    _fit(sequential_bn(), monitor, epochs=steps // 4)  # 64 samples / 16 = 4 steps per epoch
    assert [record["step"] for record in monitor.history] == list(range(0, steps + 1, every))[
        :expected_logs
    ]


def test_probe_leaves_moving_statistics_and_training_unchanged(tmp_path):
    model = sequential_bn()
    _fit(model, keras.callbacks.Callback())
    before = [v.numpy().copy() for v in model.non_trainable_variables]
    monitor = ActivationInputMonitor(X * 10 + 3, str(tmp_path), layer_names=["sigmoid"])
    monitor.set_model(model)
    monitor.on_train_begin()  # runs the probe once, in training mode
    monitor.on_train_end()
    for a, b in zip(before, [v.numpy() for v in model.non_trainable_variables]):
        np.testing.assert_array_equal(a, b)

    watched, plain = sequential_bn(), sequential_bn()
    plain.set_weights(watched.get_weights())
    _fit(watched, ActivationInputMonitor(X[:16], str(tmp_path / "w"), every_n_steps=1), epochs=2)
    _fit(plain, keras.callbacks.Callback(), epochs=2)
    for a, b in zip(watched.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_bn_input_to_sigmoid_is_standardized_with_training_statistics(tmp_path):
    model = sequential_bn()
    monitor = ActivationInputMonitor(X * 10 + 3, str(tmp_path), layer_names=["sigmoid"], unit=0)
    monitor.set_model(model)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    monitor.on_train_begin()
    monitor.on_train_end()
    record = monitor.history[0]
    # With batch statistics (gamma 1, beta 0) one unit's median is near 0 whatever the input scale.
    assert abs(record["p50"]) < 0.5 and record["p15"] < -0.5 < 0.5 < record["p85"]


def test_event_file_has_percentile_scalars_and_histogram(tmp_path):
    monitor = ActivationInputMonitor(X[:8], str(tmp_path), layer_names=["sigmoid"], every_n_steps=2)
    _fit(sequential_bn(), monitor)
    tags = tags_by_plugin(str(tmp_path))
    assert {f"activation_input/sigmoid/p{q}" for q in (15, 50, 85)} <= tags["scalars"]
    assert tags["histograms"] == {"activation_input/sigmoid"}
    logged = scalar_values(str(tmp_path), "activation_input/sigmoid/p50")
    assert [(step, pytest.approx(value, abs=1e-6)) for step, value in logged] == [
        (record["step"], record["p50"]) for record in monitor.history
    ]


def test_bad_arguments():
    with pytest.raises(ValueError, match="every_n_steps"):
        ActivationInputMonitor(X, "unused", every_n_steps=0)
    monitor = ActivationInputMonitor(X, "unused", layer_names=["nope"])
    monitor.set_model(sequential_bn())
    with pytest.raises(ValueError, match="no layer named"):
        monitor.on_train_begin()


def test_without_tensorboard_construction_says_what_to_install(monkeypatch):
    """Guards the clear message, at construction rather than in `fit` (tests/test_lean_install.py
    sees it in an environment without the package)."""
    find_spec = importlib.util.find_spec

    def without_tensorboard(name, *args):
        return None if name == "tensorboard" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_tensorboard)
    for construct in (lambda: ActivationInputMonitor(X, "unused"),
                      lambda: BatchStatsMonitor("unused")):
        with pytest.raises(ImportError, match=r"tensorboard package.*pip install tensorboard"):
            construct()
