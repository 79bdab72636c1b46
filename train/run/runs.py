"""One training run, from its start or its resume to its end.

    from train.run import run_folder, runs
    run_dir = run_folder.make_run_dir("logs", "train", "digits-kbn")
    result = runs.train_variant(args, data, "kbn", run_dir)
    result = runs.resume(run_dir, data)            # after Ctrl-C, SIGTERM or a crash

A run's state is one `RunState`; `run(state)` trains it with the callbacks of
`chief_callbacks` (TensorBoard events, batch scalars, the activation monitor:
the chief's alone) and a `RunRecorder` (train/run/recording.py), under the
strategy of `state.distribution`. Only the chief (worker 0) writes the run
folder (train/run/run_folder.py); under a multi-worker strategy the other workers
train the same steps and write nothing. Under JAX over several processes every
process must make every call the chief makes (a model call, `evaluate` and
`save` are collectives of all processes), so the others run the same callbacks
into a private scratch folder, silently, and delete it at the end.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Optional

import keras

from kbn._event_writer import EventWriter
from kbn.callbacks import ActivationInputMonitor, BatchStatsMonitor
from train.options import backend
from train.options.settings import JIT_COMPILE, to_args_json
from train.distribution import distributed
from train.reports.numbers import plural
from train.run import files, inference_gap, signals, trainer
from train.data.datasets import Dataset
from train.data.models import build_model, hidden_activation_names
from train.run.recording import METRIC_COLUMNS, BatchScalars, EpochEvents, RunRecorder, summarize
from train.run.run_folder import (
    RunFolderError,
    check_resumable,
    read_checkpoint_record,
    read_rows,
    read_settings,
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
    "backend",
    "strategy",
    "replicas",
    "bn_sync",
)


class RunResult:
    """What a finished (or stopped) run hands back: its summary and epoch rows."""

    def __init__(self, run_dir, summary, rows, shift_history, exit_status=0, lost_worker=None):
        self.run_dir = run_dir
        self.summary = summary
        self.rows = rows
        self.shift_history = shift_history
        self.exit_status = exit_status
        # The failed collective's first line when another process of the cluster died.
        self.lost_worker = lost_worker


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
        scratch: Whether `run_dir` is a JAX process's private scratch folder
            (see the module docstring), deleted when the run ends.
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
    scratch: bool = False

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


def make_optimizer(name, lr, momentum):
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=momentum)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    return keras.optimizers.RMSprop(learning_rate=lr)


def build_compiled(settings, data, variant):
    """The model of `variant` (a `train.data.variants` name), compiled; same seed → same weights.

    Compiled with its loss and metric, so `fit`, `evaluate` and a saved
    checkpoint.keras report both; the optimizer's variables are created here,
    so that under a strategy they are mirrored like the model's.
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
        dropout=settings.dropout,
        init_scale=settings.init_scale,
        # tf.distribute's replicas need the layer to all-reduce; under JAX data
        # parallelism a batch is one global array and its statistics are global anyway.
        bn_synchronized=bool(settings.bn_sync) and keras.backend.backend() == "tensorflow",
    )
    model.compile(
        optimizer=make_optimizer(settings.optimizer, settings.lr, settings.momentum),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=JIT_COMPILE[settings.jit_compile],
    )
    model.optimizer.build(model.trainable_variables)
    return model


def new_run(settings, data, variant, run_dir, distribution, extra_callbacks=(),
            monitor_layers="last"):
    """The state of a run starting from scratch; on the chief, writes args.json and hparams."""
    backend.set_random_seed(settings.seed)
    with distribution.scope():
        model = build_compiled(settings, data, variant)
    saved = to_args_json(settings, variant=variant, dataset=data.name,
                         input_norm=data.input_norm, backend=keras.backend.backend())
    summary = {
        "variant": variant,
        "dataset": data.name,
        "backend": saved["backend"],
        "run_dir": run_dir,
        "strategy": settings.strategy,
        "replicas": distribution.replicas,
        "bn_sync": bool(settings.bn_sync),
        "xla": _xla(model, distribution),
        "target_accuracy": settings.target_accuracy,
        "hyperparameters": saved,
        "status": "running",
        "stopped_early": None,
    }
    scratch = run_dir is None and distribution.in_lockstep
    if scratch:
        run_dir = _scratch_folder(distribution)
    if run_dir is not None:
        files.write_json(os.path.join(run_dir, "args.json"), saved)
        _write_hparams(run_dir, saved, variant)
    return RunState(settings, data, distribution, run_dir, model, summary, [],
                    tuple(extra_callbacks), monitor_layers, scratch)


