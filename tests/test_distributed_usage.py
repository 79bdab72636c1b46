"""Strategy flags and TF_CONFIG: a bad one is one line, exit status 2, and no run folder.

These run in-process: every check happens before TensorFlow sets up a device.
"""

import glob
import json
import socket

import pytest

from train.distribution import distributed
from train import train as train_command

BAD_FLAGS = [
    (["--strategy", "multi-worker", "--workers", "1"], "--workers must be >= 2, got 1"),
    (["--strategy", "mirrored", "--devices", "0"], "--devices must be >= 1, got 0"),
    (["--strategy", "mirrored"], "--strategy mirrored needs --devices N"),
    (["--strategy", "multi-worker"], "--strategy multi-worker needs --workers N"),
    (["--devices", "2"], "--devices needs --strategy mirrored"),
    (["--workers", "2"], "--workers needs --strategy multi-worker"),
    (["--bn-sync"], "--bn-sync needs a strategy with several replicas"),
    (["--strategy", "mirrored", "--devices", "4", "--batch-size", "3"],
     "--batch-size 3 is the global batch; it must be at least the number of replicas (4)"),
    (["--strategy", "ring"], "invalid choice: 'ring'"),
    (["--strategy", "mirrored", "--devices", "2", "--jit-compile", "on"],
     "--jit-compile on: XLA failed to compile a step of --strategy mirrored"),
    (["--strategy", "multi-worker", "--workers", "2", "--jit-compile", "off"],
     "--jit-compile off: --strategy multi-worker trains in the project's own loop"),
    (["--jit-compile", "maybe"], "argument --jit-compile: invalid choice: 'maybe'"),
]


def _two_workers(first, second="127.0.0.1:2", index=0):
    return json.dumps({"cluster": {"worker": [first, second]},
                       "task": {"type": "worker", "index": index}})


BAD_TF_CONFIGS = [
    ("{not json", "TF_CONFIG is not JSON"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), 'TF_CONFIG has no "cluster" object'),
    (_two_workers("127.0.0.1:1", index=2), "TF_CONFIG: task index 2 is not one of the 2 worker"),
    (_two_workers("127.0.0.1"), "TF_CONFIG: address '127.0.0.1' is not host:port"),
    (json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}),
     "TF_CONFIG names 1 task(s); a cluster needs at least 2"),
    (json.dumps({"cluster": {"worker": ["a:1", "b:2"], "ps": ["c:3"]},
                 "task": {"type": "worker", "index": 0}}), "task types ['ps'] are not supported"),
]


def _refused(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_command.main([*argv, "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("python -m train.train: error:")
    assert not glob.glob(str(tmp_path / "train" / "*"))  # no run folder
    return err


@pytest.mark.parametrize("flags, message", BAD_FLAGS)
def test_bad_strategy_flags_are_one_line(flags, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert message in _refused(flags, tmp_path, capsys)


@pytest.mark.parametrize("config, message", BAD_TF_CONFIGS)
def test_bad_tf_config_is_one_line(config, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", config)
    assert message in _refused(["--strategy", "multi-worker"], tmp_path, capsys)


def test_a_port_already_taken_is_one_line(tmp_path, capsys, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("TF_CONFIG", _two_workers(f"127.0.0.1:{port}"))
        err = _refused(["--strategy", "multi-worker"], tmp_path, capsys)
    assert f"port {port} is already in use" in err


def test_workers_must_match_the_cluster(tmp_path, capsys, monkeypatch):
    (port,) = distributed.free_ports(1)
    monkeypatch.setenv("TF_CONFIG", _two_workers(f"127.0.0.1:{port}"))
    err = _refused(["--strategy", "multi-worker", "--workers", "3"], tmp_path, capsys)
    assert "--workers 3 but TF_CONFIG names 2 workers" in err


def test_tf_config_places_the_chief_first():
    cluster = {"chief": ["c:1"], "worker": ["w:1", "w:2"]}
    task = distributed.parse_tf_config(
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    assert task == distributed.Task(index=2, workers=3, address="w:2")
    chief = distributed.parse_tf_config(
        json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
    )
    assert chief.index == 0 and chief.address == "c:1"


def test_more_gpus_than_the_machine_has_is_one_line(tmp_path, capsys, monkeypatch):
    """On a machine with one GPU, `--devices 2` is refused before any device is set up
    (this machine has none: TensorFlow is told it has one)."""
    import tensorflow as tf

    listed = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else listed(kind))
    err = _refused(["--strategy", "mirrored", "--devices", "2", "--epochs", "1"], tmp_path,
                   capsys)
    assert err.endswith("error: --devices 2: this machine has 1 GPU(s)\n")


def test_jit_compile_on_with_torch_is_refused():
    """Checked without PyTorch: Keras would hand the step to torch.compile."""
    from train.options import cli

    settings = cli.make_parser("", experiment="train").parse_args(["--jit-compile", "on"])
    settings.backend = "torch"
    with pytest.raises(ValueError, match="--jit-compile on: on PyTorch Keras would compile"
                                         " with torch.compile"):
        distributed.check(settings)
    settings.jit_compile = "off"
    distributed.check(settings)  # eager, as auto is
