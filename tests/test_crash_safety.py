"""A run killed at any moment stays resumable: atomic files, SIGTERM like Ctrl-C,
and one clear line for a damaged checkpoint."""

import csv
import glob
import json
import os
import select
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from train.run import files, run_folder
from train import train as train_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 12
# Momentum: the optimizer has a state of its own that every checkpoint must carry.
FLAGS = ["--epochs", str(EPOCHS), "--hidden", "8,8", "--lr", "0.1", "--momentum", "0.9",
         "--shift-every", "50", "--batch-log-every", "50"]
# (signal, seconds after the process's first epoch line): spread over an
# epoch's steps, its validation and its file writes (~0.1-0.3 s an epoch here).
# Each kill costs a TensorFlow start-up (~5 s on 2 cores), so four.
KILLS = [(signal.SIGTERM, 0.0), (signal.SIGKILL, 0.07), (signal.SIGTERM, 0.15),
         (signal.SIGKILL, 0.23)]


def _only_run(logdir):
    (run_dir,) = glob.glob(os.path.join(logdir, "train", "*"))
    return run_dir


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def _start(argv):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "train.train", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epoch(process, timeout=120):
    """Reads stdout until the first epoch line; returns what was read (None: it ended)."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 1.0)[0]:
            line = process.stdout.readline()
            if not line:
                return None
            lines.append(line)
            if "] epoch" in line:
                return lines
    process.kill()
    raise AssertionError(f"no epoch line in {lines}")


def test_a_run_killed_again_and_again_ends_as_if_never_killed(tmp_path):
    reference_logs, killed_logs = str(tmp_path / "reference"), str(tmp_path / "killed")
    assert train_command.main([*FLAGS, "--logdir", reference_logs]) == 0
    argv = [*FLAGS, "--logdir", killed_logs]
    for signum, delay in KILLS:
        process = _start(argv)
        if _wait_for_epoch(process) is None:
            break  # finished before this kill: nothing left to interrupt
        time.sleep(delay)
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
        run_dir = _only_run(killed_logs)
        if process.returncode == 0:
            break
        if signum == signal.SIGTERM:  # a clean stop, said so, with the way back
            assert process.returncode == 143, err[-2000:]
            assert "stopped by SIGTERM after" in out and f"--resume {run_dir}" in out
            assert json.load(open(os.path.join(run_dir, "summary.json")))["status"] == (
                "interrupted")
        else:
            assert process.returncode == -signal.SIGKILL
        epochs_done = run_folder.check_resumable(run_dir).epochs_done  # raises if damaged
        assert len(_rows(run_dir)) >= epochs_done >= 1
        argv = ["--resume", run_dir]
    final = _start(["--resume", _only_run(killed_logs)])
    out, err = final.communicate(timeout=180)
    assert final.returncode == 0, err[-2000:]

    reference_dir, killed_dir = _only_run(reference_logs), _only_run(killed_logs)
    assert [row["epoch"] for row in _rows(killed_dir)] == [str(e) for e in range(1, EPOCHS + 1)]
    for a, b in zip(_rows(reference_dir), _rows(killed_dir)):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6)
    reference = keras.saving.load_model(os.path.join(reference_dir, "checkpoint.keras"))
    resumed = keras.saving.load_model(os.path.join(killed_dir, "checkpoint.keras"))
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for a, b in zip(reference.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)
    assert not glob.glob(os.path.join(killed_dir, ".*"))  # no temporary file left behind


class SendSignal(keras.callbacks.Callback):
    """Sends `signum` to this process in the middle of epoch `epoch` (0-based)."""

    def __init__(self, signum, epoch, batch=5):
        super().__init__()
        self.signum, self.epoch, self.batch = signum, epoch, batch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            os.kill(os.getpid(), self.signum)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("finished"))
    assert train_command.main(["--epochs", "2", "--hidden", "8", "--logdir", logdir]) == 0
    return _only_run(logdir)


def test_sigterm_stops_after_the_step_like_ctrl_c(tmp_path, capsys):
    status = train_command.main([*FLAGS, "--logdir", str(tmp_path)],
                                extra_callbacks=[SendSignal(signal.SIGTERM, epoch=2)])
    run_dir = _only_run(str(tmp_path))
    assert status == 143
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["status"] == "interrupted" and summary["epochs_run"] == 2
    assert json.load(open(os.path.join(run_dir, "checkpoint.json")))["epochs_done"] == 2
    out = capsys.readouterr().out
    assert f"stopped by SIGTERM after 2 finished epochs; continue with python -m train.train" \
           f" --resume {run_dir}" in out
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler restored


@pytest.mark.parametrize("damage, message", [
    ("truncate", "is damaged: its sha256 is not the one checkpoint.json recorded"),
    ("unrecorded", "is damaged (File is not a zip file)"),
    ("missing", "checkpoint.keras is missing"),
])
def test_a_damaged_checkpoint_is_one_line(finished_run, tmp_path, capsys, damage, message):
    """As a kill during a non-atomic save used to leave it: a 9 KB truncated zip."""
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    for name in os.listdir(finished_run):
        if not os.path.isdir(os.path.join(finished_run, name)):
            with open(os.path.join(finished_run, name), "rb") as f:
                data = f.read()
            with open(os.path.join(run_dir, name), "wb") as f:
                f.write(data[:9000] if name == "checkpoint.keras" and damage != "missing"
                        else data)
    if damage == "unrecorded":  # a checkpoint.json from before the sha256 was kept
        files.write_json(os.path.join(run_dir, "checkpoint.json"), {"epochs_done": 2})
    if damage == "missing":
        os.remove(os.path.join(run_dir, "checkpoint.keras"))
    with pytest.raises(SystemExit) as exit_info:
        train_command.main(["--resume", run_dir])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"python -m train.train: error: --resume {run_dir}")
    assert message in err


def test_a_killed_write_leaves_the_old_file_and_resume_clears_its_leftover(tmp_path):
    path = str(tmp_path / "summary.json")
    files.write_json(path, {"epochs_run": 1})
    with pytest.raises(RuntimeError):
        with files.replacing(path) as temporary:
            with open(temporary, "w") as f:
                f.write('{"epochs_run": ')  # half a file, then the process "dies"
            raise RuntimeError("killed")
    assert json.load(open(path)) == {"epochs_run": 1}
    assert os.listdir(tmp_path) == ["summary.json"]
    # SIGKILL gives no chance to clean up: the temporary file stays until a resume.
    leftover = tmp_path / ".checkpoint.keras.x1y2.partial.keras"
    leftover.write_bytes(b"PK")
    files.remove_leftovers(str(tmp_path))
    assert os.listdir(tmp_path) == ["summary.json"]
