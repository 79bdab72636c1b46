"""One training run: its folder, logs, checkpoint, resume, Ctrl-C and NaN handling.

    from train import runs
    run_dir = runs.make_run_dir("logs", "train", "digits-kbn")
    result = runs.train_variant(args, data, "kbn", run_dir)
    result = runs.resume(run_dir, data)            # after Ctrl-C

A run folder `<logdir>/<experiment>/<YYYYmmdd-HHMMSS>-<run-name>/` holds
    train/, validation/   TensorBoard events: epoch and batch scalars, weight
                          histograms (BN's gamma, beta, moving mean/variance)
    args.json             every argument of the run
    metrics.csv           one row per finished epoch
    summary.json          the outcome (rewritten after every epoch)
    checkpoint.keras      model + optimizer state after the last finished epoch
    checkpoint.json       which epoch that is
"""

import argparse
import csv
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from kbn.callbacks import ActivationInputMonitor, BatchStatsMonitor
from train import inference_gap
from train.models import build_model, hidden_activation_names

METRIC_COLUMNS = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
)
PROBE_SIZE = 512
# Hyperparameters shown in TensorBoard's HParams dashboard.
HPARAM_KEYS = (
    "dataset",
    "model",
    "hidden",
    "activation",
    "bn_position",
    "bn_momentum",
    "bn_epsilon",
    "optimizer",
    "lr",
    "momentum",
    "batch_size",
    "epochs",
    "seed",
    "input_norm",
)


class RunResult:
    """What a finished (or stopped) run hands back: its summary and epoch rows."""

    def __init__(self, run_dir, summary, rows, shift_history):
        self.run_dir = run_dir
        self.summary = summary
        self.rows = rows
        self.shift_history = shift_history


def timestamp():
    return time.strftime("%Y%m%d-%H%M%S")


def make_run_dir(logdir, experiment, run_name, stamp=None):
    """Creates a new run folder; never reuses one (a clash gets a -2, -3 … suffix)."""
    base = os.path.join(logdir, experiment, f"{stamp or timestamp()}-{run_name}")
    folder, attempt = base, 1
    while True:
        try:
            os.makedirs(folder)
            return folder
        except FileExistsError:
            attempt += 1
            folder = f"{base}-{attempt}"


def make_optimizer(name, lr, momentum):
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=momentum)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    return keras.optimizers.RMSprop(learning_rate=lr)


