"""What a run records as it trains: the callbacks that write metrics, events, checkpoints, summary.

    recorder = RunRecorder(state)      # rows, summary; on the chief, the run folder's files
    EpochEvents(run_dir)               # epoch metrics and weight histograms in TensorBoard
    BatchScalars(log_dir, every=10)    # batch loss and accuracy in TensorBoard

The TensorBoard events are written by kbn's own writer (kbn/_event_writer.py),
without TensorFlow, so they are the same on every Keras backend.

The recorder writes, after each epoch and in this order, metrics.csv,
checkpoint.keras, checkpoint.json and summary.json (see train/run/run_folder.py
for why the order matters).
"""

import math
import os
import time

import keras
import numpy as np

from kbn._event_writer import EventWriter
from train.reports.numbers import number
from train.run import files
from train.run.run_folder import CHECKPOINT

METRIC_COLUMNS = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
)


class EpochEvents(keras.callbacks.Callback):
    """Writes what `keras.callbacks.TensorBoard(run_dir, histogram_freq=1)` writes, on any backend.

    Keras's callback writes with tf.summary, so it needs TensorFlow in the
    process whatever the backend (kbn/_event_writer.py says why the pipeline
    avoids that); this one writes the same tags at the same steps:

        <run_dir>/train/       keras                          the model's JSON (Graphs), step 0
                               epoch_<metric>, epoch_learning_rate        step: the epoch index
                               <weight path>/histogram, every weight      step: the epoch index
        <run_dir>/validation/  epoch_<metric>                             step: the epoch index
                               evaluation_<metric>_vs_iterations  step: the optimizer's steps

    The epoch index counts from 0 and goes on after a resume (`initial_epoch`).
    """

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir
        self._writers = {}

    def on_train_begin(self, logs=None):
        # Keras writes the model's config for Functional and Sequential models only.
        if type(self.model).__name__ in ("Functional", "Sequential"):
            self._writer("train").keras_model(self.model.to_json())

    def on_test_end(self, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        for name, value in (logs or {}).items():
            self._writer("validation").scalar(f"evaluation_{name}_vs_iterations", value, step)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        train = self._writer("train")
        for name, value in logs.items():
            if not name.startswith("val_"):
                train.scalar(f"epoch_{name}", value, epoch)
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        train.scalar("epoch_learning_rate", keras.ops.convert_to_numpy(optimizer.learning_rate),
                     epoch)
        for name, value in logs.items():
            if name.startswith("val_"):
                self._writer("validation").scalar(f"epoch_{name[len('val_'):]}", value, epoch)
        for layer in self.model.layers:
            for weight in layer.weights:
                train.histogram(f"{weight.path.replace(':', '_')}/histogram",
                                keras.ops.convert_to_numpy(weight), epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def _writer(self, folder):
        """The writer of `<run_dir>/<folder>`, made when first needed (as Keras does)."""
        if folder not in self._writers:
            self._writers[folder] = EventWriter(os.path.join(self.run_dir, folder))
        return self._writers[folder]


class BatchScalars(keras.callbacks.Callback):
    """Logs the batch loss and accuracy every `every` steps, at the optimizer's step count.

    Keras's TensorBoard callback can do this too (`update_freq=N`), but its
    filter then also drops the epoch summaries of epochs that do not end on a
    multiple of N, so batch scalars are written here instead.
    """

    def __init__(self, log_dir, every):
        super().__init__()
        self.log_dir = log_dir
        self.every = every
        self._writer = None

    def on_train_begin(self, logs=None):
        self._writer = EventWriter(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % self.every == 0:
            for name, value in (logs or {}).items():
                self._writer.scalar(f"batch_{name}", float(value), step)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class RunRecorder(keras.callbacks.Callback):
    """Keeps the epoch rows and summary; on the chief, writes metrics.csv, the
    checkpoint and summary.json after each epoch (in that order, see the module docstring)."""

    def __init__(self, state):
        super().__init__()
        self.state = state
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        state = self.state
        row = {
            "epoch": epoch + 1,
            **{key: float(logs.get(key, math.nan)) for key in METRIC_COLUMNS[1:5]},
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "seconds": time.perf_counter() - self._epoch_start,
        }
        state.rows.append(row)
        state.summary.update(summarize(state.rows, state.summary["target_accuracy"]))
        if not state.writes:
            return
        run_dir = state.run_dir
        files.write_rows(os.path.join(run_dir, "metrics.csv"), state.rows, METRIC_COLUMNS)
        if all(math.isfinite(row[key]) for key in ("loss", "val_loss")):
            # A checkpoint of NaN weights would be useless to resume from.
            digest = files.save_model(self.model, os.path.join(run_dir, CHECKPOINT))
            files.write_json(
                os.path.join(run_dir, "checkpoint.json"),
                {"epochs_done": epoch + 1, "file": CHECKPOINT, "sha256": digest},
            )
        files.write_json(os.path.join(run_dir, "summary.json"), state.summary)
        print(
            f"[{state.variant}] epoch {row['epoch']:3d}/{self.params['epochs']}"
            f"  loss {number(row['loss'])}"
            f"  acc {number(row['accuracy'])}  val_loss {number(row['val_loss'])}"
            f"  val_acc {number(row['val_accuracy'])}  {row['seconds']:.2f}s",
            flush=True,
        )


def summarize(rows, target_accuracy):
    """The summary numbers of a run from its epoch rows."""
    reached = [row["epoch"] for row in rows if row["val_accuracy"] >= target_accuracy]
    accuracies = [row["val_accuracy"] for row in rows if math.isfinite(row["val_accuracy"])]
    last = rows[-1] if rows else {}
    return {
        "epochs_run": len(rows),
        "epochs_to_target": reached[0] if reached else None,
        "best_val_accuracy": max(accuracies) if accuracies else None,
        "final_val_accuracy": _finite_or_none(last.get("val_accuracy")),
        "final_val_loss": _finite_or_none(last.get("val_loss")),
        # The median leaves out the first epoch's one-off graph tracing.
        "seconds_per_epoch": float(np.median([row["seconds"] for row in rows])) if rows else None,
    }


def _finite_or_none(value):
    return float(value) if value is not None and math.isfinite(value) else None
