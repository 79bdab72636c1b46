"""Run folders name the model when it is not the default mlp: digits-cnn-kbn, digits-kbn."""

import glob
import os

import pytest

from train import compare, lr_sweep
from train import train as train_command
from train.run import run_folder, runs


def test_run_name_adds_the_model_unless_it_is_the_mlp():
    assert run_folder.run_name("digits", "mlp", "kbn") == "digits-kbn"
    assert run_folder.run_name("digits", "cnn", "kbn") == "digits-cnn-kbn"
    assert run_folder.run_name("digits", "cnn") == "digits-cnn"
    assert run_folder.run_name("no-BN", "cnn", "seed1") == "no-BN-cnn-seed1"


def _stop_at_the_first_run(*args, **kwargs):
    raise KeyboardInterrupt  # the run folder exists by then; nothing needs to train


@pytest.mark.parametrize("command, model, folder", [
    (train_command, "mlp", "train/*-digits-kbn"),
    (train_command, "cnn", "train/*-digits-cnn-kbn"),
    (compare, "mlp", "compare/*-digits-none"),
    (compare, "cnn", "compare/*-digits-cnn-none"),
    (lr_sweep, "mlp", "lr_sweep/*-digits-lr1-none"),
    (lr_sweep, "cnn", "lr_sweep/*-digits-cnn-lr1-none"),
])
def test_run_folders_name_the_model(command, model, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "train_variant", _stop_at_the_first_run)
    flags = ["--model", model, "--logdir", str(tmp_path)]
    if command is lr_sweep:
        flags += ["--lrs", "1"]
    with pytest.raises(KeyboardInterrupt):
        command.main(flags)
    (made,) = glob.glob(os.path.join(tmp_path, "*", "*"))
    assert glob.glob(os.path.join(tmp_path, folder)) == [made]