def build_compiled(args, data, variant):
    """The model of `variant` ("none" | "keras" | "kbn"), compiled; same seed → same weights."""
    model = build_model(
        args.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        bn=variant,
        seed=args.seed,
        hidden=tuple(args.hidden_widths),
        activation=args.activation,
        bn_position=args.bn_position,
        bn_momentum=args.bn_momentum,
        bn_epsilon=args.bn_epsilon,
    )
    model.compile(
        optimizer=make_optimizer(args.optimizer, args.lr, args.momentum),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def epoch_batches(x, y, batch_size, seed, first_epoch, epochs):
    """Batches for epochs first_epoch … epochs−1, each epoch's order fixed by (seed, epoch).

    The order depends on nothing else, so a resumed run sees exactly the
    batches the uninterrupted run would have seen, and every variant of a
    comparison sees the same batches.
    """
    orders = np.stack(
        [
            np.random.default_rng([seed, epoch]).permutation(len(x))
            for epoch in range(first_epoch, epochs)
        ]
    )
    x, y = tf.constant(x), tf.constant(y)
    return (
        tf.data.Dataset.from_tensor_slices(orders)
        .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
        .map(lambda index: (tf.gather(x, index), tf.gather(y, index)))
        .prefetch(2)
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
    """Writes metrics.csv, summary.json and the checkpoint after each epoch; stops on NaN."""

    def __init__(self, run_dir, summary, rows, label):
        super().__init__()
        self.run_dir = run_dir
        self.summary = summary
        self.rows = rows
        self.label = label
        self.stopped = None
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.stopped = "nan"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            **{key: float(logs.get(key, math.nan)) for key in METRIC_COLUMNS[1:5]},
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "seconds": time.perf_counter() - self._epoch_start,
        }
        finite = all(math.isfinite(row[key]) for key in ("loss", "val_loss"))
        if not finite:
            self.stopped = "nan"
            self.model.stop_training = True
        self.rows.append(row)
        _append_row(os.path.join(self.run_dir, "metrics.csv"), row)
        if finite:  # a checkpoint of NaN weights would be useless to resume from
            self.model.save(os.path.join(self.run_dir, "checkpoint.keras"))
            _write_json(os.path.join(self.run_dir, "checkpoint.json"), {"epochs_done": epoch + 1})
        self.summary.update(summarize(self.rows, self.summary["target_accuracy"]))
        _write_json(os.path.join(self.run_dir, "summary.json"), self.summary)
        print(
            f"[{self.label}] epoch {row['epoch']:3d}/{self.params['epochs']}"
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


def train_variant(args, data, variant, run_dir, extra_callbacks=(), monitor_layers="last"):
    """Trains one variant from scratch in `run_dir` (see module docstring)."""
    keras.utils.set_random_seed(args.seed)
    model = build_compiled(args, data, variant)
    settings = {key: value for key, value in vars(args).items() if key != "hidden_widths"}
    settings.update(variant=variant, dataset=data.name, input_norm=data.input_norm)
    _write_json(os.path.join(run_dir, "args.json"), settings)
    summary = {
        "variant": variant,
        "dataset": data.name,
        "run_dir": run_dir,
        "target_accuracy": args.target_accuracy,
        "hyperparameters": settings,
        "status": "running",
        "stopped_early": None,
    }
    _write_hparams(run_dir, settings, variant)
    return _fit(args, data, model, run_dir, summary, [], 0, extra_callbacks, monitor_layers)


def resume(run_dir, data, extra_callbacks=(), monitor_layers="last"):
    """Continues `run_dir` from its last finished epoch (weights, moving stats, optimizer)."""
    with open(os.path.join(run_dir, "args.json")) as f:
        settings = json.load(f)
    args = argparse.Namespace(**settings)
    args.hidden_widths = tuple(int(width) for width in args.hidden.split(","))
    with open(os.path.join(run_dir, "checkpoint.json")) as f:
        epochs_done = json.load(f)["epochs_done"]
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    rows = _read_rows(os.path.join(run_dir, "metrics.csv"))[:epochs_done]
    # Rows after the checkpoint (a NaN epoch) are dropped; the run redoes them.
    _rewrite_rows(os.path.join(run_dir, "metrics.csv"), rows)
    summary.update(status="running", stopped_early=None)
    model = keras.saving.load_model(os.path.join(run_dir, "checkpoint.keras"))
    return _fit(
        args, data, model, run_dir, summary, rows, epochs_done, extra_callbacks, monitor_layers
    )


def _fit(args, data, model, run_dir, summary, rows, first_epoch, extra_callbacks, monitor_layers):
    recorder = RunRecorder(run_dir, summary, rows, label=summary["variant"])
    tensorboard = keras.callbacks.TensorBoard(run_dir, histogram_freq=1)
    callbacks = [tensorboard, BatchScalars(os.path.join(run_dir, "train"), args.batch_log_every)]
    monitor = None
    if monitor_layers:
        names = hidden_activation_names(model)
        monitor = ActivationInputMonitor(
            data.x_val[:PROBE_SIZE],
            log_dir=os.path.join(run_dir, "train"),
            layer_names=names[-1:] if monitor_layers == "last" else names,
            every_n_steps=args.shift_every,
        )
        callbacks.append(monitor)
    batch_stats = None
    if summary["variant"] != "none" and not getattr(args, "no_batch_stats", False):
        batch_stats = BatchStatsMonitor(os.path.join(run_dir, "train"), args.batch_log_every)
        callbacks.append(batch_stats)
    callbacks += [recorder, *extra_callbacks]
    if first_epoch < args.epochs:
        batches = epoch_batches(
            data.x_train, data.y_train, args.batch_size, args.seed, first_epoch, args.epochs
        )
        try:
            model.fit(
                batches,
                epochs=args.epochs,
                initial_epoch=first_epoch,
                steps_per_epoch=math.ceil(len(data.x_train) / args.batch_size),
                validation_data=(data.x_val, data.y_val),
                callbacks=callbacks,
                shuffle=False,  # epoch_batches fixes the order
                verbose=0,
            )
        except KeyboardInterrupt:
            recorder.stopped = "interrupted"
            for callback in callbacks:  # close the event files fit left open
                if callback is not recorder:
                    callback.on_train_end()
    summary.update(summarize(rows, args.target_accuracy))
    summary["stopped_early"] = recorder.stopped
    summary["status"] = recorder.stopped or "finished"
    if batch_stats is not None:
        summary["batch_stats_events"] = batch_stats.events
    if summary["variant"] != "none" and recorder.stopped is None:
        summary.update(inference_gap.after_training(model, data, args, summary["variant"]))
    _write_json(os.path.join(run_dir, "summary.json"), summary)
    if recorder.stopped == "nan":
        print(f"[{summary['variant']}] loss became NaN; run stopped ({run_dir})", flush=True)
    elif recorder.stopped == "interrupted":
        print(
            f"[{summary['variant']}] interrupted after {len(rows)} finished epochs; continue with"
            f" python -m train.train --resume {run_dir}",
            flush=True,
        )
    history = monitor.history if monitor else []
    return RunResult(run_dir, summary, rows, history)


def _write_hparams(run_dir, settings, variant):
    values = {key: settings[key] for key in HPARAM_KEYS if key in settings}
    values = {
        key: v if isinstance(v, (bool, int, float, str)) else str(v) for key, v in values.items()
    }
    values["variant"] = variant
    with tf.summary.create_file_writer(run_dir).as_default():
        hparams_api.hparams(values, trial_id=os.path.basename(run_dir))


def _finite_or_none(value):
    return float(value) if value is not None and math.isfinite(value) else None


def _write_json(path, content):
    with open(path, "w") as f:
        json.dump(content, f, indent=2, allow_nan=False, default=str)
        f.write("\n")


def _append_row(path, row):
    is_new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        if is_new:
            writer.writeheader()
        writer.writerow(row)


def _rewrite_rows(path, rows):
    os.remove(path)
    for row in rows:
        _append_row(path, row)


def _read_rows(path):
    with open(path, newline="") as f:
        return [
            {key: int(v) if key == "epoch" else float(v) for key, v in row.items()}
            for row in csv.DictReader(f)
        ]
