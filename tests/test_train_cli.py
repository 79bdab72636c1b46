"""python -m train.train end to end on tiny settings: run folder, logs, events, bad input."""

import csv
import glob
import json
import os
import re

import keras
import numpy as np
import pytest

from tensorboard_events import scalar_values, tags_by_plugin
from tiny_runs import QUIET, run_python
from train.run import run_folder
from train import compare as compare_command
from train import lr_sweep as lr_sweep_command
from train import train as train_command

TINY = ["--epochs", "2", "--hidden", "8,8", "--shift-every", "5", "--batch-log-every", "5"]


@pytest.fixture(scope="module")
def kbn_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("logs")
    status = train_command.main(
        [*TINY, "--bn", "kbn", "--logdir", str(logdir), "--run-name", "tiny"]
    )
    (run_dir,) = glob.glob(str(logdir / "train" / "*-tiny"))
    return status, run_dir


def test_run_folder_name_and_files(kbn_run):
    status, run_dir = kbn_run
    assert status == 0
    assert re.fullmatch(r"\d{8}-\d{6}-tiny", os.path.basename(run_dir))
    for name in (
        "args.json",
        "metrics.csv",
        "summary.json",
        "checkpoint.keras",
        "train",
        "validation",
    ):
        assert os.path.exists(os.path.join(run_dir, name)), name


def test_summary_matches_metrics(kbn_run):
    _, run_dir = kbn_run
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert summary["variant"] == "kbn" and summary["dataset"] == "digits"
    assert summary["epochs_run"] == 2 and summary["status"] == "finished"
    assert summary["stopped_early"] is None
    assert summary["best_val_accuracy"] == pytest.approx(
        max(float(r["val_accuracy"]) for r in rows)
    )
    assert summary["final_val_loss"] == pytest.approx(float(rows[-1]["val_loss"]))
    assert summary["hyperparameters"]["lr"] == 1.0 and summary["hyperparameters"]["hidden"] == "8,8"
    for key in ("epochs_to_target", "final_val_accuracy", "seconds_per_epoch"):
        assert key in summary
    with open(os.path.join(run_dir, "args.json")) as f:
        assert json.load(f)["batch_size"] == 60


def test_checkpoint_holds_the_final_weights(kbn_run):
    _, run_dir = kbn_run
    model = keras.saving.load_model(os.path.join(run_dir, "checkpoint.keras"))
    assert model.optimizer.iterations.numpy() == 2 * 24  # 1437 training digits / 60 per batch
    assert not np.allclose(model.get_layer("bn_1").moving_mean.numpy(), 0.0)


def test_train_samples_dropout_and_init_scale_reach_the_run(tmp_path):
    """--train-samples 100 at batch 20 is 5 steps an epoch; the checkpoint holds the dropout
    layers and loads (the scaled initializer is a built-in one); args.json records all three."""
    status = train_command.main([*TINY, "--bn", "kbn", "--logdir", str(tmp_path), "--train-samples",
                                 "100", "--batch-size", "20", "--dropout", "0.2", "--init-scale",
                                 "3", "--run-name", "flags"])
    assert status == 0
    (run_dir,) = glob.glob(str(tmp_path / "train" / "*-flags"))
    model = keras.saving.load_model(os.path.join(run_dir, "checkpoint.keras"))
    assert model.optimizer.iterations.numpy() == 2 * 5
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [
        0.2, 0.2]
    with open(os.path.join(run_dir, "args.json")) as f:
        saved = json.load(f)
    assert (saved["train_samples"], saved["dropout"], saved["init_scale"]) == (100, 0.2, 3.0)


