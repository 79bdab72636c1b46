"""One tiny `python -m train.compare`, shared by the test modules that inspect it, and
readers of a run folder (test helpers)."""

import contextlib
import csv
import glob
import io
import json
import os

from train import compare
from train.data.variants import COMPARED as VARIANTS

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
