"""What a run records as it trains: the callbacks that write metrics, checkpoint and summary.

    recorder = RunRecorder(state)      # rows, summary; on the chief, the run folder's files
    BatchScalars(log_dir, every=10)    # batch loss and accuracy in TensorBoard

The recorder writes, after each epoch and in this order, metrics.csv,
checkpoint.keras, checkpoint.json and summary.json (see train/run_folder.py
for why the order matters).
"""

import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from train import files
from train.run_folder import CHECKPOINT

METRIC_COLUMNS = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
)


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
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % self.every == 0:
            with self._writer.as_default(step=step):
                for name, value in (logs or {}).items():
                    tf.summary.scalar(f"batch_{name}", float(value))

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
            f"  loss {row['loss']:.4f}"
            f"  acc {row['accuracy']:.4f}  val_loss {row['val_loss']:.4f}"
            f"  val_acc {row['val_accuracy']:.4f}  {row['seconds']:.2f}s",
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
