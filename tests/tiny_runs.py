"""One tiny `python -m train.compare`, shared by the test modules that inspect it, readers
of a run folder, and `run_python`, a command in a process of its own (test helpers)."""

import contextlib
import csv
import glob
import io
import json
import os
import subprocess
import sys

from train import compare
from train.data.variants import COMPARED as VARIANTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's start-up noise off, for a child whose stderr a test shows only on failure.
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3"}

TINY_COMPARE = ["--epochs", "2", "--hidden", "8,8", "--shift-every", "6", "--batch-log-every", "6"]


def tiny_compare(tmp_path_factory):
    """Runs the tiny compare once per test session; returns (status, stdout, experiment folder)."""
    logdir = tmp_path_factory.getbasetemp() / "tiny_compare"
    done = logdir / "stdout.txt"
    if not done.exists():
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            status = compare.main([*TINY_COMPARE, "--logdir", str(logdir)])
        (logdir / "status.txt").write_text(str(status))
        done.write_text(output.getvalue())
    experiment = str(logdir / "compare")
    return int((logdir / "status.txt").read_text()), done.read_text(), experiment


def run_dirs(experiment):
    """The run folders of the compare, in the order none, keras, kbn."""
    return [
        glob.glob(os.path.join(experiment, f"*-digits-{variant}"))[0]
        for variant in VARIANTS
    ]


def only_run(logdir):
    """The one run folder a `python -m train.train` left under `logdir`."""
    (run_dir,) = glob.glob(os.path.join(logdir, "train", "*"))
    return run_dir


def read_run_file(run_dir, name):
    """A run folder's JSON file as a dict, or its CSV file as a list of rows."""
    with open(os.path.join(run_dir, name)) as f:
        return json.load(f) if name.endswith(".json") else list(csv.DictReader(f))


def run_python(*args, env=None, timeout=300):
    """`python *args` in a new process, from the repository root, its output captured.

    Args:
        args: What follows `python`: `"-m", "train.train", "--lr", "-3"` or `"-c", code`.
        env: Variables set on top of this process's environment (e.g. `QUIET`).
        timeout: Seconds before the child is killed and the test fails.

    Returns:
        The `subprocess.CompletedProcess`, with stdout and stderr as text.
    """
    return subprocess.run([sys.executable, *args], cwd=REPO, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
