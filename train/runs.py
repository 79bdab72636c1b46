"""One training run: its folder, logs, checkpoint, resume, Ctrl-C/SIGTERM and NaN handling.

    from train import runs
    run_dir = runs.make_run_dir("logs", "train", "digits-kbn")
    result = runs.train_variant(args, data, "kbn", run_dir)
    result = runs.resume(run_dir, data)            # after Ctrl-C, SIGTERM or a crash

A run folder `<logdir>/<experiment>/<YYYYmmdd-HHMMSS>-<run-name>/` holds
    train/, validation/   TensorBoard events: epoch and batch scalars, weight
                          histograms (BN's gamma, beta, moving mean/variance)
    args.json             every setting of the run
    metrics.csv           one row per finished epoch
    summary.json          the outcome (rewritten after every epoch)
    checkpoint.keras      model + optimizer state after the last finished epoch
    checkpoint.json       which epoch that is, and the sha256 of checkpoint.keras

Only the chief (worker 0) writes the folder; under a multi-worker strategy the
other workers train the same steps and write nothing. Every file but the
event files is replaced atomically (train/files.py), in the order metrics.csv,
checkpoint.keras, checkpoint.json, summary.json: checkpoint.json names an
epoch only once the model file it describes is complete, and metrics.csv
always has that epoch's row. A run killed at any moment therefore resumes
from its last finished epoch.
"""

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import time
import zipfile
from typing import Optional

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from kbn.callbacks import ActivationInputMonitor
from train import distributed, files, loop, signals
from train.datasets import Dataset
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
    "strategy",
    "replicas",
    "bn_sync",
)
# Settings of runs saved before a setting existed: what those runs did.
SETTING_DEFAULTS = {"strategy": "default", "devices": None, "workers": None, "bn_sync": False,
                    "replicas": 1}
# Command-line values that are not settings of the run.
NOT_SETTINGS = ("hidden_widths", "stamp", "resume")
CHECKPOINT = "checkpoint.keras"


class RunFolderError(Exception):
    """A run folder cannot be resumed; the message is one line for the user."""


class RunResult:
    """What a finished (or stopped) run hands back: its summary and epoch rows."""

    def __init__(self, run_dir, summary, rows, shift_history, exit_status=0):
        self.run_dir = run_dir
        self.summary = summary
        self.rows = rows
        self.shift_history = shift_history
        self.exit_status = exit_status


@dataclasses.dataclass
class RunState:
    """Everything one run needs, from its start or resume to its end.

    Attributes:
        settings: The run's settings (the flags; args.json).
        data: The dataset it trains on.
        distribution: The started strategy and this process's place in it.
        run_dir: The run folder, or None on a worker that writes nothing.
        model: The compiled model, built in `distribution.scope()`.
        summary: The outcome so far (summary.json).
        rows: One dict per finished epoch (metrics.csv).
        extra_callbacks: Callers' Keras callbacks, run on every worker.
        monitor_layers: "last", "all" or None: which activation inputs to log.
    """

    settings: argparse.Namespace
    data: Dataset
    distribution: distributed.Distribution
    run_dir: Optional[str]
    model: keras.Model
    summary: dict
    rows: list = dataclasses.field(default_factory=list)
    extra_callbacks: tuple = ()
    monitor_layers: Optional[str] = "last"

    @property
    def variant(self):
        return self.summary["variant"]

    @property
    def epochs_done(self):
        return len(self.rows)

    @property
    def writes(self):
        """Whether this process writes the run folder (the chief only)."""
        return self.run_dir is not None


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


def build_compiled(settings, data, variant):
    """The model of `variant` (one of `train.models.VARIANTS`), compiled; same seed → same weights.

    The loss is what train/loop.py minimizes; the optimizer's variables are
    created here, so that under a strategy they are mirrored like the model's.
    """
    model = build_model(
        settings.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        bn=variant,
        seed=settings.seed,
        hidden=tuple(settings.hidden_widths),
        activation=settings.activation,
        bn_position=settings.bn_position,
        bn_momentum=settings.bn_momentum,
        bn_epsilon=settings.bn_epsilon,
        bn_synchronized=bool(settings.bn_sync),
    )
    model.compile(
        optimizer=make_optimizer(settings.optimizer, settings.lr, settings.momentum),
        loss="sparse_categorical_crossentropy",
    )
    model.optimizer.build(model.trainable_variables)
    return model


