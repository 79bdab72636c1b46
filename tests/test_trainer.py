"""train/run/trainer.py: every run is Keras's `model.fit` on the run's batches, with its stop rules.

Backend-neutral: a tiny softmax model on random data, trained by `trainer.fit`
on this process's backend.
"""

import types

import keras
import numpy as np
import pytest

from train.distribution import distributed
from train.run import signals, trainer

pytestmark = pytest.mark.all_backends

SAMPLES, FEATURES, CLASSES, BATCH = 130, 4, 3, 60  # 3 steps: 60, 60, 10


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, FEATURES)).astype("float32")
    y = (np.arange(SAMPLES) % CLASSES).astype("int32")
    return types.SimpleNamespace(x_train=x, y_train=y, x_val=x[:50], y_val=y[:50])


def _model():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(CLASSES, activation="softmax",
                           kernel_regularizer=keras.regularizers.L2(0.1)),
    ])
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


SETTINGS = types.SimpleNamespace(batch_size=BATCH, epochs=3, seed=7)
ONE_PROCESS = distributed.default()


class _Seen(keras.callbacks.Callback):
    """Records the logs of every step and epoch."""

    def __init__(self):
        super().__init__()
        self.steps, self.epochs = [], []

    def on_train_batch_end(self, step, logs=None):
        self.steps.append(dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, dict(logs)))


def _fit(model, data, callbacks=(), first_epoch=0, stop=None):
    rules = trainer.StopRules(stop or signals.StopRequest())
    return trainer.fit(model, data, SETTINGS, ONE_PROCESS, list(callbacks), first_epoch, rules)


def test_each_epoch_visits_the_samples_in_epoch_order(monkeypatch):
    visited = []
    original = trainer.EpochBatches.__getitem__

    def recording(self, step):
        x, y = original(self, step)
        visited.append((self.epoch, step, x.copy()))
        return x, y

    monkeypatch.setattr(trainer.EpochBatches, "__getitem__", recording)
    data = _data()
    assert _fit(_model(), data) is None
    for epoch in range(SETTINGS.epochs):
        order = trainer.epoch_order(SETTINGS.seed, epoch, SAMPLES)
        served = [(step, x) for e, step, x in visited if e == epoch]
        # Every step of the epoch was served (Keras may ask for one twice to learn its shape).
        assert sorted({step for step, _ in served}) == [0, 1, 2]
        for step, x in served:
            np.testing.assert_array_equal(x, data.x_train[order[step * BATCH:(step + 1) * BATCH]])
    orders = [trainer.epoch_order(SETTINGS.seed, epoch, SAMPLES).tolist() for epoch in (0, 1)]
    assert orders[0] != orders[1]


def test_logs_are_sample_means_with_the_regularization_loss():
    """`val_loss` is the mean over the validation samples of cross-entropy + L2 with
    the epoch's final weights, `val_accuracy` the fraction right."""
    data, model = _data(), _model()
    seen = _Seen()
    _fit(model, data, [seen])
    _, logs = seen.epochs[-1]
    probabilities = keras.ops.convert_to_numpy(model(data.x_val, training=False))
    cross_entropy = -np.log(np.clip(probabilities[np.arange(50), data.y_val], 1e-7, 1.0))
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    expected = cross_entropy.mean() + 0.1 * np.sum(kernel.astype(np.float64) ** 2)
    assert logs["val_loss"] == pytest.approx(expected, rel=1e-5)
    accuracy = np.mean(np.argmax(probabilities, axis=-1) == data.y_val)
    assert logs["val_accuracy"] == pytest.approx(accuracy, abs=1e-7)


def test_a_stop_request_leaves_after_the_current_step():
    """Ctrl-C in epoch 2's first step: fit leaves there; epoch 2 is not validated."""
    stop = signals.StopRequest()
    seen = _Seen()

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_begin(self, step, logs=None):
            if len(seen.steps) == 3:  # epoch 1's three steps are done
                stop.interrupt()

    ended = []

    class Ends(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            ended.append(True)

    assert _fit(_model(), _data(), [Interrupt(), seen, Ends()], stop=stop) == "interrupted"
    assert len(seen.steps) == 4 and [epoch for epoch, _ in seen.epochs] == [0]
    assert ended == [True]


def test_a_stop_request_during_validation_ends_the_run_after_that_epoch():
    """Ctrl-C while epoch 1 is validated: epoch 1 is whole and recorded, epoch 2 never runs."""
    stop = signals.StopRequest()
    seen = _Seen()

    class InterruptValidation(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            if len(seen.epochs) == 1:  # epoch 0 done: this is epoch 1's validation
                stop.interrupt()

    assert _fit(_model(), _data(), [InterruptValidation(), seen], stop=stop) == "interrupted"
    assert [epoch for epoch, _ in seen.epochs] == [0, 1]
    assert len(seen.steps) == 6


def test_a_stop_request_in_the_last_epochs_validation_finishes_the_run():
    stop = signals.StopRequest()
    seen = _Seen()

    class InterruptLastValidation(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            if len(seen.epochs) == SETTINGS.epochs - 1:
                stop.interrupt()

    assert _fit(_model(), _data(), [InterruptLastValidation(), seen], stop=stop) is None
    assert len(seen.epochs) == SETTINGS.epochs


def test_a_non_finite_loss_ends_the_run_after_that_epoch():
    data = _data()
    data.x_train = data.x_train.copy()
    data.x_train[70] = np.inf  # epoch 0's order puts it in some step; the loss turns NaN
    seen = _Seen()
    assert _fit(_model(), data, [seen]) == "nan"
    assert [epoch for epoch, _ in seen.epochs] == [0]
    assert not np.isfinite(seen.epochs[0][1]["loss"])


def test_a_resumed_fit_starts_at_its_first_epoch():
    """initial_epoch: epochs 1 and 2 again, in their own orders, from epoch 1's start."""
    data = _data()
    full, seen_full = _model(), _Seen()
    _fit(full, data, [seen_full])
    first = _model()
    SETTINGS.epochs = 1
    try:
        _fit(first, data)
    finally:
        SETTINGS.epochs = 3
    seen = _Seen()
    _fit(first, data, [seen], first_epoch=1)
    assert [epoch for epoch, _ in seen.epochs] == [1, 2]
    for (_, a), (_, b) in zip(seen.epochs, seen_full.epochs[1:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    for a, b in zip(first.get_weights(), full.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