def load_run(run_dir, data, distribution, writes=True, extra_callbacks=(), monitor_layers="last",
             checkpoint=None):
    """The state of `run_dir` after its last finished epoch (weights, moving stats, optimizer).

    Rows after the checkpoint (a NaN epoch) are dropped; the run redoes them.
    `checkpoint`: what `check_resumable(run_dir)` returned, if the caller checked
    already (the check reads the whole model file); else it is checked here.

    Raises:
        RunFolderError: the folder has no usable checkpoint (one line).
    """
    settings = read_settings(run_dir)
    checkpoint = checkpoint or check_resumable(run_dir)
    epochs_done = checkpoint.epochs_done
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        rows = read_rows(os.path.join(run_dir, "metrics.csv"))[:epochs_done]
    except (OSError, ValueError) as error:
        raise RunFolderError(
            f"--resume {run_dir}: unreadable summary or metrics ({error})"
        ) from None
    try:
        with distribution.scope():
            model = keras.saving.load_model(checkpoint.path)
    except Exception as error:  # Keras raises many kinds for a bad archive
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunFolderError(f"--resume {run_dir}: cannot load"
                             f" {os.path.basename(checkpoint.path)} ({reason})") from None
    summary.update(status="running", stopped_early=None)
    summary["backend"] = keras.backend.backend()  # what trains from here on
    summary.setdefault("strategy", settings.strategy)
    summary.setdefault("replicas", distribution.replicas)
    summary.setdefault("bn_sync", bool(settings.bn_sync))
    summary.setdefault("xla", _xla(model, distribution))  # a run from before --jit-compile
    scratch = not writes and distribution.in_lockstep
    if scratch:
        run_dir, writes = _scratch_folder(distribution), True
    if writes:
        files.remove_leftovers(run_dir)
        files.write_rows(os.path.join(run_dir, "metrics.csv"), rows, METRIC_COLUMNS)
    return RunState(settings, data, distribution, run_dir if writes else None, model, summary,
                    rows, tuple(extra_callbacks), monitor_layers, scratch)


def run(state):
    """Trains `state` to its last epoch or until it stops; returns a `RunResult`."""
    if not state.scratch:
        return _run(state)
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            result = _run(state)
    finally:
        shutil.rmtree(state.run_dir, ignore_errors=True)
    result.run_dir = None
    return result


def _run(state):
    callbacks = chief_callbacks(state) if state.writes else []
    stopped = lost_worker = None
    with signals.StopRequest() as stop:
        rules = trainer.StopRules(stop)
        callbacks += [RunRecorder(state), *state.extra_callbacks]
        if state.epochs_done < state.settings.epochs:
            try:
                stopped = trainer.fit(state.model, state.data, state.settings,
                                      state.distribution, callbacks, state.epochs_done, rules)
            except Exception as error:
                if state.distribution.workers == 1 or not distributed.is_failed_collective(error):
                    raise
                # A collective failed: another worker died or stopped answering
                # (TensorFlow's health check aborts the all-reduce; JAX's gloo
                # all-reduce reads a closed socket).
                stopped, lost_worker = "interrupted", _first_line(error)
                _keep_checkpointed_rows(state)
    summary = state.summary
    summary.update(summarize(state.rows, state.settings.target_accuracy))
    summary["stopped_early"] = stopped
    summary["steps"] = _steps_taken(state, lost_worker)
    summary["status"] = stopped or "finished"
    for monitor in (c for c in callbacks if isinstance(c, BatchStatsMonitor)):
        summary["batch_stats_events"] = monitor.events
    # The gap check and --recalibrate: one model to evaluate (not tf.distribute's workers).
    lockstep = state.distribution.in_lockstep
    if (state.variant != "none" and stopped is None
            and (state.distribution.workers == 1 or lockstep)):
        part = state.distribution.part if lockstep else None
        summary.update(inference_gap.after_training(state.model, state.data, state.settings,
                                                    state.variant, part))
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
            # A process other than JAX's chief prints to a silenced stdout: it says
            # why it stops on stderr (the chief holds the run folder and its resume).
            if not state.scratch:
                print(
                    f"[{state.variant}] {how} after {plural(state.epochs_done, 'finished epoch')};"
                    f" continue with python -m train.train --resume {state.run_dir}",
                    flush=True,
                )
            elif lost_worker:
                print(f"[{state.variant}] {how}; process {state.distribution.worker} leaves; the"
                      " run folder is process 0's", file=sys.stderr, flush=True)
    monitors = [c for c in callbacks if isinstance(c, ActivationInputMonitor)]
    history = monitors[0].history if monitors else []
    return RunResult(state.run_dir, summary, state.rows, history, exit_status, lost_worker)