def read_settings(run_dir):
    """A run folder's settings (args.json), with `hidden_widths` parsed.

    Raises:
        RunFolderError: args.json is missing or unreadable.
    """
    try:
        with open(os.path.join(run_dir, "args.json")) as f:
            settings = {**SETTING_DEFAULTS, **json.load(f)}
        settings["hidden_widths"] = tuple(int(width) for width in settings["hidden"].split(","))
    except (OSError, ValueError, KeyError, AttributeError) as error:
        raise RunFolderError(f"{run_dir}: cannot read args.json ({error})") from None
    return argparse.Namespace(**settings)


def check_resumable(run_dir):
    """Makes sure `run_dir` has a complete checkpoint; returns the epochs it holds.

    Raises:
        RunFolderError: no finished epoch, or a damaged checkpoint (one line).
    """
    try:
        with open(os.path.join(run_dir, "checkpoint.json")) as f:
            checkpoint = json.load(f)
        epochs_done = int(checkpoint["epochs_done"])
    except FileNotFoundError:
        raise RunFolderError(f"--resume {run_dir}: no finished epoch to resume from") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunFolderError(f"--resume {run_dir}: unreadable checkpoint.json ({error})") from None
    path = os.path.join(run_dir, checkpoint.get("file", CHECKPOINT))
    damaged = f"--resume {run_dir}: {os.path.basename(path)} (epoch {epochs_done}) is damaged"
    if not os.path.isfile(path):
        raise RunFolderError(f"--resume {run_dir}: {os.path.basename(path)} is missing")
    if "sha256" in checkpoint and files.sha256(path) != checkpoint["sha256"]:
        raise RunFolderError(f"{damaged}: its sha256 is not the one checkpoint.json recorded")
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                raise zipfile.BadZipFile("a member fails its CRC check")
    except (zipfile.BadZipFile, OSError) as error:
        raise RunFolderError(f"{damaged} ({error}); it cannot be resumed") from None
    return epochs_done


def new_run(settings, data, variant, run_dir, distribution, extra_callbacks=(),
            monitor_layers="last"):
    """The state of a run starting from scratch; on the chief, writes args.json and hparams."""
    keras.utils.set_random_seed(settings.seed)
    with distribution.scope():
        model = build_compiled(settings, data, variant)
    saved = {key: value for key, value in vars(settings).items() if key not in NOT_SETTINGS}
    saved.update(variant=variant, dataset=data.name, input_norm=data.input_norm)
    summary = {
        "variant": variant,
        "dataset": data.name,
        "run_dir": run_dir,
        "strategy": settings.strategy,
        "replicas": distribution.replicas,
        "bn_sync": bool(settings.bn_sync),
        "target_accuracy": settings.target_accuracy,
        "hyperparameters": saved,
        "status": "running",
        "stopped_early": None,
    }
    if run_dir is not None:
        files.write_json(os.path.join(run_dir, "args.json"), saved)
        _write_hparams(run_dir, saved, variant)
    return RunState(settings, data, distribution, run_dir, model, summary, [],
                    tuple(extra_callbacks), monitor_layers)


def load_run(run_dir, data, distribution, writes=True, extra_callbacks=(), monitor_layers="last"):
    """The state of `run_dir` after its last finished epoch (weights, moving stats, optimizer).

    Rows after the checkpoint (a NaN epoch) are dropped; the run redoes them.

    Raises:
        RunFolderError: the folder has no usable checkpoint (one line).
    """
    settings = read_settings(run_dir)
    epochs_done = check_resumable(run_dir)
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        rows = _read_rows(os.path.join(run_dir, "metrics.csv"))[:epochs_done]
    except (OSError, ValueError) as error:
        raise RunFolderError(
            f"--resume {run_dir}: unreadable summary or metrics ({error})"
        ) from None
    try:
        with distribution.scope():
            model = keras.saving.load_model(os.path.join(run_dir, CHECKPOINT))
    except Exception as error:  # Keras raises many kinds for a bad archive
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunFolderError(f"--resume {run_dir}: cannot load {CHECKPOINT} ({reason})") from None
    summary.update(status="running", stopped_early=None)
    summary.setdefault("strategy", settings.strategy)
    summary.setdefault("replicas", distribution.replicas)
    summary.setdefault("bn_sync", bool(settings.bn_sync))
    if writes:
        files.remove_leftovers(run_dir)
        files.write_rows(os.path.join(run_dir, "metrics.csv"), rows, METRIC_COLUMNS)
    return RunState(settings, data, distribution, run_dir if writes else None, model, summary,
                    rows, tuple(extra_callbacks), monitor_layers)


