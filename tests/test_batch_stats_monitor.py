"""kbn.callbacks.BatchStatsMonitor: its tags, their values, that watching changes nothing,
and that NaN safety's skipped updates are counted and announced once."""

import keras
import numpy as np
import pytest

import kbn
from kbn.callbacks import BatchStatsMonitor
from tensorboard_events import scalar_values, tags_by_plugin

pytestmark = pytest.mark.all_backends

RNG = np.random.default_rng(0)
X = (RNG.normal(size=(64, 5)) * 3 + 2).astype("float32")
Y = RNG.integers(0, 3, 64)


def model_with(bn_class, **options):
    keras.utils.set_random_seed(0)
    options = {"momentum": 0.9, **options}
    inner = keras.Sequential([keras.Input((6,)), bn_class(**options, name="inner_bn")],
                             name="inner")
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(6, use_bias=False, name="dense")(inputs)
    hidden = bn_class(**options, name="bn")(hidden)
    hidden = inner(keras.layers.Activation("tanh")(hidden))
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def _fit(model, callbacks, x=X, epochs=2):
    model.fit(x, Y, epochs=epochs, batch_size=16, callbacks=callbacks, verbose=0, shuffle=False)


@pytest.mark.parametrize("bn_class", [kbn.BatchNormalization, keras.layers.BatchNormalization])
def test_tags_exist_are_finite_and_match_the_batch(tmp_path, bn_class):
    model = model_with(bn_class)
    monitor = BatchStatsMonitor(str(tmp_path), every_n_steps=2)
    _fit(model, [monitor])
    tags = tags_by_plugin(str(tmp_path))["scalars"]
    for layer in ("bn", "inner_bn"):
        for key in ("mean_shift", "variance_ratio"):
            values = scalar_values(str(tmp_path), f"batch_stats/{layer}/{key}")
            assert [step for step, _ in values] == [2, 4, 6, 8]  # 4 steps an epoch, 2 epochs
            assert all(np.isfinite(value) for _, value in values)
        assert (f"batch_stats/{layer}/skipped" in tags) == (bn_class is kbn.BatchNormalization)
    # The first logged step: the batch is X[16:32], the moving statistics those after step 1.
    first = monitor.history[0]
    assert first["step"] == 2 and first["layer"] == "bn"


def test_values_are_the_batch_statistics_against_the_moving_ones(tmp_path):
    """Dense → BN with a frozen Dense: the batch's statistics are known in closed form."""
    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense(4, use_bias=False, trainable=False, name="dense")
    bn = kbn.BatchNormalization(momentum=0.8, name="bn")
    model = keras.Sequential([keras.Input((5,)), dense, bn])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    monitor = BatchStatsMonitor(str(tmp_path), every_n_steps=3)
    moving = []

    class Before(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            moving.append([keras.ops.convert_to_numpy(v).astype("float64")
                           for v in (bn.moving_mean, bn.moving_variance)])

    model.fit(X, np.zeros((64, 4), "float32"), batch_size=16, epochs=1, shuffle=False,
              callbacks=[Before(), monitor], verbose=0)
    z = X[32:48].astype("float64") @ keras.ops.convert_to_numpy(dense.kernel).astype("float64")
    mean, variance = z.mean(0), z.var(0)
    old_mean, old_variance = moving[2]
    shift = np.mean(np.abs(mean - old_mean) / np.sqrt(old_variance + bn.epsilon))
    ratio = np.mean(variance / (old_variance + bn.epsilon))
    record = monitor.history[0]
    assert record["step"] == 3
    # Read back through (new − m·old)/(1 − m) in float32 weights: 1e-4 relative.
    np.testing.assert_allclose(record["mean_shift"], shift, rtol=1e-4)
    np.testing.assert_allclose(record["variance_ratio"], ratio, rtol=1e-4)


def test_watching_does_not_change_training(tmp_path):
    plain, watched = model_with(kbn.BatchNormalization), model_with(kbn.BatchNormalization)
    _fit(plain, [])
    _fit(watched, [BatchStatsMonitor(str(tmp_path), every_n_steps=1)])
    for a, b in zip(plain.get_weights(), watched.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_nan_batch_is_counted_and_announced_once(tmp_path, capsys):
    # The NaN batch makes every gradient NaN: only the output layer may learn, or every
    # later batch would be NaN too (BN without γ and β, the Dense before it frozen).
    model = model_with(kbn.BatchNormalization, center=False, scale=False)
    model.get_layer("dense").trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    x = X.copy()
    x[20, 1] = np.nan  # second batch (step 2), and again in epoch 2 (step 6)
    monitor = BatchStatsMonitor(str(tmp_path), every_n_steps=2)
    _fit(model, [monitor], x=x)
    bn = model.get_layer("bn")
    # A NaN in one input feature reaches every channel of Dense's output: 6 channels, 2 batches.
    assert int(keras.ops.convert_to_numpy(bn.skipped_updates)) == 12
    skipped = scalar_values(str(tmp_path), "batch_stats/bn/skipped")
    assert skipped == [(2, 6.0), (4, 6.0), (6, 12.0), (8, 12.0)]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning")]
    assert len(lines) == 2  # bn, and inner_bn, which the NaN reaches through tanh
    assert lines[0].startswith("warning: step 2 (epoch 1): NaN safety skipped 6 channel update")
    assert "'bn'" in lines[0]
    assert [(e["layer"], e["kind"], e["step"]) for e in monitor.events] == [
        ("bn", "skipped", 2), ("inner_bn", "skipped", 2)]
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(bn.moving_variance)))


def test_keras_layers_poisoned_by_nan_are_announced(tmp_path, capsys):
    model = model_with(keras.layers.BatchNormalization)
    x = X.copy()
    x[40, 0] = np.nan  # third batch: step 3
    monitor = BatchStatsMonitor(str(tmp_path), every_n_steps=100, verbose=False)
    _fit(model, [monitor], x=x, epochs=1)
    assert ("bn", "nonfinite", 3, 1) in [
        (e["layer"], e["kind"], e["step"], e["epoch"]) for e in monitor.events]
    assert "warning" not in capsys.readouterr().out  # verbose=False


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="every_n_steps"):
        BatchStatsMonitor(str(tmp_path), every_n_steps=0)
    model = model_with(kbn.BatchNormalization)
    with pytest.raises(ValueError, match="no batch-norm layer named"):
        _fit(model, [BatchStatsMonitor(str(tmp_path), layer_names=["dense"])], epochs=1)
