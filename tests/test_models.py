"""Inside models: the same Sequential model with Keras's BN or kbn's trains to the same result."""

import keras
import numpy as np
import pytest

import kbn

pytestmark = [pytest.mark.all_backends, pytest.mark.usefixtures("each_kernel_path")]

TOLERANCE = 1e-4  # several epochs of float32 SGD; both layers do the same arithmetic


def dense_model(bn_class):
    return keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(16, use_bias=False),
        bn_class(momentum=0.9),
        keras.layers.Activation("sigmoid"),
        keras.layers.Dense(16, use_bias=False),
        bn_class(momentum=0.9, center=False),
        keras.layers.Activation("relu"),
        keras.layers.Dense(3, activation="softmax"),
    ])


def conv_model(bn_class):
    return keras.Sequential([
        keras.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, padding="same"),
        bn_class(momentum=0.9),
        keras.layers.Activation("relu"),
        keras.layers.Conv2D(4, 3),
        bn_class(axis=-1, scale=False),
        keras.layers.Activation("relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ])


def train(build, bn_class, x, y):
    keras.utils.set_random_seed(42)  # same seed: same initial weights and batch order
    model = build(bn_class)
    initial = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.SGD(0.3, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=25, epochs=4, shuffle=True, verbose=0,
                        validation_split=0.2)
    return model, initial, history.history


@pytest.mark.parametrize("build,input_shape", [(dense_model, (12,)), (conv_model, (8, 8, 2))])
def test_fit_matches_keras(build, input_shape):
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 2.0, size=(200, *input_shape)).astype("float32")
    y = (x.reshape(200, -1)[:, :3].sum(1) > 1.5).astype(int) + (x.reshape(200, -1)[:, 3] > 0)
    mine, mine_initial, mine_history = train(build, kbn.BatchNormalization, x, y)
    theirs, theirs_initial, theirs_history = train(build, keras.layers.BatchNormalization, x, y)
    for a, b in zip(mine_initial, theirs_initial):
        np.testing.assert_array_equal(a, b)
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(mine_history[key], theirs_history[key], atol=TOLERANCE,
                                   err_msg=key)
    assert mine_history["loss"][-1] < mine_history["loss"][0]  # it did learn
    for a, b in zip(mine.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, atol=TOLERANCE, rtol=TOLERANCE)
    np.testing.assert_allclose(mine.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               atol=TOLERANCE)
