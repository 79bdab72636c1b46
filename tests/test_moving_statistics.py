"""PyTorch-style moving statistics: `momentum=None` (cumulative average),
`unbiased_moving_variance` (Bessel's correction) and `track_moving_statistics=False`,
against the float64 NumPy reference on every backend, and against PyTorch's own
batch norm where PyTorch is installed (the `make test-torch` environment)."""

import importlib.util

import keras
import numpy as np
import pytest
from keras import ops

import kbn
import numpy_reference as ref
from layer_pairs import weights_by_name

pytestmark = pytest.mark.all_backends

TOL = dict(rtol=1e-5, atol=1e-5)


def close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, err_msg=what, **TOL)


def batches(seed, n, shape=(16, 3)):
    rng = np.random.default_rng(seed)
    return [rng.normal(i, 1.0 + i, size=shape).astype("float32") for i in range(n)]


def test_momentum_none_is_the_plain_average_of_the_batches():
    layer = kbn.BatchNormalization(momentum=None)
    xs = batches(0, 5)
    for x in xs:
        layer(x, training=True)
    stats = [ref.batch_moments(x) for x in xs]
    weights = weights_by_name(layer)
    close(weights["moving_mean"], ref.cumulative_average([m for m, _ in stats]), "mean")
    close(weights["moving_variance"], ref.cumulative_average([v for _, v in stats]), "variance")
    np.testing.assert_array_equal(weights["num_batches_tracked"], [5.0, 5.0, 5.0])
    assert [w.name for w in layer.non_trainable_weights] == [
        "moving_mean", "moving_variance", "num_batches_tracked"]


def test_momentum_none_skips_a_non_finite_batch_per_channel():
    layer = kbn.BatchNormalization(momentum=None)
    xs = batches(1, 3)
    xs[1][4, 2] = np.nan
    for x in xs:
        layer(x, training=True)
    weights = weights_by_name(layer)
    np.testing.assert_array_equal(weights["num_batches_tracked"], [3.0, 3.0, 2.0])
    means = [ref.batch_moments(x)[0] for x in xs]
    close(weights["moving_mean"][:2], ref.cumulative_average(means)[:2], "clean channels")
    close(weights["moving_mean"][2], ref.cumulative_average([means[0][2], means[2][2]]),
          "channel 2 averages the two finite batches")


@pytest.mark.parametrize("shape,axis", [((16, 3), -1), ((4, 3, 5, 2), 1), ((4, 3, 5, 2), [1, 3])])
def test_unbiased_moving_variance(shape, axis):
    rng = np.random.default_rng(2)
    unbiased = kbn.BatchNormalization(axis=axis, momentum=0.8, unbiased_moving_variance=True)
    biased = kbn.BatchNormalization(axis=axis, momentum=0.8)
    x = rng.normal(3.0, 2.0, size=shape).astype("float32")
    y_unbiased, y_biased = (ops.convert_to_numpy(layer(x, training=True))
                            for layer in (unbiased, biased))
    close(y_unbiased, y_biased, "training still normalizes with the biased variance")
    mean, variance = ref.batch_moments(x, axis)
    m = x.size / variance.size
    close(weights_by_name(unbiased)["moving_variance"],
          ref.moving_update(1.0, variance * m / (m - 1), 0.8), "moving variance")
    close(weights_by_name(unbiased)["moving_mean"], ref.moving_update(0.0, mean, 0.8), "mean")


def test_unbiased_with_a_mask_uses_each_channels_count():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 5, 2)).astype("float32")
    mask = rng.random((6, 5)) < 0.6
    layer = kbn.BatchNormalization(momentum=0.0, unbiased_moving_variance=True)
    layer(x, training=True, mask=ops.convert_to_tensor(mask))
    _, variance, count = ref.batch_moments(x, -1, mask, return_count=True)
    close(weights_by_name(layer)["moving_variance"], variance * count / (count - 1), "variance")


def test_unbiased_with_one_entry_per_channel_is_refused_and_changes_nothing():
    layer = kbn.BatchNormalization(unbiased_moving_variance=True)
    layer.build((1, 4))
    with pytest.raises(ValueError, match=r"unbiased_moving_variance=True.*m = 1"):
        layer(np.ones((1, 4), "float32"), training=True)
    np.testing.assert_array_equal(weights_by_name(layer)["moving_variance"], np.ones(4))


