"""One tiny `python -m train.compare`, shared by the test modules that inspect it (test helper)."""

import contextlib
import glob
import io
import os

from train import compare
from train.models import VARIANTS

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
