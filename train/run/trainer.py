"""Every run trains with Keras's own `model.fit`, on any backend.

    stopped = trainer.fit(model, data, settings, distribution, callbacks, first_epoch, rules)

What the run adds to `fit`, all of it Keras's own mechanisms:

- the batches: `EpochBatches`, a `keras.utils.PyDataset` that visits epoch
  e's training samples in `epoch_order(seed, e)`, in steps of `batch_size`
  (the last step takes the remainder). The order depends on nothing else, so
  a resumed run (`initial_epoch`) and every variant of a comparison see the
  same batches. Under JAX data parallelism over several processes each
  process feeds its share of every global batch (`Distribution.part`), the
  validation batches too (`Batches`).
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
  a KeyboardInterrupt inside `fit` (a second Ctrl-C) stops at once. Processes
  that train in lockstep (JAX over several processes) agree on a stop after
  every step (`Distribution.any_worker`), so they all leave after the same one.

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


class Batches(keras.utils.PyDataset):
    """(x, y) in steps of `batch_size`, in `order` (default: as stored); each step
    gives `part(indices)` of its global batch (default: all of it)."""

    def __init__(self, x, y, batch_size, part=None, drop_remainder=False):
        super().__init__()
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.part = part
        self.drop_remainder = drop_remainder
        self._order = np.arange(len(x))

    def __len__(self):
        return steps_per_epoch(epoch_samples(len(self.x), self.batch_size,
                                             self.drop_remainder), self.batch_size)

    def __getitem__(self, step):
        index = self._order[step * self.batch_size:(step + 1) * self.batch_size]
        if self.part is not None:
            index = self.part(index)
        return self.x[index], self.y[index]


class EpochBatches(Batches):
    """The training batches of one epoch at a time, in `epoch_order`.

    `StopRules.on_epoch_begin` sets `epoch` before `fit` asks for a batch of it.
    """

    def __init__(self, x, y, batch_size, seed, epoch=0, drop_remainder=False, part=None):
        super().__init__(x, y, batch_size, part, drop_remainder)
        self.seed = seed
        self.epoch = epoch

    @property
    def epoch(self):
        return self._epoch

    @epoch.setter
    def epoch(self, epoch):
        self._epoch = epoch
        self._order = epoch_order(self.seed, epoch, len(self.x))


class _LeaveFit(Exception):
    """Raised by `StopRules` to leave `fit` after the current step."""


class StopRules(keras.callbacks.Callback):
    """Why and where a run stops (see the module docstring).

    Attributes:
        reason: None (finished, or stopped by a callback), "nan" or "interrupted".
    """

    def __init__(self, stop, batches=None, distribution=None):
        super().__init__()
        self.stop = stop
        self.batches = batches
        self.distribution = distribution
        self.reason = None

    def _requested(self):
        """Whether a stop was asked for here or, in lockstep, in any process."""
        if self.distribution is not None and self.distribution.in_lockstep:
            return self.distribution.any_worker(self.stop.requested)[0]
        return self.stop.requested

    def on_epoch_begin(self, epoch, logs=None):
        if self.batches is not None:
            self.batches.epoch = epoch

    def on_train_batch_end(self, step, logs=None):
        loss = (logs or {}).get("loss")
        if self._requested():
            self.reason = "interrupted"
            raise _LeaveFit
        if loss is not None and not math.isfinite(float(loss)):
            self.reason = "nan"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        # A request that came in during validation stops the run after this epoch
        # (the last epoch ends the run anyway).
        if self.reason is None and epoch + 1 < self.params["epochs"] and self._requested():
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
    part = distribution.part if distribution.in_lockstep else None
    rules.batches = EpochBatches(data.x_train, data.y_train, settings.batch_size,
                                 settings.seed, first_epoch,
                                 getattr(settings, "drop_remainder", False), part)
    rules.distribution = distribution
    validation = (data.x_val, data.y_val)
    if part is not None:
        validation = Batches(data.x_val, data.y_val, settings.batch_size, part)
    callbacks = [*callbacks, rules]
    try:
        model.fit(
            rules.batches,
            epochs=settings.epochs,
            initial_epoch=first_epoch,
            shuffle=False,  # the batches come in EpochBatches' order
            validation_data=validation,
            validation_batch_size=None if part is not None else settings.batch_size,
            callbacks=callbacks,
            verbose=0,
        )
    except (_LeaveFit, KeyboardInterrupt):
        rules.stop.interrupt()
        rules.reason = "interrupted"
        for callback in callbacks:  # `fit` was left before it closed their files
            callback.on_train_end()
    return rules.reason