def test_event_files_have_the_expected_tags(kbn_run):
    _, run_dir = kbn_run
    train_tags = tags_by_plugin(os.path.join(run_dir, "train"))
    validation_tags = tags_by_plugin(os.path.join(run_dir, "validation"))
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "batch_loss"} <= train_tags[
        "scalars"
    ]
    assert {"epoch_loss", "epoch_accuracy"} <= validation_tags["scalars"]
    histograms = train_tags["histograms"]
    for layer in ("bn_1", "bn_2"):
        for weight in ("gamma", "beta", "moving_mean", "moving_variance"):
            assert any(f"{layer}/{weight}/" in tag for tag in histograms), (layer, weight)
    assert {f"activation_input/act_2/p{q}" for q in (15, 50, 85)} <= train_tags["scalars"]
    assert "activation_input/act_2" in histograms
    assert "hparams" in tags_by_plugin(run_dir)
    learning_rates = scalar_values(os.path.join(run_dir, "train"), "epoch_learning_rate")
    assert [value for _, value in learning_rates] == pytest.approx([1.0, 1.0])


def test_nan_loss_stops_and_is_recorded(tmp_path, capsys):
    status = train_command.main(
        [
            "--epochs",
            "3",
            "--hidden",
            "4",
            "--bn",
            "none",
            "--activation",
            "linear",
            "--lr",
            "1e30",
            "--logdir",
            str(tmp_path),
        ]
    )
    (run_dir,) = glob.glob(str(tmp_path / "train" / "*"))
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert status == 1
    assert summary["stopped_early"] == "nan" and summary["status"] == "nan"
    assert summary["epochs_run"] == 1 and summary["final_val_loss"] is None
    assert "loss became NaN" in capsys.readouterr().out


def test_run_folders_are_never_reused(tmp_path):
    first = run_folder.make_run_dir(str(tmp_path), "exp", "same", stamp="20250101-000000")
    open(os.path.join(first, "summary.json"), "w").write("{}")
    second = run_folder.make_run_dir(str(tmp_path), "exp", "same", stamp="20250101-000000")
    third = run_folder.make_run_dir(str(tmp_path), "exp", "same", stamp="20250101-000000")
    assert len({first, second, third}) == 3
    assert second.endswith("same-2") and third.endswith("same-3")
    assert os.listdir(first) == ["summary.json"] and os.listdir(second) == []


