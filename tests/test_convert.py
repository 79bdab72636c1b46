"""kbn.convert: Keras's BN layers become kbn's (and back) with the same config and weights,
in nested models too, and the copy predicts as the original."""

import keras
import numpy as np
import pytest

import kbn
from kbn import _bn_layers

pytestmark = pytest.mark.all_backends

L = keras.layers


def keras_model():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((4, 6)), L.Dense(5, name="inner_dense"),
                              L.BatchNormalization(momentum=0.9, epsilon=1e-2, name="inner_bn")],
                             name="inner")
    inputs = keras.Input((4, 6))
    hidden = L.BatchNormalization(axis=1, center=False, name="bn_axis_1")(inputs)
    hidden = L.Dense(6, name="dense")(hidden)
    hidden = L.BatchNormalization(renorm=True, renorm_clipping={"rmax": 2.0}, name="bn_renorm")(
        hidden)
    outputs = L.Flatten()(inner(hidden))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for layer in _bn_layers.batch_norm_layers(model):
        layer.set_weights([rng.uniform(0.5, 2, w.shape).astype("float32")
                           for w in layer.weights])
    return model


X = np.random.default_rng(1).normal(size=(8, 4, 6)).astype("float32")


def _classes(model):
    return [type(layer) for layer in _bn_layers.batch_norm_layers(model)]


def test_to_kbn_and_back():
    model = keras_model()
    converted = kbn.convert(model)
    assert _classes(converted) == [kbn.BatchNormalization] * 3
    assert _classes(model) == [L.BatchNormalization] * 3  # the original is untouched
    for old, new in zip(_bn_layers.batch_norm_layers(model),
                        _bn_layers.batch_norm_layers(converted)):
        assert new.get_config() == old.get_config()
        for a, b in zip(old.get_weights(), new.get_weights()):
            np.testing.assert_array_equal(a, b)
    expected = model.predict(X, verbose=0)
    # Inference: the same multiply-add, in another order at most: float32 rounding.
    np.testing.assert_allclose(converted.predict(X, verbose=0), expected, rtol=1e-5, atol=1e-6)
    back = kbn.convert(converted, to="keras")
    assert _classes(back) == [L.BatchNormalization] * 3
    np.testing.assert_allclose(back.predict(X, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_training_mode_outputs_match():
    """The same batch statistics, renorm corrections included."""
    model = keras_model()
    converted = kbn.convert(model)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(converted(X, training=True)),
                               keras.ops.convert_to_numpy(model(X, training=True)),
                               rtol=1e-5, atol=1e-5)


def test_a_compiled_model_is_compiled_alike():
    model = keras_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.5), loss="mse",
                  metrics=["mae"])
    converted = kbn.convert(model)
    assert converted.compiled
    assert converted.optimizer.get_config()["momentum"] == 0.5
    logs = converted.train_on_batch(X, np.zeros((8, 20), "float32"), return_dict=True)
    assert np.isfinite(logs["loss"]) and "mae" in logs


def test_the_converted_model_saves_and_loads(tmp_path):
    converted = kbn.convert(keras_model())
    path = str(tmp_path / "converted.keras")
    converted.save(path)
    loaded = keras.saving.load_model(path)
    assert _classes(loaded) == [kbn.BatchNormalization] * 3
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), converted.predict(X, verbose=0))


def test_refusals():
    with pytest.raises(ValueError, match="to must be one of"):
        kbn.convert(keras_model(), to="torch")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="needs a Sequential or functional model"):
        kbn.convert(Subclassed())


def test_kbn_options_keras_lacks_are_refused_or_dropped_at_their_default():
    def model_with(**options):
        return keras.Sequential([keras.Input((4, 6)), kbn.BatchNormalization(name="bn", **options)])

    one_axis = kbn.convert(model_with(axis=[2], track_moving_statistics=True), to="keras")
    assert one_axis.get_layer("bn").axis == 2  # [2] → 2; an option at its default is dropped
    for options, message in (({"virtual_batch_size": 2}, "virtual_batch_size=2"),
                             ({"axis": [1, 2]}, "several axes"),
                             ({"momentum": None}, "momentum=None")):
        with pytest.raises(ValueError, match=message):
            kbn.convert(model_with(**options), to="keras")
