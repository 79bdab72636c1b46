"""Every run trains with Keras's own `model.fit`, on any backend.

    stopped = trainer.fit(model, data, settings, distribution, callbacks, first_epoch, rules)

What the run adds to `fit`, all of it Keras's own mechanisms:

- the batches: `EpochBatches`, a `keras.utils.PyDataset` that visits epoch
  e's training samples in `epoch_order(seed, e)`, in steps of `batch_size`
  (the last step takes the remainder). The order depends on nothing else, so
  a resumed run (`initial_epoch`) and every variant of a comparison see the
  same batches.
- the loss and metrics: the model is compiled with them (train/run/runs.py);
  `fit` logs `loss` (regularization included) and `accuracy` as means over
  the samples seen so far in the epoch, `val_loss` and `val_accuracy` over
  the whole validation set in batches of `batch_size`.
- the stop rules (`StopRules`, the last callback: the others see every step): Ctrl-C or SIGTERM
  (train/run/signals.py) stops after the current step; `fit` is left there, so
  the partial epoch is neither validated nor recorded and the callbacks get
  `on_train_end` ("interrupted"); a non-finite loss ends the epoch, which is
  validated and recorded, then the run stops ("nan"); a callback that sets
  `model.stop_training` ends the run as `fit` does (finished): at the epoch's
  end, or, set in `on_train_batch_end`, after that step, and that shorter
  epoch is validated and recorded (`EarlyStopping` sets it at an epoch's end);
  a KeyboardInterrupt inside `fit` (a second Ctrl-C) stops at once.

Under `--strategy multi-worker` on TensorFlow, Keras 3.15's `fit` fails before
its first step (keras issue 20585: `_maybe_symbolic_build` calls
`strategy.reduce` on the data batch), so that strategy alone trains in
train/run/loop.py, which makes the same calls on the same callbacks.
"""

import math

import keras
import numpy as np


def epoch_order(seed, epoch, samples):
    """The order in which epoch `epoch` visits the `samples` training samples."""
    return np.random.default_rng([seed, epoch]).permutation(samples)


def steps_per_epoch(samples, batch_size):
    return math.ceil(samples / batch_size)


def epoch_samples(samples, batch_size, drop_remainder):
    """How many of the `samples` an epoch visits (`--drop-remainder`: whole batches only)."""
    return samples - samples % batch_size if drop_remainder else samples


class EpochBatches(keras.utils.PyDataset):
    """The training batches of one epoch at a time, in `epoch_order`.

    `StopRules.on_epoch_begin` sets `epoch` before `fit` asks for a batch of it.
    """

    def __init__(self, x, y, batch_size, seed, epoch=0, drop_remainder=False):
        super().__init__()
        self.x, self.y = x, y
        self.batch_size, self.seed = batch_size, seed
        self.drop_remainder = drop_remainder
        self._order = None
        self.epoch = epoch

    @property
    def epoch(self):
        return self._epoch

    @epoch.setter
    def epoch(self, epoch):
        self._epoch = epoch
        self._order = epoch_order(self.seed, epoch, len(self.x))

    def __len__(self):
        return steps_per_epoch(epoch_samples(len(self.x), self.batch_size,
                                             self.drop_remainder), self.batch_size)

    def __getitem__(self, step):
        index = self._order[step * self.batch_size:(step + 1) * self.batch_size]
        return self.x[index], self.y[index]


class _LeaveFit(Exception):
    """Raised by `StopRules` to leave `fit` after the current step."""


class StopRules(keras.callbacks.Callback):
    """Why and where a run stops (see the module docstring).

    Attributes:
        reason: None (finished, or stopped by a callback), "nan" or "interrupted".
    """

    def __init__(self, stop, batches=None):
        super().__init__()
        self.stop = stop
        self.batches = batches
        self.reason = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.batches is not None:
            self.batches.epoch = epoch

    def on_train_batch_end(self, step, logs=None):
        loss = (logs or {}).get("loss")
        if self.stop.requested:
            self.reason = "interrupted"
            raise _LeaveFit
        if loss is not None and not math.isfinite(float(loss)):
            self.reason = "nan"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        # A request that came in during validation stops the run after this epoch
        # (the last epoch ends the run anyway).
        if self.stop.requested and self.reason is None and epoch + 1 < self.params["epochs"]:
            self.reason = "interrupted"
            self.model.stop_training = True


def fit(model, data, settings, distribution, callbacks, first_epoch, rules):
    """Trains `model` for epochs `first_epoch` … `settings.epochs − 1`; returns `rules.reason`.

    Args:
        model: A compiled Keras model, built in `distribution.scope()`.
        data: A `train.data.datasets.Dataset`.
        settings: The run's settings: `batch_size`, `epochs`, `seed`.
        distribution: A started `train.distribution.distributed.Distribution`.
        callbacks: Keras callbacks (this worker's: the chief's write files).
        first_epoch: Epochs already done.
        rules: A fresh `StopRules` over the run's `train.run.signals.StopRequest`.
    """
    if distribution.kind == "multi-worker":
        from train.run import loop

        rules.reason = loop.fit(model, data, settings, distribution, callbacks, first_epoch,
                                rules.stop)
        return rules.reason
    rules.batches = EpochBatches(data.x_train, data.y_train, settings.batch_size,
                                 settings.seed, first_epoch,
                                 getattr(settings, "drop_remainder", False))
    callbacks = [*callbacks, rules]
    try:
        model.fit(
            rules.batches,
            epochs=settings.epochs,
            initial_epoch=first_epoch,
            shuffle=False,  # the batches come in EpochBatches' order
            validation_data=(data.x_val, data.y_val),
            validation_batch_size=settings.batch_size,
            callbacks=callbacks,
            verbose=0,
        )
    except (_LeaveFit, KeyboardInterrupt):
        rules.stop.interrupt()
        rules.reason = "interrupted"
        for callback in callbacks:  # `fit` was left before it closed their files
            callback.on_train_end()
    return rules.reason