def _xla(model, distribution):
    """What --jit-compile came to: Keras resolves "auto" per backend and strategy
    (the loaded checkpoint keeps what it resolved); multi-worker's loop has none."""
    return bool(model.jit_compile) and distribution.kind != "multi-worker"


def _keep_checkpointed_rows(state):
    """After a lost peer: the epoch rows the checkpoint holds. The rows are kept
    before the checkpoint is saved, and under JAX the save is a collective: a peer
    that dies during it leaves that epoch recorded here but not in the checkpoint."""
    if not state.writes:
        return
    try:
        saved = read_checkpoint_record(state.run_dir)[1]
    except (OSError, ValueError, KeyError, TypeError):
        saved = 0  # no epoch saved yet
    if saved < len(state.rows):
        del state.rows[saved:]
        files.write_rows(os.path.join(state.run_dir, "metrics.csv"), state.rows, METRIC_COLUMNS)


def _steps_taken(state, lost_worker):
    """Every optimizer step the run has taken, over all its epochs (a resume's too).

    Under JAX a failed all-reduce leaves the step's results, the step counter
    among them, unreadable: the steps are then those of the finished epochs.
    """
    if lost_worker and state.distribution.in_lockstep:
        settings = state.settings
        samples = trainer.epoch_samples(len(state.data.x_train), settings.batch_size,
                                        getattr(settings, "drop_remainder", False))
        return state.epochs_done * trainer.steps_per_epoch(samples, settings.batch_size)
    return int(keras.ops.convert_to_numpy(state.model.optimizer.iterations))


def chief_callbacks(state):
    """The callbacks that write the run folder's events; they run on the chief only."""
    run_dir = state.run_dir
    callbacks = [
        EpochEvents(run_dir),
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
    if state.variant != "none" and not getattr(state.settings, "no_batch_stats", False):
        callbacks.append(BatchStatsMonitor(os.path.join(run_dir, "train"),
                                           state.settings.batch_log_every))
    return callbacks


def train_variant(settings, data, variant, run_dir, extra_callbacks=(), monitor_layers="last",
                  distribution=None):
    """Trains one variant from scratch in `run_dir` (None: a worker that writes nothing)."""
    distribution = distribution or distributed.default()
    state = new_run(settings, data, variant, run_dir, distribution, extra_callbacks,
                    monitor_layers)
    return run(state)


def resume(run_dir, data, extra_callbacks=(), monitor_layers="last", distribution=None,
           writes=True, checkpoint=None):
    """Continues `run_dir` from its last finished epoch (see `load_run`)."""
    distribution = distribution or distributed.default()
    state = load_run(run_dir, data, distribution, writes, extra_callbacks, monitor_layers,
                     checkpoint)
    return run(state)


def _scratch_folder(distribution):
    return tempfile.mkdtemp(prefix=f"kbn-process-{distribution.worker}-")


def _write_hparams(run_dir, settings, variant):
    values = {key: settings[key] for key in HPARAM_KEYS if key in settings}
    values = {
        key: v if isinstance(v, (bool, int, float, str)) else str(v) for key, v in values.items()
    }
    values["variant"] = variant
    with EventWriter(run_dir) as writer:
        writer.hparams(values, trial_id=os.path.basename(run_dir))


def _first_line(error):
    """An engine error's first line without TensorFlow's "{{function_node …}}" prefix
    or gloo's "[external/gloo/….cc:538]" source places."""
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", str(error).strip())
    text = re.sub(r"\[external/[^\]]*\]\s*", "", text)
    return text.splitlines()[0] if text else type(error).__name__
