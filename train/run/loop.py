"""The training loop of `--strategy multi-worker` runs (TensorFlow only).

    stopped = loop.fit(model, data, settings, distribution, callbacks, first_epoch, stop)

Why not `model.fit`, which trains every other run (train/run/trainer.py): under
MultiWorkerMirroredStrategy, Keras 3.15's `fit` fails before its first step,
with Keras's own BatchNormalization too: its `_maybe_symbolic_build` calls
`strategy.reduce` on the data batch (keras issue 20585, tensorflow issue
72388). This loop does what `fit` does for these models:

- epoch e visits the training samples in `epoch_order(seed, e)`, a
  permutation that depends on nothing else, in steps of `batch_size` (the
  global batch; the last step takes the remainder). A resumed run and every
  variant of a comparison see the same batches.
- each step's global batch is cut into replica slices and every replica
  minimizes its share Σℓ/B of the global mean loss (train/distribution/distributed.py),
  so a synchronized run is the single-process run up to summation order.
- the logs' `loss` and `accuracy` are means over the samples seen so far in
  the epoch (what `fit` reports); `val_loss` and `val_accuracy` are means
  over the validation set, evaluated in batches of `batch_size`.
- Keras callbacks get `fit`'s calls in `fit`'s order: on_train_begin,
  on_epoch_begin, on_train_batch_begin/end, on_test_begin/end,
  on_epoch_end, on_train_end.

How a run stops. Every decision is taken from numbers that are the same on
every worker, so all workers stop at the same point (a worker that went on
alone would wait forever in the next all-reduce):
- a non-finite training loss (summed over replicas) ends the epoch; it is
  validated and recorded, then the run stops: "nan";
- Ctrl-C or SIGTERM on any worker (`signals.StopRequest`) is summed into the
  next step's results; every worker stops after that step and the partial
  epoch is dropped: "interrupted". At an epoch's end, a request that came in
  during validation or the callbacks stops the run there;
- `model.stop_training` set by a callback stops the run after the epoch;
- a KeyboardInterrupt raised inside the loop (a second Ctrl-C, or a
  callback) stops at once: "interrupted".
"""

import math

import keras
import numpy as np
import tensorflow as tf

from train.run.trainer import epoch_order, epoch_samples, steps_per_epoch


def fit(model, data, settings, distribution, callbacks, first_epoch, stop):
    """Trains `model` for epochs `first_epoch` … `settings.epochs − 1`.

    Args:
        model: A compiled Keras model (its optimizer is used), built in
            `distribution.scope()`.
        data: A `train.data.datasets.Dataset`.
        settings: The run's settings: `batch_size`, `epochs`, `seed`.
        distribution: A started `train.distribution.distributed.Distribution`.
        callbacks: Keras callbacks (this worker's: the chief's write files).
        first_epoch: Epochs already done.
        stop: A `train.run.signals.StopRequest`.

    Returns:
        None (finished, or stopped by a callback), "nan" or "interrupted".
    """
    steps = _Steps(model, distribution)
    samples = epoch_samples(len(data.x_train), settings.batch_size,
                            getattr(settings, "drop_remainder", False))
    step_count = steps_per_epoch(samples, settings.batch_size)
    callbacks = keras.callbacks.CallbackList(
        callbacks, model=model, epochs=settings.epochs, steps=step_count, verbose=0
    )
    model.stop_training = False
    stopped, logs = None, {}
    callbacks.on_train_begin()
    try:
        for epoch in range(first_epoch, settings.epochs):
            callbacks.on_epoch_begin(epoch)
            order = epoch_order(settings.seed, epoch, len(data.x_train))[:samples]
            logs, stopped = _train_epoch(
                steps, data, order, settings.batch_size, callbacks, stop
            )
            if stopped == "interrupted":
                break
            callbacks.on_test_begin()
            validation = steps.evaluate(data.x_val, data.y_val, settings.batch_size)
            callbacks.on_test_end(validation)
            logs.update({f"val_{name}": value for name, value in validation.items()})
            callbacks.on_epoch_end(epoch, logs)
            interrupted, asked = distribution.any_worker(stop.requested, model.stop_training)
            if stopped or asked:
                break
            if interrupted and epoch + 1 < settings.epochs:  # the last epoch ends the run anyway
                stopped = "interrupted"
                break
    except KeyboardInterrupt:
        stop.interrupt()
        stopped = "interrupted"
    finally:
        callbacks.on_train_end(logs)
    return stopped


