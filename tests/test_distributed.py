"""python -m train.train under tf.distribute: 2 mirrored devices and 2 local worker
processes train exactly the single-process run; a killed worker stops everything.

Every run is a subprocess: splitting the CPU into logical devices and joining a
cluster cannot be undone inside the test process. Tiny settings keep each run
to seconds (the multi-worker ones ~25 s on 2 cores: two TensorFlow start-ups).
The global batch of 60 leaves a last batch of 57 (1437 training digits), so
the uneven split of a batch over replicas is covered too.
"""

import glob
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

import kbn  # noqa: F401  (registers the layer for load_model)
from cluster_runs import alive, assert_stopped_in_one_line, kill_worker_1, lines_until, worker_pids
from tiny_runs import only_run, read_run_file
from train.reports.numbers import plural

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 4
TINY = ["--epochs", str(EPOCHS), "--hidden", "8,8", "--shift-every", "10",
        "--batch-log-every", "10"]
STRATEGIES = {
    "single": [],
    "mirrored": ["--strategy", "mirrored", "--devices", "2"],
    "workers": ["--strategy", "multi-worker", "--workers", "2"],
    "mirrored-no-sync": ["--strategy", "mirrored", "--devices", "2", "--no-bn-sync"],
}
# float32 sums in another order: 1e-4 relative is far above their rounding
# (~1e-6 here) and far below what --no-bn-sync changes (~1e-2).
RTOL = 1e-4


def _environment():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    return env


def _train(argv, timeout=240):
    return subprocess.run([sys.executable, "-m", "train.train", *argv], cwd=REPO,
                          env=_environment(), capture_output=True, text=True, timeout=timeout)


def _weights(run_dir):
    return keras.saving.load_model(os.path.join(run_dir, "checkpoint.keras")).get_weights()


