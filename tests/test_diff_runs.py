"""python -m train.diff_runs on runs that cannot be compared whole: other models, other lengths."""

import os
import shutil

import pytest

from tiny_runs import only_run
from train import diff_runs
from train import train as train_command

TINY = ["--hidden", "8,8", "--shift-every", "100", "--batch-log-every", "100", "--no-batch-stats"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs of one seed: kbn for 2 and 3 epochs, no BN for 2 (a model of other shapes)."""
    folders = {}
    for name, flags in {"kbn2": ["--bn", "kbn", "--epochs", "2"],
                        "kbn3": ["--bn", "kbn", "--epochs", "3"],
                        "none2": ["--bn", "none", "--epochs", "2"]}.items():
        logdir = str(tmp_path_factory.mktemp(name))
        assert train_command.main([*TINY, *flags, "--logdir", logdir]) == 0
        folders[name] = only_run(logdir)
    return folders


def test_different_models_compare_metrics_and_say_why_not_weights(runs, capsys):
    """Regression: a kbn and a no-BN run raised "operands could not be broadcast together"."""
    found = diff_runs.differences(runs["kbn2"], runs["none2"])
    assert found["epochs"] == 2 and found["loss"] > 0
    assert found["weights_abs"] is None and found["weights_rel"] is None
    assert found["settings"] == {"variant": ("kbn", "none")}
    assert diff_runs.main([runs["kbn2"], runs["none2"]]) == 0
    out = capsys.readouterr().out
    assert "settings that differ (a vs b): variant kbn vs none" in out
    assert "over 2 epochs, largest relative difference:" in out
    assert ("final weights not compared: the models differ"
            " (weight 2: bn_1/gamma (8,) in a, dense_1/bias (8,) in b)") in out


def test_different_lengths_compare_the_common_epochs_and_not_the_weights(runs, capsys):
    """Regression: 2 vs 3 epochs compared final weights of different epochs without a word."""
    found = diff_runs.differences(runs["kbn2"], runs["kbn3"])
    assert (found["epochs"], found["epochs_a"], found["epochs_b"]) == (2, 2, 3)
    # The same seed trains the same first two epochs.
    assert all(found[key] == 0.0 for key in diff_runs.METRICS)
    assert found["weights_abs"] is None
    assert found["settings"] == {"epochs": (2, 3)}
    assert diff_runs.main([runs["kbn2"], runs["kbn3"]]) == 0
    out = capsys.readouterr().out
    assert "over the first 2 epochs, the ones both have (a has 2 epochs, b 3)" in out
    assert "final weights not compared: they are from different epochs (2 and 3)" in out


def test_the_same_run_compares_everything(runs, capsys):
    found = diff_runs.differences(runs["kbn3"], runs["kbn3"])
    assert found["weights_abs"] == 0.0 and found["weights_skipped"] is None
    assert found["settings"] == {}
    assert diff_runs.main([runs["kbn3"], runs["kbn3"]]) == 0
    assert "final weights: largest absolute difference 0.0e+00" in capsys.readouterr().out


def test_nothing_comparable_is_one_line_and_exit_2(runs, tmp_path, capsys):
    empty = tmp_path / "no-epochs"
    shutil.copytree(runs["none2"], empty)
    with open(empty / "metrics.csv") as f:
        header = f.readline()
    (empty / "metrics.csv").write_text(header)
    with pytest.raises(SystemExit) as exit_info:
        diff_runs.main([runs["kbn2"], str(empty)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("python -m train.diff_runs: error: nothing to compare:"
                                   " a has 2 epochs, b 0, and the final weights are not comparable")


def test_a_folder_that_is_no_run_is_one_line(tmp_path, runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        diff_runs.main([runs["kbn2"], str(tmp_path)])
    assert exit_info.value.code == 2
    assert "not a finished run folder (no checkpoint.keras)" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
