"""kbn.recalibrate: Algorithm 2 against a float64 NumPy reference, the accuracy it recovers,
and that it changes nothing else, even when it fails midway."""

import keras
import numpy as np
import pytest

import kbn

pytestmark = pytest.mark.all_backends

RNG = np.random.default_rng(0)
X = (RNG.normal(size=(20, 4, 4, 3)) * 2 + 1).astype("float32")


def two_layer_model():
    """kbn BN over channels-last inputs → Dense → Keras BN over axis 1 (4 entries, m = n·4·5)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4, 4, 3)),
        kbn.BatchNormalization(name="bn_a"),
        keras.layers.Dense(5, name="dense"),
        keras.layers.BatchNormalization(axis=1, name="bn_b"),
    ])
    rng = np.random.default_rng(1)  # the same γ and β in every copy
    for name in ("bn_a", "bn_b"):
        layer = model.get_layer(name)
        shape = layer.gamma.shape
        layer.gamma.assign(rng.uniform(0.5, 2, shape).astype("float32"))
        layer.beta.assign(rng.normal(size=shape).astype("float32"))
    return model


def reference_statistics(model, x, batch_size, unbiased):
    """Algorithm 2 in float64: every layer in training mode, batches weighted by their size."""
    def moments(values, axes):
        return values.mean(axis=axes), values.var(axis=axes)

    a, dense, b = (model.get_layer(name) for name in ("bn_a", "dense", "bn_b"))
    weights = {name: [np.float64(keras.ops.convert_to_numpy(w)) for w in layer.weights]
               for name, layer in (("a", a), ("dense", dense))}
    sums = {"a": [0, 0, 0], "b": [0, 0, 0]}
    for start in range(0, len(x), batch_size):
        batch = np.float64(x[start:start + batch_size])
        n = len(batch)
        mean_a, var_a = moments(batch, (0, 1, 2))
        gamma, beta = weights["a"][:2]
        normalized = gamma * (batch - mean_a) / np.sqrt(var_a + a.epsilon) + beta
        z = normalized @ weights["dense"][0] + weights["dense"][1]
        mean_b, var_b = moments(z, (0, 2, 3))
        for key, mean, var, m in (("a", mean_a, var_a, n * 16), ("b", mean_b, var_b, n * 20)):
            correction = m / (m - 1) if unbiased else 1.0
            sums[key][0] += n
            sums[key][1] = sums[key][1] + n * mean
            sums[key][2] = sums[key][2] + n * correction * var
    return {key: (s[1] / s[0], s[2] / s[0]) for key, s in sums.items()}


def moving(model, name):
    layer = model.get_layer(name)
    return [keras.ops.convert_to_numpy(v) for v in (layer.moving_mean, layer.moving_variance)]


@pytest.mark.parametrize("unbiased", [True, False])
def test_algorithm_2_against_a_float64_reference(unbiased):
    model = two_layer_model()
    expected = reference_statistics(model, X, batch_size=7, unbiased=unbiased)  # 7, 7, 6
    report = kbn.recalibrate(model, X, batch_size=7, unbiased=unbiased)
    assert (report.batches, report.samples) == (3, 20)
    assert [change.name for change in report.layers] == ["bn_a", "bn_b"]
    # Batch statistics in float32 (two-pass), summed in float64: 1e-5 relative.
    for key, name in (("a", "bn_a"), ("b", "bn_b")):
        mean, variance = moving(model, name)
        np.testing.assert_allclose(mean, expected[key][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(variance, expected[key][1], rtol=1e-5, atol=1e-6)
    # The correction matters at this size (m = 112 for bn_a): the test could tell them apart.
    other = reference_statistics(model, X, batch_size=7, unbiased=not unbiased)
    assert np.max(np.abs(other["a"][1] - expected["a"][1]) / expected["a"][1]) > 1e-3


def test_recovers_inference_accuracy_after_a_short_training():
    """One epoch on the digits (24 steps, momentum 0.99): the moving averages still
    describe the untrained network; recalibrated, inference accuracy is that of training."""
    from train.data.datasets import load_dataset
    from train.data.models import build_model

    data = load_dataset("digits", seed=1, input_norm="unit")
    keras.utils.set_random_seed(1)
    model = build_model("mlp", input_shape=data.input_shape, num_classes=10, bn="kbn",
                        hidden=(32, 32))
    model.compile(keras.optimizers.SGD(1.0), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=60, epochs=1, verbose=0)
    with_moving_averages = model.evaluate(data.x_val, data.y_val, verbose=0)[1]
    kbn.recalibrate(model, data.x_train, batch_size=60)
    recalibrated = model.evaluate(data.x_val, data.y_val, verbose=0)[1]
    # Measured: 0.32 (TensorFlow) / 0.37 (JAX) before, 0.90 / 0.91 after.
    assert with_moving_averages < 0.6
    assert recalibrated > 0.85


def _everything(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in
            model.variables + model.optimizer.variables]


def test_changes_nothing_else():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="dense")(inputs)
    hidden = kbn.BatchNormalization(momentum=0.9, name="bn")(hidden)
    hidden = keras.layers.Dropout(0.5, seed=3, name="dropout")(hidden)
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    hidden = frozen(hidden)
    outputs = keras.layers.Dense(2, name="out")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    x = RNG.normal(size=(32, 6)).astype("float32")
    model.fit(x, np.zeros((32, 2), "float32"), batch_size=8, verbose=0)  # optimizer state exists
    before = _everything(model)
    moving_indices = {i for i, v in enumerate(model.variables)
                      if v is model.get_layer("bn").moving_mean
                      or v is model.get_layer("bn").moving_variance}
    report = kbn.recalibrate(model, x, batch_size=8)
    after = _everything(model)
    assert len(before) == len(after)
    changed = {i for i, (a, b) in enumerate(zip(before, after)) if not np.array_equal(a, b)}
    assert changed == moving_indices  # bit-identical everywhere else (the dropout seed too)
    assert list(report.skipped) == ["frozen"] and [c.name for c in report.layers] == ["bn"]
    assert "trainable=False" in report.skipped["frozen"]
    assert model.get_layer("bn").momentum == 0.9 and model.get_layer("frozen").momentum == 0.99
    assert not model.get_layer("frozen").trainable and model.get_layer("bn").trainable


def test_failure_midway_leaves_every_variable_as_it_was():
    model = two_layer_model()
    model.compile("sgd", "mse")
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    bad = X[8:16].copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="batch 1 gives non-finite statistics in layer 'bn_a'"):
        kbn.recalibrate(model, [X[:8], bad, X[16:]])
    for value, variable in zip(before, model.variables):
        np.testing.assert_array_equal(value, keras.ops.convert_to_numpy(variable))


def test_a_keras_layer_poisoned_by_nan_is_recovered():
    clean, poisoned = two_layer_model(), two_layer_model()
    poisoned.get_layer("bn_b").moving_variance.assign(np.full(4, np.nan, "float32"))
    kbn.recalibrate(clean, X, batch_size=10)
    kbn.recalibrate(poisoned, X, batch_size=10)
    for a, b in zip(moving(clean, "bn_b"), moving(poisoned, "bn_b")):
        np.testing.assert_array_equal(a, b)


def test_iterables_of_x_y_batches_steps_and_nested_models():
    import tensorflow as tf

    inner = two_layer_model()
    outer = keras.Sequential([keras.Input((4, 4, 3)), inner, keras.layers.Flatten()])
    reference = two_layer_model()
    dataset = tf.data.Dataset.from_tensor_slices((X, np.zeros(20))).batch(8)
    report = kbn.recalibrate(outer, dataset, steps=2)
    assert (report.batches, report.samples) == (2, 16)
    kbn.recalibrate(reference, X[:16], batch_size=8)
    for name in ("bn_a", "bn_b"):
        for a, b in zip(moving(inner, name), moving(reference, name)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_report_says_how_far_the_statistics_moved():
    model = two_layer_model()
    report = kbn.recalibrate(model, X, batch_size=10)
    mean, variance = moving(model, "bn_a")
    # From (0, 1): the shift is mean |μ| / sqrt(1 + ε), the ratio mean σ² / (1 + ε).
    assert report.layers[0].mean_shift == pytest.approx(np.mean(np.abs(mean)) / np.sqrt(1.001),
                                                        rel=1e-6)
    assert report.layers[0].variance_ratio == pytest.approx(np.mean(variance) / 1.001, rel=1e-6)
    text = str(report)
    assert text.splitlines()[0] == "recalibrated 2 batch-norm layers over 20 samples (2 batches)"
    assert "bn_b" in text


@pytest.mark.parametrize("arguments, message", [
    ({"data": X[:0]}, "data is empty: it has 0 samples"),
    ({"data": [], "batch_size": None}, "data is empty: it gave no batch"),
    ({"data": X, "batch_size": 1}, "batch_size must be an integer >= 2"),
    ({"data": X, "steps": 0}, "steps must be an integer >= 1"),
    ({"data": X[:, :3]}, r"data of shape \(10, 3, 4, 3\) does not fit model"),
    ({"data": [X], "batch_size": 4}, "batch_size=4 applies to array data"),
])
def test_bad_input_is_one_clear_value_error(arguments, message):
    model = two_layer_model()
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    arguments = {"batch_size": 10, **arguments}
    with pytest.raises(ValueError, match=message):
        kbn.recalibrate(model, **arguments)
    for value, variable in zip(before, model.variables):
        np.testing.assert_array_equal(value, keras.ops.convert_to_numpy(variable))


def test_progress_bar(capsys):
    kbn.recalibrate(two_layer_model(), X, batch_size=10, verbose=1)
    assert "2/2" in capsys.readouterr().out  # Keras's Progbar: batches done / batches


def test_a_model_without_batch_norm_is_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="needs a model with batch-norm layers"):
        kbn.recalibrate(model, np.zeros((4, 3), "float32"))


def _dense_model(bn):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((2, 3)), keras.layers.Dense(3, name="dense"), bn])


X2 = np.random.default_rng(5).normal(size=(12, 2, 3)).astype("float32") * 3 + 1


@pytest.mark.parametrize("options", [
    {"momentum": None},                       # cumulative average
    {"unbiased_moving_variance": True},       # the layer's own correction is not applied twice
    {"axis": [1, 2]},                         # statistics per (row, channel): m = n
])
def test_kbn_options_give_algorithm_2(options):
    model = _dense_model(kbn.BatchNormalization(name="bn", **options))
    kbn.recalibrate(model, X2, batch_size=4)
    z = np.float64(X2) @ np.float64(model.get_layer("dense").kernel.numpy()) \
        + np.float64(model.get_layer("dense").bias.numpy())
    axes = (0,) if "axis" in options else (0, 1)
    m = 4 * (1 if "axis" in options else 2)
    batches = z.reshape(3, 4, 2, 3)
    means = [b.mean(axis=axes) for b in batches]
    variances = [b.var(axis=axes) * m / (m - 1) for b in batches]
    mean, variance = moving(model, "bn")
    np.testing.assert_allclose(mean, np.mean(means, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, np.mean(variances, axis=0), rtol=1e-5, atol=1e-6)


def test_ghost_batches_count_k_samples_per_statistic():
    model = _dense_model(kbn.BatchNormalization(virtual_batch_size=2, name="bn"))
    kbn.recalibrate(model, X2, batch_size=4)
    z = np.float64(X2) @ np.float64(model.get_layer("dense").kernel.numpy()) \
        + np.float64(model.get_layer("dense").bias.numpy())
    # Each batch of 4 holds 2 ghost batches of k = 2 samples, strided (samples g, g + 2),
    # as the layer groups them; m = 2 samples · 2 rows = 4.
    ghosts = z.reshape(3, 2, 2, 2, 3).transpose(0, 2, 1, 3, 4).reshape(6, 2, 2, 3)
    mean, variance = moving(model, "bn")
    np.testing.assert_allclose(mean, ghosts.mean(axis=(1, 2)).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, (ghosts.var(axis=(1, 2)) * 4 / 3).mean(0),
                               rtol=1e-5, atol=1e-6)


def test_layers_without_moving_statistics_are_left_out_with_a_reason():
    model = _dense_model(kbn.BatchNormalization(track_moving_statistics=False, name="bn"))
    with pytest.raises(ValueError, match="bn: keeps no moving statistics"):
        kbn.recalibrate(model, X2, batch_size=4)