def _files(run_dir):
    """Every file of a run folder, event files counted by folder (their names hold a pid)."""
    names = []
    for folder, _, found in os.walk(run_dir):
        relative = os.path.relpath(folder, run_dir)
        names += [os.path.join(relative, "events" if "tfevents" in name else name)
                  for name in found]
    return sorted(names)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run per strategy, same seed and flags; returns {name: run folder}."""
    folders = {}
    for name, flags in STRATEGIES.items():
        logdir = str(tmp_path_factory.mktemp(name))
        done = _train([*TINY, *flags, "--logdir", logdir])
        assert done.returncode == 0, done.stderr[-3000:]
        folders[name] = only_run(logdir)
    return folders


@pytest.mark.parametrize("name", ["mirrored", "workers"])
def test_synchronized_replicas_train_the_single_process_run(trained, name):
    single = read_run_file(trained["single"], "metrics.csv")
    other = read_run_file(trained[name], "metrics.csv")
    assert len(single) == len(other) == EPOCHS
    for a, b in zip(single, other):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=RTOL, abs=1e-7), (key, a, b)
    for a, b in zip(_weights(trained["single"]), _weights(trained[name])):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=RTOL)


def test_per_replica_statistics_train_a_different_run(trained):
    """--no-bn-sync: each replica normalizes its own 30 samples; the run differs."""
    single = read_run_file(trained["single"], "metrics.csv")
    local = read_run_file(trained["mirrored-no-sync"], "metrics.csv")
    differences = [abs(float(a["loss"]) - float(b["loss"])) / float(a["loss"])
                   for a, b in zip(single, local)]
    assert max(differences) > 100 * RTOL
    moving = [np.max(np.abs(a - b)) for a, b in
              zip(_weights(trained["single"]), _weights(trained["mirrored-no-sync"]))]
    assert max(moving) > 1e-3


@pytest.mark.parametrize("name, replicas, bn_sync", [
    ("single", 1, False), ("mirrored", 2, True), ("workers", 2, True),
    ("mirrored-no-sync", 2, False)])
def test_summary_names_the_strategy(trained, name, replicas, bn_sync):
    summary = read_run_file(trained[name], "summary.json")
    strategy = {"single": "default", "workers": "multi-worker"}.get(name, "mirrored")
    assert (summary["strategy"], summary["replicas"], summary["bn_sync"]) == (
        strategy, replicas, bn_sync)
    assert summary["status"] == "finished" and summary["epochs_run"] == EPOCHS


def test_only_the_chief_writes(trained):
    """One run folder, with the files and event-file count of a single-process run."""
    assert len(glob.glob(os.path.join(os.path.dirname(trained["workers"]), "*"))) == 1
    assert _files(trained["workers"]) == _files(trained["single"])


@pytest.fixture(scope="module")
def killed_worker(tmp_path_factory):
    """A 2-worker run whose worker 1 is killed (SIGKILL) after the first epoch."""
    logdir = str(tmp_path_factory.mktemp("killed"))
    launcher = subprocess.Popen(
        [sys.executable, "-m", "train.train", *TINY, *STRATEGIES["workers"], "--logdir", logdir],
        cwd=REPO, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return kill_worker_1(launcher, f"epoch   1/{EPOCHS}", logdir)


def test_a_killed_worker_stops_everything(killed_worker):
    # The chief is stuck in an all-reduce with a dead peer: the launcher sends SIGTERM,
    # then SIGKILL after 5 s (train/distribution/workers.py).
    assert_stopped_in_one_line(killed_worker)


def test_the_run_of_a_killed_worker_resumes(killed_worker, trained):
    """Marked interrupted at its last finished epoch; --resume relaunches 2 workers and
    ends where the uninterrupted 2-worker run ended."""
    *_, run_dir = killed_worker
    summary = read_run_file(run_dir, "summary.json")
    checkpoint = read_run_file(run_dir, "checkpoint.json")
    assert summary["status"] == "interrupted"
    assert 1 <= checkpoint["epochs_done"] < EPOCHS
    done = _train(["--resume", run_dir])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 workers on 127.0.0.1" in done.stdout
    assert [row["epoch"] for row in read_run_file(run_dir, "metrics.csv")] == [
        str(epoch) for epoch in range(1, EPOCHS + 1)]
    assert read_run_file(run_dir, "summary.json")["status"] == "finished"
    for a, b in zip(_weights(trained["workers"]), _weights(run_dir)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_diff_runs_reports_the_equivalence(trained, capsys):
    """The README's equivalence figures come from `python -m train.diff_runs`."""
    from train import diff_runs

    same = diff_runs.differences(trained["single"], trained["workers"])
    assert same["epochs"] == EPOCHS
    assert max(same[key] for key in diff_runs.METRICS) < RTOL and same["weights_rel"] < RTOL
    apart = diff_runs.differences(trained["single"], trained["mirrored-no-sync"])
    assert apart["loss"] > 100 * RTOL
    assert diff_runs.main([trained["single"], trained["single"]]) == 0
    assert "loss          0.0e+00" in capsys.readouterr().out


def test_ctrl_c_stops_every_worker_after_the_same_step(tmp_path):
    """SIGINT to the launcher is passed on once; the workers agree on the step to stop
    after (a stop vote in the step's all-reduce), the chief says how to resume."""
    launcher = subprocess.Popen(
        [sys.executable, "-m", "train.train", *TINY, *STRATEGIES["workers"], "--epochs", "50",
         "--logdir", str(tmp_path)],
        cwd=REPO, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = lines_until(launcher, "epoch   1/50", timeout=180)
    pids = worker_pids(lines[0])
    launcher.send_signal(signal.SIGINT)
    out, err = launcher.communicate(timeout=60)
    run_dir = only_run(str(tmp_path))
    summary = read_run_file(run_dir, "summary.json")
    assert launcher.returncode == 130, err[-2000:]
    assert err == ""
    assert summary["status"] == "interrupted" and summary["epochs_run"] < 50
    assert f"interrupted after {plural(summary['epochs_run'], 'finished epoch')}; continue with" \
           f" python -m train.train --resume {run_dir}" in out
    assert not any(alive(pid) for pid in pids)
