"""A run folder on disk: its name, its settings, its checkpoint, its state.

    from train.run import run_folder
    run_dir = run_folder.make_run_dir("logs", "train", "digits-kbn")
    settings = run_folder.read_settings(run_dir)         # args.json, as the run saw it
    checkpoint = run_folder.check_resumable(run_dir)     # RunFolderError: one line

A run folder `<logdir>/<experiment>/<YYYYmmdd-HHMMSS>-<run-name>/` holds
    train/, validation/   TensorBoard events: epoch and batch scalars, weight
                          histograms (BN's gamma, beta, moving mean/variance)
    args.json             every setting of the run
    metrics.csv           one row per finished epoch
    summary.json          the outcome (rewritten after every epoch)
    checkpoint.keras      model + optimizer state after the last finished epoch
    checkpoint.json       which epoch that is, and the sha256 of checkpoint.keras

Every file but the event files is replaced atomically (train/run/files.py), in the
order metrics.csv, checkpoint.keras, checkpoint.json, summary.json
(train/run/recording.py): checkpoint.json names an epoch only once the model file
it describes is complete, and metrics.csv always has that epoch's row. A run
killed at any moment therefore resumes from its last finished epoch.
"""

import csv
import json
import os
import time
import typing
import zipfile

from train.options import settings
from train.run import files

CHECKPOINT = "checkpoint.keras"


class RunFolderError(Exception):
    """A run folder cannot be resumed; the message is one line for the user."""


class Checkpoint(typing.NamedTuple):
    """A checkpoint that `check_resumable` found complete: its model file and epochs."""

    path: str
    epochs_done: int


def timestamp():
    return time.strftime("%Y%m%d-%H%M%S")


def make_run_dir(logdir, experiment, run_name, stamp=None):
    """Creates a new run folder; never reuses one (a clash gets a -2, -3 … suffix)."""
    return make_new_folder(os.path.join(logdir, experiment, f"{stamp or timestamp()}-{run_name}"))


def run_name(base, model, *parts):
    """A default run name: `base`, the model unless it is the default mlp, then `parts`.

    run_name("digits", "mlp", "kbn") → "digits-kbn"
    run_name("digits", "cnn", "kbn") → "digits-cnn-kbn"
    """
    return "-".join((base, *(() if model == "mlp" else (model,)), *parts))


def make_new_folder(base):
    """Creates `base`, or `base-2`, `base-3` … if it exists: never an existing folder."""
    folder, attempt = base, 1
    while True:
        try:
            os.makedirs(folder)
            return folder
        except FileExistsError:
            attempt += 1
            folder = f"{base}-{attempt}"


def read_settings(run_dir):
    """A run folder's settings (args.json; see `train.options.settings.from_args_json`).

    Raises:
        RunFolderError: args.json is missing or unreadable.
    """
    try:
        with open(os.path.join(run_dir, "args.json")) as f:
            return settings.from_args_json(json.load(f))
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise RunFolderError(f"{run_dir}: cannot read args.json ({error})") from None


def set_epochs(run_dir, epochs):
    """Makes `epochs` the run's total, in args.json and summary.json's hyperparameters.

    For `--resume RUN --epochs N`: the run then trains on to epoch N. Nothing
    is written when the total is already `epochs`.
    """
    path = os.path.join(run_dir, "args.json")
    with open(path) as f:
        saved = json.load(f)
    if saved.get("epochs") == epochs:
        return
    files.write_json(path, {**saved, "epochs": epochs})
    path = os.path.join(run_dir, "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return  # loading the run reports it
    summary.setdefault("hyperparameters", {})["epochs"] = epochs
    files.write_json(path, summary)


def read_checkpoint_record(run_dir):
    """checkpoint.json as a dict, and its `epochs_done` as an int.

    Raises:
        FileNotFoundError: no epoch saved yet; OSError, ValueError, KeyError,
        TypeError: an unreadable record.
    """
    with open(os.path.join(run_dir, "checkpoint.json")) as f:
        checkpoint = json.load(f)
    return checkpoint, int(checkpoint["epochs_done"])


def check_resumable(run_dir):
    """Makes sure `run_dir` has a complete checkpoint; returns it as a `Checkpoint`.

    It reads the whole model file (its sha256 and the zip's checksums): check
    once per resume and hand the `Checkpoint` on (`runs.load_run`).

    Raises:
        RunFolderError: no finished epoch, or a damaged checkpoint (one line).
    """
    try:
        checkpoint, epochs_done = read_checkpoint_record(run_dir)
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
    return Checkpoint(path, epochs_done)


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


def read_rows(path):
    with open(path, newline="") as f:
        return [
            {key: int(v) if key == "epoch" else float(v) for key, v in row.items()}
            for row in csv.DictReader(f)
        ]