@pytest.fixture
def not_a_folder(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("")
    return str(path)


BAD_FLAGS = [
    (["--lr", "0"], "--lr must be > 0"),
    (["--lr", "abc"], "invalid float value"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--epochs", "-1"], "--epochs must be >= 1"),
    (["--hidden", "10,x"], "--hidden '10,x'"),
    (["--hidden", "10,0"], "widths must be > 0"),
    (["--bn-momentum", "1.5"], "--bn-momentum must be in [0, 1]"),
    (["--bn-epsilon", "0"], "--bn-epsilon must be > 0"),
    (["--activation", "wiggle"], "--activation 'wiggle'"),
    (["--target-accuracy", "2"], "--target-accuracy"),
    (["--validation-split", "1"], "--validation-split"),
    (["--train-samples", "0"], "--train-samples must be >= 1, got 0"),
    (["--train-samples", "1439"], "--train-samples must be in [1, 1438] (the digits training"),
    (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
    (["--init-scale", "0"], "--init-scale must be > 0, got 0.0"),
    (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["--bn", "batch"], "invalid choice: 'batch'"),
    (["--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
    (["--data", "/nonexistent/own.csv"], "no such readable file"),
    (["--label-column", "placed"], "--label-column needs --data"),
    (["--resume", "/nonexistent/run"], "not a run folder"),
    (["--no-such-flag"], "unrecognized arguments"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS)
def test_bad_flags_are_one_line_before_training(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_command.main([*flags, "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("python -m train.train: error:")
    assert message in err
    assert not glob.glob(str(tmp_path / "train" / "*"))  # nothing trained, no run folder


def test_unwritable_logdir_and_wrong_data_type(tmp_path, not_a_folder, capsys):
    with pytest.raises(SystemExit):
        train_command.main(["--logdir", os.path.join(not_a_folder, "logs")])
    assert "cannot create log folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_command.main(["--data", not_a_folder, "--logdir", str(tmp_path)])
    assert "expected a .npz or .csv file" in capsys.readouterr().err


@pytest.mark.parametrize("command", [train_command, compare_command, lr_sweep_command])
def test_cnn_on_tabular_data_is_refused_before_training(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(["--model", "cnn", "--dataset", "breast_cancer", "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "--model cnn needs images" in err and "breast_cancer samples are 30" in err
    assert not glob.glob(str(tmp_path / "*" / "*"))  # no run folder


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_logdir_that_refuses_files_is_one_line(capsys):
    """/proc exists and takes no new files, even from root (for whom chmod means nothing)."""
    with pytest.raises(SystemExit) as exit_info:
        train_command.main(["--logdir", "/", "--experiment", "proc"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "cannot write into log folder /proc" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_logdir_is_one_line(tmp_path, capsys):
    folder = tmp_path / "train"
    folder.mkdir(mode=0o500)
    with pytest.raises(SystemExit):
        train_command.main(["--logdir", str(tmp_path)])
    assert f"cannot write into log folder {folder}" in capsys.readouterr().err


def test_bad_flag_from_the_shell_has_no_traceback(tmp_path):
    done = run_python("-m", "train.train", "--lr", "-3", "--logdir", str(tmp_path), timeout=120)
    assert done.returncode == 2
    assert done.stderr == "python -m train.train: error: --lr must be > 0, got -3.0\n"
    assert done.stdout == ""


def test_help_groups_flags_and_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        train_command.main(["--help"])
    text = capsys.readouterr().out
    for group in ("data:", "model:", "batch norm:", "optimization:", "logging:"):
        assert group in text
    assert "--bn-momentum" in text and "(default: 0.99)" in text and "SYNTHETIC" in text
    assert "python -m train.train --resume" in text  # the docstring's example commands


@pytest.mark.parametrize("position", ["before", "after"])
def test_cnn_trains_end_to_end(tmp_path, position, capsys):
    """--model cnn on the digits images, with BN on either side of the activation."""
    status = train_command.main(
        ["--model", "cnn", "--hidden", "4,8", "--epochs", "2", "--bn", "kbn",
         "--bn-position", position, "--activation", "relu", "--logdir", str(tmp_path),
         "--run-name", "cnn"]
    )
    assert status == 0
    # The last line rounds as the tables do (it printed best 0.3788300835654596).
    assert re.search(r"; best \d\.\d{4}; status finished\n", capsys.readouterr().out)
    (run_dir,) = glob.glob(str(tmp_path / "train" / "*-cnn"))
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["epochs_run"] == 2
    assert summary["hyperparameters"]["model"] == "cnn"
    assert 0.0 < summary["final_val_accuracy"] <= 1.0
    model = keras.saving.load_model(os.path.join(run_dir, "checkpoint.keras"))
    assert any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)
    bn_layers = [layer for layer in model.layers if "bn_" in layer.name]
    assert len(bn_layers) == 2
    # The moving statistics moved away from their initial (0, 1) during training.
    assert not np.allclose(bn_layers[0].moving_mean.numpy(), 0.0)


@pytest.mark.parametrize("module", ["train.train", "train.compare", "train.lr_sweep"])
def test_ctrl_c_outside_a_run_is_one_line_and_exit_130(tmp_path, module):
    """A Ctrl-C that lands between two runs (here: as the first run starts) is
    not caught by a run's own stop handling; the script still ends with one
    line on stderr and status 130, not a traceback."""
    code = (
        "import runpy, sys\n"
        "from train.run import runs\n"
        "def interrupted(*args, **kwargs):\n"
        "    raise KeyboardInterrupt\n"
        "runs.train_variant = interrupted\n"
        f"sys.argv = ['{module}', '--epochs', '1', '--logdir', {str(tmp_path)!r}]\n"
        f"runpy.run_module('{module}', run_name='__main__')\n"
    )
    result = run_python("-c", code, env=QUIET)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"python -m {module}: interrupted (Ctrl-C)")
