"""--strategy data-parallel: Keras 3's `keras.distribution.DataParallel` on JAX, trained
with `model.fit`, on 2 devices of one process and on 2 processes
(`jax.distributed.initialize`, CPU collectives over gloo on 127.0.0.1), equals the
one-device run, and batch norm sees the global batch; a killed, stopped or
unreachable process is one line.

Every JAX run is a subprocess (this suite's process runs Keras on TensorFlow, and
XLA's virtual CPU devices are fixed when JAX is imported).
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import kbn  # noqa: F401  (registers the layer for load_model)
from cluster_runs import alive, assert_stopped_in_one_line, kill_worker_1, lines_until, worker_pids
from tiny_runs import only_run, read_run_file
from train import diff_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 1347 training digits with --validation-split 0.25: 22 steps of 60 and a dropped 27;
# 450 validation digits: batches of 60 and a last of 30, even.
TINY = ["--backend", "jax", "--epochs", "4", "--hidden", "8,8", "--drop-remainder",
        "--validation-split", "0.25", "--shift-every", "10", "--batch-log-every", "10"]


SET_UPS = {
    "one": [],
    "devices": ["--strategy", "data-parallel", "--devices", "2"],
    "processes": ["--strategy", "data-parallel", "--workers", "2"],
}


def _environment(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "jax", **extra}
    env.pop("XLA_FLAGS", None)
    return env


def _run(argv, code=None, timeout=300, **env):
    command = ["-c", code] if code else ["-m", "train.train", *argv]
    return subprocess.run([sys.executable, *command], cwd=REPO, env=_environment(**env),
                          capture_output=True, text=True, timeout=timeout)


def _start(argv, **env):
    return subprocess.Popen([sys.executable, "-m", "train.train", *argv], cwd=REPO,
                            env=_environment(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _weights(run_dir):
    return keras.saving.load_model(os.path.join(run_dir, "checkpoint.keras")).get_weights()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run per set-up, same seed and flags; each with its own TMPDIR, to see that the
    processes' scratch folders are gone. Returns {name: (run folder, TMPDIR)}."""
    folders = {}
    for name, flags in SET_UPS.items():
        logdir, scratch = tmp_path_factory.mktemp(name), tmp_path_factory.mktemp("tmp")
        done = _run([*TINY, *flags, "--logdir", str(logdir)], TMPDIR=str(scratch))
        assert done.returncode == 0, done.stderr[-3000:]
        folders[name] = (only_run(str(logdir)), scratch)
    return folders


@pytest.mark.parametrize("name", ["devices", "processes"])
def test_two_replicas_train_the_one_device_run(runs, name):
    found = diff_runs.differences(runs["one"][0], runs[name][0])
    assert found["epochs"] == 4
    for key in diff_runs.METRICS:
        assert found[key] <= 1e-5, (key, found)
    assert found["weights_rel"] <= 1e-5, found


@pytest.mark.parametrize("name", ["devices", "processes"])
def test_the_summary_names_the_engine(runs, name):
    summary = read_run_file(runs[name][0], "summary.json")
    assert (summary["backend"], summary["strategy"], summary["replicas"]) == ("jax",
                                                                              "data-parallel", 2)
    assert summary["bn_sync"] is True
    assert read_run_file(runs["one"][0], "summary.json")["replicas"] == 1
    # The gap check ran on every process with the same numbers as in one process.
    one = read_run_file(runs["one"][0], "summary.json")
    assert summary["val_accuracy_batch_stats"] == pytest.approx(one["val_accuracy_batch_stats"])


def test_only_the_chief_writes_and_the_scratch_folders_go(runs):
    run_dir, scratch = runs["processes"]
    assert os.listdir(os.path.dirname(run_dir)) == [os.path.basename(run_dir)]
    assert os.listdir(scratch) == []  # worker 1's scratch run folder, the workers' logs
    assert read_run_file(run_dir, "args.json")["workers"] == 2
    assert "coordinator" not in read_run_file(run_dir, "args.json")  # where, not what