def test_unbiased_skips_a_masked_channel_with_one_entry():
    x = np.arange(12, dtype="float32").reshape(2, 3, 2)
    mask = np.array([[True, False, False], [False, False, False]])  # one entry per channel
    layer = kbn.BatchNormalization(momentum=0.5, unbiased_moving_variance=True)
    layer(x, training=True, mask=ops.convert_to_tensor(mask))
    np.testing.assert_array_equal(weights_by_name(layer)["moving_variance"], [1.0, 1.0])


def test_without_tracking_inference_uses_the_batch_statistics():
    layer = kbn.BatchNormalization(track_moving_statistics=False)
    x = batches(4, 1, (12, 3, 2))[0]
    y_infer = ops.convert_to_numpy(layer(x, training=False))
    y_train = ops.convert_to_numpy(layer(x, training=True))
    assert [w.name for w in layer.weights] == ["gamma", "beta"]
    assert layer.moving_mean is None and layer.moving_variance is None
    close(y_infer, y_train, "inference = training")
    close(y_infer, ref.normalize(x, *ref.batch_moments(x), None, None, 1e-3), "reference")


@pytest.mark.parametrize(
    "config",
    [{"momentum": None}, {"unbiased_moving_variance": True},
     {"track_moving_statistics": False}, {"axis": [1, 2]},
     {"virtual_batch_size": 4, "momentum": None, "unbiased_moving_variance": True}],
)
def test_fit_save_and_load(tmp_path, config):
    rng = np.random.default_rng(5)
    x = rng.normal(2.0, 3.0, size=(32, 4, 3)).astype("float32")
    model = keras.Sequential([keras.Input((4, 3)), kbn.BatchNormalization(**config, name="bn"),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, rng.normal(size=(32, 1)), batch_size=8, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("bn").get_config() == model.get_layer("bn").get_config()
    for name, value in weights_by_name(model.get_layer("bn")).items():
        np.testing.assert_array_equal(weights_by_name(loaded.get_layer("bn"))[name], value)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_new_options_appear_in_the_config_only_when_set():
    assert kbn.BatchNormalization(name="bn").get_config() == \
        keras.layers.BatchNormalization(name="bn").get_config()
    config = kbn.BatchNormalization(momentum=None, unbiased_moving_variance=True,
                                    track_moving_statistics=False, virtual_batch_size=2,
                                    ).get_config()
    names = ("momentum", "unbiased_moving_variance", "track_moving_statistics",
             "virtual_batch_size")
    assert tuple(config[name] for name in names) == (None, True, False, 2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"momentum": None, "renorm": True}, r"renorm=True, momentum=None"),
        ({"track_moving_statistics": False, "renorm": True},
         r"renorm=True, track_moving_statistics=False"),
        ({"unbiased_moving_variance": True, "renorm": True},
         r"renorm=True, unbiased_moving_variance=True"),
        ({"unbiased_moving_variance": 1}, r"unbiased_moving_variance.*1"),
        ({"track_moving_statistics": "no"}, r"track_moving_statistics.*'no'"),
    ],
)
def test_bad_combinations_and_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kbn.BatchNormalization(**kwargs)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
@pytest.mark.parametrize("momentum", [None, 0.1])
def test_matches_pytorch_running_statistics(momentum):
    """kbn(momentum=1 − m, unbiased_moving_variance=True) is PyTorch's
    BatchNorm(momentum=m); momentum=None is PyTorch's momentum=None."""
    import torch

    keras_momentum = None if momentum is None else 1.0 - momentum
    layer = kbn.BatchNormalization(momentum=keras_momentum, unbiased_moving_variance=True,
                                   epsilon=1e-5)
    torch_bn = torch.nn.BatchNorm2d(3, momentum=momentum, eps=1e-5).double()
    for x in batches(6, 4, (5, 4, 4, 3)):
        y = ops.convert_to_numpy(layer(x, training=True))
        want = torch_bn(torch.tensor(np.moveaxis(x, -1, 1), dtype=torch.float64))
        close(y, np.moveaxis(want.detach().numpy(), 1, -1), "outputs")
    weights = weights_by_name(layer)
    close(weights["moving_mean"], torch_bn.running_mean.numpy(), "running mean")
    close(weights["moving_variance"], torch_bn.running_var.numpy(), "running variance")
