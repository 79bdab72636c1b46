"""Layer behaviour beyond the formulas: freezing, NaN safety, odd batches and dtypes."""

import keras
import numpy as np
import pytest
from keras import ops

import kbn
from layer_pairs import make_pair, weights_by_name

pytestmark = [pytest.mark.all_backends, pytest.mark.usefixtures("each_kernel_path")]


def _data(seed=0, n=64, features=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 2.0, size=(n, features)).astype("float32")
    y = rng.integers(0, 3, size=n)
    return x, y


def test_trainable_false_runs_in_inference_mode():
    """Keras's documented fine-tuning behaviour: frozen means inference mode, even in fit()."""
    layer = kbn.BatchNormalization()
    x, _ = _data()
    layer(x, training=True)  # move the statistics away from (0, 1)
    layer.trainable = False
    np.testing.assert_array_equal(np.asarray(layer(x, training=True)),
                                  np.asarray(layer(x, training=False)))


def test_trainable_false_freezes_weights_in_fit():
    x, y = _data()
    model = keras.Sequential([keras.Input((5,)), kbn.BatchNormalization(name="bn"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)  # statistics and γ/β away from their initial values
    bn = model.get_layer("bn")
    bn.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    frozen = weights_by_name(bn)
    dense_before = model.layers[-1].get_weights()[0].copy()
    model.fit(x, y, epochs=2, verbose=0)
    for name, value in weights_by_name(bn).items():
        np.testing.assert_array_equal(value, frozen[name], err_msg=name)
    assert not np.array_equal(model.layers[-1].get_weights()[0], dense_before)  # others train
    assert len(bn.trainable_weights) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_batch_leaves_moving_statistics_unchanged(bad):
    """kbn's one intended difference from Keras: a bad batch does not poison inference."""
    rng = np.random.default_rng(4)
    kbn_layer, keras_layer = make_pair((32, 4), rng, momentum=0.9)
    x = rng.normal(size=(32, 4)).astype("float32")
    x[5, 1] = bad  # channel 1 only
    before = weights_by_name(kbn_layer)
    out = np.asarray(kbn_layer(x, training=True))
    keras_layer(x, training=True)
    after = weights_by_name(kbn_layer)
    for name in ("moving_mean", "moving_variance"):
        assert after[name][1] == before[name][1]  # the affected channel is untouched
        assert np.all(np.isfinite(after[name]))
        others = [0, 2, 3]
        assert np.all(after[name][others] != before[name][others])  # the rest still learn
    assert not np.all(np.isfinite(out[:, 1]))  # the problem stays visible in the output
    # The behaviour we guard against: Keras's moving statistics are poisoned.
    assert not np.isfinite(keras_layer.moving_variance.numpy()[1])
    # And the next clean batch trains normally again.
    kbn_layer(rng.normal(size=(32, 4)).astype("float32"), training=True)
    assert weights_by_name(kbn_layer)["moving_mean"][1] != before["moving_mean"][1]


def test_non_finite_batch_leaves_renorm_statistics_unchanged():
    """The same guard covers renorm's own moving statistics."""
    rng = np.random.default_rng(6)
    layer, _ = make_pair((32, 4), rng, momentum=0.9, renorm=True, renorm_momentum=0.8,
                         renorm_clipping={"rmax": 2.0, "dmax": 1.0})
    x = rng.normal(1.0, 2.0, size=(32, 4)).astype("float32")
    x[3, 1] = np.nan
    before = weights_by_name(layer)
    layer(x, training=True)
    after = weights_by_name(layer)
    for name in ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean",
                 "renorm_stddev"):
        assert after[name][1] == before[name][1], name
        assert np.all(after[name][[0, 2, 3]] != before[name][[0, 2, 3]]), name


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_non_finite_batch_inside_fit_keeps_inference_usable():
    x, y = _data(n=60)
    x[7, 2] = np.nan
    # No γ/β: with them the NaN gradient would reach the optimizer, which is not BN's to guard.
    model = keras.Sequential([keras.Input((5,)),
                              kbn.BatchNormalization(name="bn", center=False, scale=False)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.zeros_like(x), batch_size=20, epochs=1, verbose=0, shuffle=False)
    bn = model.get_layer("bn")
    assert np.all(np.isfinite(bn.moving_mean.numpy()))
    assert np.all(np.isfinite(bn.moving_variance.numpy()))
    assert np.all(np.isfinite(model.predict(np.nan_to_num(x), verbose=0)))


def test_fully_masked_batch_leaves_moving_statistics_unchanged():
    layer = kbn.BatchNormalization(momentum=0.5)
    x = np.random.default_rng(0).normal(size=(4, 6, 3)).astype("float32")
    layer(x, training=True, mask=ops.zeros((4, 6), "bool"))
    np.testing.assert_array_equal(layer.moving_mean.numpy(), np.zeros(3))
    np.testing.assert_array_equal(layer.moving_variance.numpy(), np.ones(3))


@pytest.mark.parametrize("shape", [(1, 4), (1, 3, 3, 2)])
def test_batch_of_one_in_training_gives_beta(shape):
    """One sample per channel (rank 2) has variance 0: the output is β, not NaN."""
    layer = kbn.BatchNormalization()
    layer.build(shape)
    beta = np.arange(shape[-1], dtype="float32") - 1.0
    layer.beta.assign(beta)
    x = np.full(shape, 7.0, "float32")
    out = np.asarray(layer(x, training=True))
    np.testing.assert_allclose(out, np.broadcast_to(beta, shape), atol=1e-6)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8"])
def test_integer_inputs_are_cast_to_float32(dtype):
    x = np.random.default_rng(0).integers(0, 50, size=(16, 3)).astype(dtype)
    a, b = kbn.BatchNormalization(), kbn.BatchNormalization()
    got = a(ops.convert_to_tensor(x), training=True)
    want = b(ops.convert_to_tensor(x.astype("float32")), training=True)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


def test_weights_have_keras_names_order_and_dtype():
    for config in ({}, {"center": False}, {"scale": False}, {"renorm": True}):
        mine, theirs = make_pair((8, 3), np.random.default_rng(0), **config)
        assert [w.name for w in mine.weights] == [w.name for w in theirs.weights], config
        assert [w.trainable for w in mine.weights] == [w.trainable for w in theirs.weights]
        assert all(w.dtype == "float32" for w in mine.weights)
        # Copying back and forth just works.
        theirs.set_weights(mine.get_weights())
        mine.set_weights(theirs.get_weights())