def _train_epoch(steps, data, order, batch_size, callbacks, stop):
    """One epoch's steps; returns (running-mean logs, None | "nan" | "interrupted")."""
    loss_sum = correct = seen = 0.0
    logs = {}
    for step in range(steps_per_epoch(len(order), batch_size)):
        callbacks.on_train_batch_begin(step)
        index = order[step * batch_size : (step + 1) * batch_size]
        step_loss, step_correct, stop_votes = steps.train(
            data.x_train, data.y_train, index, stop.requested
        )
        loss_sum, correct, seen = loss_sum + step_loss, correct + step_correct, seen + len(index)
        logs = {"loss": loss_sum / seen, "accuracy": correct / seen}
        callbacks.on_train_batch_end(step, logs)
        if stop_votes > 0:
            return logs, "interrupted"
        if not math.isfinite(step_loss):
            return logs, "nan"
    return logs, None


class _Steps:
    """The compiled training and evaluation steps of one model under one strategy."""

    def __init__(self, model, distribution):
        self.distribution = distribution

        def train_replica(x, y, batch_samples, stop_flag):
            with tf.GradientTape() as tape:
                probabilities = model(x, training=True)
                losses = keras.losses.sparse_categorical_crossentropy(y, probabilities)
                # This replica's share of the global batch's mean (see distributed.py).
                loss = tf.reduce_sum(losses) / batch_samples
                if model.losses:  # regularizers: counted once over all replicas
                    loss += tf.add_n(model.losses) / distribution.replicas
            gradients = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            # One vector: across workers every reduction is a network round trip.
            return tf.stack([tf.reduce_sum(losses), _correct(y, probabilities), stop_flag])

        def test_replica(x, y):
            probabilities = model(x, training=False)
            losses = keras.losses.sparse_categorical_crossentropy(y, probabilities)
            return tf.stack([tf.reduce_sum(losses), _correct(y, probabilities)])

        # The last batch of an epoch is shorter: retrace once, not per shape.
        self._train = tf.function(
            lambda batch, samples, flag: distribution.run_summed(
                train_replica, batch, samples, flag
            ),
            reduce_retracing=True,
        )
        self._test = tf.function(
            lambda batch: distribution.run_summed(test_replica, batch), reduce_retracing=True
        )

    def train(self, x, y, index, stop_requested):
        """One step on the global batch `x[index]`; returns (Σ loss, Σ correct, stop votes)."""
        batch = self.distribution.split(x, y, index)
        outputs = self._train(
            batch, tf.constant(len(index), tf.float32), tf.constant(float(stop_requested))
        )
        return tuple(float(value) for value in outputs.numpy())

    def evaluate(self, x, y, batch_size):
        """Mean loss and accuracy over (x, y) in inference mode."""
        loss_sum = correct = 0.0
        for start in range(0, len(x), batch_size):
            index = np.arange(start, min(start + batch_size, len(x)))
            step_loss, step_correct = self._test(self.distribution.split(x, y, index)).numpy()
            loss_sum, correct = loss_sum + float(step_loss), correct + float(step_correct)
        return {"loss": loss_sum / len(x), "accuracy": correct / len(x)}


def _correct(y, probabilities):
    predicted = tf.argmax(probabilities, axis=-1, output_type=y.dtype)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.float32))
