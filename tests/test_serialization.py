"""Saving and configs: .keras files, get_config/from_config, and config exchange with Keras."""

import keras
import numpy as np
import pytest

import kbn

pytestmark = pytest.mark.all_backends

CONFIGS = [
    {},
    {"axis": 1, "momentum": 0.8, "epsilon": 1e-5, "center": False},
    {"scale": False, "gamma_regularizer": "l2", "beta_initializer": "random_normal"},
    {"renorm": True, "renorm_clipping": {"rmax": 2.0, "rmin": 0.5, "dmax": 1.0},
     "renorm_momentum": 0.9},
    pytest.param({"synchronized": True, "beta_constraint": "non_neg"},
                 marks=pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                          reason="synchronized=True is TensorFlow-only")),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_config_round_trip(config):
    layer = kbn.BatchNormalization(**config)
    again = kbn.BatchNormalization.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


@pytest.mark.parametrize("config", CONFIGS)
def test_config_is_exchangeable_with_keras(config):
    """Drop-in: the same constructor, so each class loads the other's config."""
    mine = kbn.BatchNormalization(**config, name="bn")
    theirs = keras.layers.BatchNormalization(**config, name="bn")
    assert mine.get_config() == theirs.get_config()
    assert keras.layers.BatchNormalization.from_config(mine.get_config()).get_config() == \
        theirs.get_config()


def test_registered_name():
    assert keras.saving.get_registered_name(kbn.BatchNormalization) == "kbn>BatchNormalization"


@pytest.mark.parametrize("config", [{}, {"renorm": True}, {"axis": 1, "center": False}])
def test_keras_file_round_trip(tmp_path, config):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(64, 4, 4, 2)).astype("float32")
    model = keras.Sequential([keras.Input((4, 4, 2)), kbn.BatchNormalization(**config, name="bn"),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, rng.normal(size=(64, 1)), epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    bn, loaded_bn = model.get_layer("bn"), loaded.get_layer("bn")
    assert type(loaded_bn) is kbn.BatchNormalization
    assert loaded_bn.get_config() == bn.get_config()
    assert not np.allclose(bn.moving_mean.numpy(), 0.0)  # the statistics did move
    for saved, restored in zip(bn.weights, loaded_bn.weights):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy(), err_msg=saved.name)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
