"""--backend: every training command runs on the Keras backend it names, records it, and a
resume continues on the run's own; what cannot run is one line and exit 2, nothing written.

The JAX runs are subprocesses: a process's Keras backend is fixed at its first import.
"""

import importlib.util
import json
import os
import shutil

import keras
import pytest

from tiny_runs import QUIET, only_run, read_run_file, run_python
from train import compare, train

TINY = ["--epochs", "2", "--hidden", "8,8", "--shift-every", "10", "--batch-log-every", "10"]


def _run(module, argv, backend_env="tensorflow", timeout=300):
    return run_python("-m", module, *argv, env={**QUIET, "KERAS_BACKEND": backend_env},
                      timeout=timeout)


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("jax"))
    done = _run("train.train", [*TINY, "--backend", "jax", "--logdir", logdir])
    assert done.returncode == 0, done.stderr[-2000:]
    return only_run(logdir)


def test_the_run_records_its_backend(jax_run):
    assert read_run_file(jax_run, "args.json")["backend"] == "jax"
    assert read_run_file(jax_run, "summary.json")["backend"] == "jax"


def test_the_default_is_keras_backend(tmp_path):
    done = _run("train.train", [*TINY, "--logdir", str(tmp_path)], backend_env="jax")
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_run_file(only_run(str(tmp_path)), "summary.json")["backend"] == "jax"


def test_a_resume_continues_on_the_runs_backend(jax_run, tmp_path):
    """KERAS_BACKEND says tensorflow; the JAX run still resumes on JAX."""
    copy = tmp_path / "run"
    shutil.copytree(jax_run, copy)
    with open(copy / "args.json") as f:
        settings = json.load(f)
    settings["epochs"] = 3  # one more epoch to train
    with open(copy / "args.json", "w") as f:
        json.dump(settings, f)
    done = _run("train.train", ["--resume", str(copy)], backend_env="tensorflow")
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(read_run_file(str(copy), "metrics.csv")) == 3
    assert read_run_file(str(copy), "summary.json")["backend"] == "jax"


def test_a_resume_on_another_backend_is_refused(jax_run):
    before = sorted(os.listdir(jax_run))
    done = _run("train.train", ["--resume", jax_run, "--backend", "tensorflow"])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--backend tensorflow" in done.stderr
    assert "trained on jax" in done.stderr
    assert sorted(os.listdir(jax_run)) == before


@pytest.mark.parametrize("argv, message", [
    (["--backend", "jax", "--strategy", "mirrored", "--devices", "2"],
     "--strategy mirrored is tf.distribute's: it needs --backend tensorflow"),
    (["--backend", "jax", "--strategy", "multi-worker", "--workers", "2"],
     "--strategy multi-worker is tf.distribute's"),
    (["--backend", "cntk"], "invalid choice: 'cntk'"),
])
def test_what_a_backend_cannot_do_is_one_line(argv, message, tmp_path):
    done = _run("train.train", [*argv, "--logdir", str(tmp_path)])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not os.path.exists(tmp_path / "train") or not os.listdir(tmp_path / "train")


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_a_backend_not_installed_is_one_line(tmp_path):
    done = _run("train.train", ["--backend", "torch", "--logdir", str(tmp_path)])
    assert done.returncode == 2
    assert done.stderr.strip() == ("python -m train.train: error: --backend torch: PyTorch is"
                                   " not installed (kbn's torch extra: pip install '.[torch]'"
                                   " in kbn's checkout, or pip install torch)")


def test_this_process_cannot_switch_backends(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main([*TINY, "--backend", "jax", "--logdir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "already runs Keras on tensorflow" in capsys.readouterr().err


def _epochs_to_target(experiment):
    found = {}
    for folder in os.listdir(experiment):
        path = os.path.join(experiment, folder)
        if os.path.isdir(path):
            summary = read_run_file(path, "summary.json")
            found[summary["variant"]] = summary["epochs_to_target"]
    return found


@pytest.mark.all_backends
@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="compared against TensorFlow")
def test_compare_tells_tensorflows_story(tmp_path, capsys):
    """15 epochs of make run's compare on this process's backend (JAX in `make test`,
    PyTorch in `make test-torch`) and on TensorFlow (a subprocess): Keras's and kbn's
    curves agree on each (exit 0), and BN reaches 95 % within 2 epochs of TensorFlow's.
    The backends draw different initial weights from the same seed, so the runs differ."""
    flags = ["--epochs", "15", "--shift-every", "50", "--batch-log-every", "50"]
    assert compare.main([*flags, "--logdir", str(tmp_path / "here")]) == 0
    assert "curves agree" in capsys.readouterr().out
    done = _run("train.compare", [*flags, "--backend", "tensorflow",
                                  "--logdir", str(tmp_path / "tf")])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    on_tf = _epochs_to_target(str(tmp_path / "tf" / "compare"))
    here = _epochs_to_target(str(tmp_path / "here" / "compare"))
    for variant in ("keras", "kbn"):
        assert on_tf[variant] is not None and here[variant] is not None
        assert abs(here[variant] - on_tf[variant]) <= 2, (on_tf, here)
