"""train.run.recording.EpochEvents writes what `keras.callbacks.TensorBoard(histogram_freq=1)`
writes: the same tags in the same folders, at the same steps, with the same values.

TensorFlow only: Keras's callback, the reference, writes with tf.summary.
"""

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

import kbn
from tensorboard_events import steps_by_tag
from train.run.recording import EpochEvents

RNG = np.random.default_rng(0)
X = RNG.normal(size=(96, 5)).astype("float32")
Y = RNG.integers(0, 3, 96)


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((5,)),
        keras.layers.Dense(6, use_bias=False, name="dense"),
        kbn.BatchNormalization(name="bn"),
        keras.layers.Activation("sigmoid"),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ], name="tiny")
    model.compile(keras.optimizers.SGD(0.3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """One model trained 2 epochs, then 1 more from epoch 2 (a resume), with both callbacks."""
    ours, keras_own = tmp_path_factory.mktemp("ours"), tmp_path_factory.mktemp("keras")
    model = _model()
    for first, last in ((0, 2), (2, 3)):
        callbacks = [EpochEvents(str(ours)), keras.callbacks.TensorBoard(str(keras_own),
                                                                          histogram_freq=1)]
        model.fit(X, Y, batch_size=32, epochs=last, initial_epoch=first, verbose=0,
                  validation_data=(X[:40], Y[:40]), callbacks=callbacks, shuffle=False)
    return str(ours), str(keras_own)


def _values(folder):
    """{tag: [(step, value array)]} of every tensor written in `folder`."""
    events = EventAccumulator(folder, size_guidance={"tensors": 0})
    events.Reload()
    return {tag: [(event.step, make_ndarray(event.tensor_proto)) for event in events.Tensors(tag)]
            for tag in events.Tags()["tensors"]}


@pytest.mark.parametrize("folder", ["train", "validation"])
def test_same_tags_and_steps_as_keras(both, folder):
    ours, keras_own = (f"{root}/{folder}" for root in both)
    expected = steps_by_tag(keras_own)
    assert steps_by_tag(ours) == expected
    if folder == "train":
        assert expected["scalars"]["epoch_learning_rate"] == [0, 1, 2]
        assert expected["histograms"]["tiny/bn/moving_variance/histogram"] == [0, 1, 2]
        assert expected["graph_keras_model"]["keras"] == [0, 0]  # once a `fit`
    else:
        assert expected["scalars"]["evaluation_loss_vs_iterations"] == [3, 6, 9]  # 3 steps/epoch


@pytest.mark.parametrize("folder", ["train", "validation"])
def test_same_values_as_keras(both, folder):
    ours, keras_own = (_values(f"{root}/{folder}") for root in both)
    for tag, expected in keras_own.items():
        assert [step for step, _ in ours[tag]] == [step for step, _ in expected]
        for (_, value), (_, reference) in zip(ours[tag], expected):
            if value.dtype.kind == "f" and value.ndim == 2:
                # Histogram edges: tf.linspace and np.linspace may round the last bit apart.
                np.testing.assert_allclose(value[:, :2], reference[:, :2], rtol=1e-12)
                np.testing.assert_array_equal(value[:, 2], reference[:, 2])
            else:
                np.testing.assert_array_equal(value, reference)  # float32 scalars, JSON
