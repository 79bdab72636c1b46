"""--strategy data-parallel: Keras 3's `keras.distribution.DataParallel` on JAX, trained
with `model.fit`, equals the one-device run, and batch norm sees the global batch.

Every JAX run is a subprocess (this suite's process runs Keras on TensorFlow, and
XLA's virtual CPU devices are fixed when JAX is imported).
"""

import os
import subprocess
import sys
import textwrap

import pytest

from tiny_runs import read_run_file
from train import diff_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 1347 training digits with --validation-split 0.25: 22 steps of 60 and a dropped 27;
# 450 validation digits: batches of 60 and a last of 30, even.
TINY = ["--backend", "jax", "--epochs", "4", "--hidden", "8,8", "--drop-remainder",
        "--validation-split", "0.25", "--shift-every", "10", "--batch-log-every", "10"]


def _run(argv, code=None, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "jax"}
    env.pop("XLA_FLAGS", None)
    command = ["-c", code] if code else ["-m", "train.train", *argv]
    return subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folders = {}
    two_devices = ["--strategy", "data-parallel", "--devices", "2"]
    for name, flags in {"one": [], "two": two_devices}.items():
        logdir = str(tmp_path_factory.mktemp(name))
        done = _run([*TINY, *flags, "--logdir", logdir])
        assert done.returncode == 0, done.stderr[-3000:]
        (folder,) = os.listdir(os.path.join(logdir, "train"))
        folders[name] = os.path.join(logdir, "train", folder)
    return folders


def test_two_devices_train_the_one_device_run(runs):
    found = diff_runs.differences(runs["one"], runs["two"])
    assert found["epochs"] == 4
    for key in diff_runs.METRICS:
        assert found[key] <= 1e-5, (key, found)
    assert found["weights_rel"] <= 1e-5, found


def test_the_summary_names_the_engine(runs):
    summary = read_run_file(runs["two"], "summary.json")
    assert (summary["backend"], summary["strategy"], summary["replicas"]) == ("jax",
                                                                              "data-parallel", 2)
    assert summary["bn_sync"] is True
    assert read_run_file(runs["one"], "summary.json")["replicas"] == 1


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
    (["--strategy", "data-parallel", "--devices", "2", "--workers", "2"],
     "--workers with --strategy data-parallel: not available yet"),
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