def test_batch_norm_normalizes_with_the_global_batch_over_processes():
    """Two processes, each feeding its half of one batch of 8: the moving statistics
    (momentum 0: the last batch's) are the whole batch's, 2.0 and 1.5."""
    code = textwrap.dedent("""
        import sys
        import jax
        index, port = int(sys.argv[1]), sys.argv[2]
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=index)
        import keras, numpy as np, kbn
        keras.distribution.set_distribution(keras.distribution.DataParallel(
            devices=keras.distribution.list_devices(), auto_shard_dataset=False))
        # Process 0's half: 1, 1, 1, 1; process 1's: 4, 2, 4, 2.
        half = np.ones(4) if index == 0 else 3 + np.array([1.0, -1.0, 1.0, -1.0])
        x = half.astype("float32")[:, None]
        model = keras.Sequential([keras.Input((1,)),
                                  kbn.BatchNormalization(momentum=0.0, epsilon=1e-3)])
        model.compile(keras.optimizers.SGD(0.0), "mse")
        model.fit(x, np.zeros_like(x), batch_size=4, epochs=1, shuffle=False, verbose=0)
        layer = model.layers[0]
        print(float(np.asarray(layer.moving_mean)[0]), float(np.asarray(layer.moving_variance)[0]),
              len(keras.distribution.list_devices()))
    """)
    (port,) = _free_ports(1)
    processes = [subprocess.Popen([sys.executable, "-c", code, str(index), str(port)], cwd=REPO,
                                  env=_environment(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for index in (0, 1)]
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-3000:]
        mean, variance, devices = out.split()[-3:]
        assert float(mean) == pytest.approx(2.0, abs=1e-6)
        assert float(variance) == pytest.approx(1.5, abs=1e-6)
        assert devices == "2"


@pytest.fixture(scope="module")
def killed_process(tmp_path_factory):
    """A 2-process run whose process 1 is killed (SIGKILL) after the first epoch."""
    logdir = str(tmp_path_factory.mktemp("killed"))
    launcher = _start([*TINY, *SET_UPS["processes"], "--logdir", logdir])
    return kill_worker_1(launcher, "epoch   1/4", logdir)


def test_a_killed_process_stops_everything(killed_process):
    assert_stopped_in_one_line(killed_process)


def test_the_run_of_a_killed_process_resumes(killed_process, runs):
    *_, run_dir = killed_process
    assert read_run_file(run_dir, "summary.json")["status"] == "interrupted"
    assert 1 <= read_run_file(run_dir, "checkpoint.json")["epochs_done"] < 4
    done = _run(["--resume", run_dir])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 workers on 127.0.0.1 (JAX coordinator 127.0.0.1:" in done.stdout
    assert [row["epoch"] for row in read_run_file(run_dir, "metrics.csv")] == ["1", "2", "3", "4"]
    for a, b in zip(_weights(runs["processes"][0]), _weights(run_dir)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_ctrl_c_stops_every_process_after_the_same_step(tmp_path):
    launcher = _start([*TINY, *SET_UPS["processes"], "--epochs", "50", "--logdir",
                       str(tmp_path)])
    pids = worker_pids(lines_until(launcher, "epoch   1/50", timeout=180)[0])
    launcher.send_signal(signal.SIGINT)
    out, err = launcher.communicate(timeout=60)
    run_dir = only_run(str(tmp_path))
    summary = read_run_file(run_dir, "summary.json")
    assert launcher.returncode == 130, err[-2000:]
    assert err == ""
    assert summary["status"] == "interrupted" and summary["epochs_run"] < 50
    assert f"continue with python -m train.train --resume {run_dir}" in out
    assert not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_process_of_a_hand_started_cluster(victim, tmp_path):
    """--coordinator, as on real machines (no launcher): the survivor stops on its own.

    Process 1 killed: process 0's all-reduce fails at once; it records the run as
    interrupted, prints one line and exits 1 without waiting at JAX's shutdown
    barrier (JAX's 100 s heartbeat timeout, then an abort). Process 0 killed: the
    coordinator is gone, and JAX ends the other process itself.
    """
    (port,) = _free_ports(1)
    flags = [*TINY, "--epochs", "40", "--strategy", "data-parallel", "--coordinator",
             f"127.0.0.1:{port}", "--num-processes", "2", "--logdir", str(tmp_path)]
    processes = [_start([*flags, "--process-id", str(index)]) for index in (0, 1)]
    try:
        lines_until(processes[0], "epoch   1/40", timeout=180)
        processes[victim].kill()
        killed_at = time.monotonic()
        survivor = processes[1 - victim]
        out, err = survivor.communicate(timeout=120)
        seconds = time.monotonic() - killed_at
    finally:
        for process in processes:
            process.kill()
            process.communicate()
    assert seconds < 30
    if victim == 0:
        assert survivor.returncode != 0
        return
    run_dir = only_run(str(tmp_path))
    assert survivor.returncode == 1, err[-3000:]
    assert err == ""
    [line] = [line for line in out.splitlines() if "stopped" in line]
    assert "stopped: the cluster lost a worker (" in line and "Gloo" in line
    assert line.endswith(f"; continue with python -m train.train --resume {run_dir}")
    summary = read_run_file(run_dir, "summary.json")
    epochs_done = read_run_file(run_dir, "checkpoint.json")["epochs_done"]
    assert summary["status"] == "interrupted" and 1 <= epochs_done < 40
    assert summary["steps"] == 22 * epochs_done  # 1347 digits, batches of 60, remainder dropped


def _free_ports(count):
    from train.distribution import distributed

    return distributed.free_ports(count)


def test_batch_norm_normalizes_with_the_global_batch():
    """A batch whose halves have different statistics: the moving mean and variance
    (momentum 0: the last batch's) are the whole batch's, 2.0 and 1.5, not a half's."""
    code = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import keras, numpy as np, kbn
        keras.distribution.set_distribution(keras.distribution.DataParallel(
            devices=keras.distribution.list_devices()))
        # Device 0's half: 1, 1, 1, 1; device 1's: 4, 2, 4, 2.
        first = np.ones(4)
        second = 3 + np.array([1.0, -1.0, 1.0, -1.0])
        x = np.concatenate([first, second]).astype("float32")[:, None]
        model = keras.Sequential([keras.Input((1,)),
                                  kbn.BatchNormalization(momentum=0.0, epsilon=1e-3)])
        model.compile(keras.optimizers.SGD(0.0), "mse")
        model.fit(x, np.zeros_like(x), batch_size=8, epochs=1, shuffle=False, verbose=0)
        layer = model.layers[0]
        print(float(np.asarray(layer.moving_mean)[0]), float(np.asarray(layer.moving_variance)[0]))
        print(len(keras.distribution.list_devices()))
    """)
    done = _run(None, code=code)
    assert done.returncode == 0, done.stderr[-3000:]
    mean, variance = map(float, done.stdout.split("\n")[-3].split())
    # Halves: mean 1 / variance 0 and mean 3 / variance 1. The whole batch: mean 2,
    # variance (0 + 1)/2 + 1 = 1.5 (biased); Keras's moving variance is the biased one.
    assert mean == pytest.approx(2.0, abs=1e-6)
    assert variance == pytest.approx(1.5, abs=1e-6)
    assert done.stdout.split("\n")[-2].strip() == "2"


@pytest.mark.parametrize("flags, message", [
    (["--strategy", "data-parallel", "--devices", "2", "--no-bn-sync"],
     "--no-bn-sync: under JAX data parallelism a batch is one global array"),
    (["--strategy", "data-parallel", "--devices", "2", "--backend", "tensorflow"],
     "--strategy data-parallel is keras.distribution's on JAX: it needs --backend jax"),
    (["--strategy", "data-parallel"], "--strategy data-parallel needs --devices N"),
    (["--strategy", "data-parallel", "--devices", "7"],
     "--batch-size 60 does not split evenly over --devices 7"),
    (["--strategy", "data-parallel", "--devices", "2", "--validation-split", "0.2"],
     "the 359 validation samples leave a last batch of 59"),
    (["--strategy", "data-parallel", "--workers", "2", "--validation-split", "0.2"],
     "leave a last batch of 59, which does not split evenly over --workers 2"),
    (["--strategy", "data-parallel", "--devices", "2", "--workers", "2"],
     "--devices 2 with several processes: every process brings one device"),
    (["--strategy", "data-parallel", "--workers", "1"], "--workers must be >= 2, got 1"),
    (["--strategy", "data-parallel", "--coordinator", "127.0.0.1:1"],
     "--coordinator needs --num-processes and --process-id too"),
    (["--strategy", "data-parallel", "--coordinator", "localhost", "--num-processes", "2",
      "--process-id", "1"], "--coordinator 'localhost' is not host:port"),
    (["--strategy", "data-parallel", "--coordinator", "no-such-host.invalid:1234",
      "--num-processes", "2", "--process-id", "1"], "unknown host 'no-such-host.invalid'"),
    (["--strategy", "data-parallel", "--coordinator", "127.0.0.1:1", "--num-processes", "2",
      "--process-id", "2"], "--process-id must be in [0, 1], got 2"),
    (["--strategy", "data-parallel", "--workers", "2", "--coordinator", "127.0.0.1:1",
      "--num-processes", "3", "--process-id", "1"], "--workers 2 but --num-processes 3"),
    (["--strategy", "data-parallel", "--workers", "2", "--join-timeout", "0"],
     "--join-timeout 0: needs several processes"),
    (["--strategy", "data-parallel", "--workers", "2", "--join-timeout", "inf"],
     "--join-timeout inf: needs several processes (--workers N or --coordinator ...) and a"
     " finite time > 0"),
    (["--process-id", "0"], "--process-id needs --strategy data-parallel"),
    # Nothing listens there: one line after --join-timeout, before any run folder.
    (["--strategy", "data-parallel", "--coordinator", "127.0.0.1:1", "--num-processes", "2",
      "--process-id", "1", "--join-timeout", "2", "--validation-split", "0.25"],
     "--coordinator 127.0.0.1:1: nothing answered there in 2 s"),
])
def test_unusable_set_ups_are_one_line(flags, message, tmp_path):
    argv = [flag for flag in TINY if flag not in ("--validation-split", "0.25")]
    argv = argv[:argv.index("--backend")] + argv[argv.index("--backend") + 2:]
    backend = [] if "--backend" in flags else ["--backend", "jax"]
    done = _run([*argv, *backend, *flags, "--logdir", str(tmp_path)])
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not os.path.isdir(tmp_path / "train") or not os.listdir(tmp_path / "train")


def test_the_training_remainder_is_named(tmp_path):
    argv = [flag for flag in TINY if flag != "--drop-remainder"]
    done = _run([*argv, "--strategy", "data-parallel", "--devices", "2", "--logdir",
                 str(tmp_path)])
    assert done.returncode == 2
    assert "the 1347 training samples leave a last batch of 27" in done.stderr
    assert "add --drop-remainder" in done.stderr


def test_a_taken_coordinator_port_is_one_line(tmp_path):
    """Process 0 runs the coordinator service: a port in use is refused before anything."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    argv = [flag for flag in TINY if flag not in ("--backend", "jax")]
    try:
        done = _run([*argv, "--backend", "jax", "--strategy", "data-parallel", "--coordinator",
                     f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "0",
                     "--logdir", str(tmp_path)])
    finally:
        taken.close()
    assert done.returncode == 2
    assert done.stderr == (f"python -m train.train: error: --coordinator 127.0.0.1:{port}:"
                           f" port {port} is already in use\n")
    assert not os.path.isdir(tmp_path / "train") or not os.listdir(tmp_path / "train")


def test_more_devices_than_the_machine_has_is_one_line(tmp_path):
    """JAX on a machine with 2 GPUs (this one has none: Keras is told it has 2 devices):
    `--devices 3` is one line, exit 2, before any run folder exists."""
    code = textwrap.dedent(f"""
        import os, sys
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=3"
        import keras
        keras.distribution.list_devices = lambda device_type=None: ["gpu:0", "gpu:1"]
        from train import train
        sys.exit(train.main({[*TINY, "--strategy", "data-parallel", "--devices", "3",
                              "--batch-size", "60", "--validation-split", "0.25",
                              "--logdir", str(tmp_path)]!r}))
    """)
    done = _run(None, code=code)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr == ("python -m train.train: error: --devices 3: this machine has 2"
                           " (gpu:0, gpu:1)\n")
    assert not os.path.isdir(tmp_path / "train") or not os.listdir(tmp_path / "train")