def run(state):
    """Trains `state` to its last epoch or until it stops; returns a `RunResult`."""
    callbacks = chief_callbacks(state) if state.writes else []
    recorder = RunRecorder(state)
    callbacks += [recorder, *state.extra_callbacks]
    stopped = lost_worker = None
    with signals.StopRequest() as stop:
        if state.epochs_done < state.settings.epochs:
            try:
                stopped = loop.fit(state.model, state.data, state.settings, state.distribution,
                                   callbacks, state.epochs_done, stop)
            except tf.errors.OpError as error:
                if state.distribution.workers == 1:
                    raise
                # A collective failed: another worker died or stopped answering
                # (TensorFlow's health check aborts the all-reduce).
                stopped, lost_worker = "interrupted", _first_line(error)
    summary = state.summary
    summary.update(summarize(state.rows, state.settings.target_accuracy))
    summary["stopped_early"] = stopped
    summary["status"] = stopped or "finished"
    exit_status = {None: 0, "nan": 1, "interrupted": stop.exit_status}[stopped]
    if lost_worker:
        exit_status = 1
    if state.writes:
        files.write_json(os.path.join(state.run_dir, "summary.json"), summary)
        if stopped == "nan":
            print(f"[{state.variant}] loss became NaN; run stopped ({state.run_dir})", flush=True)
        elif stopped == "interrupted":
            how = "stopped by SIGTERM" if exit_status == 143 else "interrupted"
            if lost_worker:
                how = f"stopped: the cluster lost a worker ({lost_worker[:200]})"
            print(
                f"[{state.variant}] {how} after {state.epochs_done} finished epochs; continue"
                f" with python -m train.train --resume {state.run_dir}",
                flush=True,
            )
    monitors = [c for c in callbacks if isinstance(c, ActivationInputMonitor)]
    history = monitors[0].history if monitors else []
    return RunResult(state.run_dir, summary, state.rows, history, exit_status)


def chief_callbacks(state):
    """The callbacks that write the run folder's events; they run on the chief only."""
    run_dir = state.run_dir
    callbacks = [
        keras.callbacks.TensorBoard(run_dir, histogram_freq=1),
        BatchScalars(os.path.join(run_dir, "train"), state.settings.batch_log_every),
    ]
    if state.monitor_layers:
        names = hidden_activation_names(state.model)
        callbacks.append(
            ActivationInputMonitor(
                state.data.x_val[:PROBE_SIZE],
                log_dir=os.path.join(run_dir, "train"),
                layer_names=names[-1:] if state.monitor_layers == "last" else names,
                every_n_steps=state.settings.shift_every,
            )
        )
    return callbacks


def train_variant(settings, data, variant, run_dir, extra_callbacks=(), monitor_layers="last",
                  distribution=None):
    """Trains one variant from scratch in `run_dir` (None: a worker that writes nothing)."""
    distribution = distribution or distributed.default()
    state = new_run(settings, data, variant, run_dir, distribution, extra_callbacks,
                    monitor_layers)
    return run(state)


def resume(run_dir, data, extra_callbacks=(), monitor_layers="last", distribution=None,
           writes=True):
    """Continues `run_dir` from its last finished epoch (see `load_run`)."""
    distribution = distribution or distributed.default()
    state = load_run(run_dir, data, distribution, writes, extra_callbacks, monitor_layers)
    return run(state)


def mark_interrupted(run_dir):
    """Records in summary.json that a run died without saying so (its process was killed).

    Returns:
        True if the run can be resumed (it has a finished epoch).
    """
    path = os.path.join(run_dir, "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        summary = None
    if summary is not None and summary.get("status") == "running":
        summary.update(status="interrupted", stopped_early="interrupted")
        files.write_json(path, summary)
    return os.path.isfile(os.path.join(run_dir, "checkpoint.json"))


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
    checkpoint and summary.json after each epoch (in that order, see above)."""

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


def _write_hparams(run_dir, settings, variant):
    values = {key: settings[key] for key in HPARAM_KEYS if key in settings}
    values = {
        key: v if isinstance(v, (bool, int, float, str)) else str(v) for key, v in values.items()
    }
    values["variant"] = variant
    with tf.summary.create_file_writer(run_dir).as_default():
        hparams_api.hparams(values, trial_id=os.path.basename(run_dir))


def _first_line(error):
    """An OpError's message without TensorFlow's "{{function_node …}}" prefix."""
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", str(error).strip())
    return text.splitlines()[0] if text else type(error).__name__


def _finite_or_none(value):
    return float(value) if value is not None and math.isfinite(value) else None


def _read_rows(path):
    with open(path, newline="") as f:
        return [
            {key: int(v) if key == "epoch" else float(v) for key, v in row.items()}
            for row in csv.DictReader(f)
        ]
