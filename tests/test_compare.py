"""python -m train.compare end to end on tiny settings, and its table and agreement check."""

import json
import math
import os

import pytest

from tensorboard_events import tags_by_plugin
from tiny_runs import run_dirs, tiny_compare
from train import compare
from train.reports import report
from train.data.variants import COMPARED as VARIANTS
from train.run.runs import RunResult


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    return tiny_compare(tmp_path_factory)


def _summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def test_prints_the_table_and_the_agreement(compare_run):
    status, output, experiment = compare_run
    assert status == 0
    table = output[output.index("variant  epochs to 0.95") :]
    assert [line.split()[0] for line in table.splitlines()[2:5]] == list(VARIANTS)
    assert "keras vs kbn: curves agree" in output
    assert f"plot: {experiment}" in output and "make tensorboard" in output


def test_variants_that_diverge_together_agree(tmp_path, capsys):
    """An absurd learning rate: both BN runs hit a NaN loss in the same epoch,
    which is agreement (the same run), and the line says they diverged."""
    status = compare.main(["--lr", "1e30", "--epochs", "2", "--hidden", "8,8",
                           "--logdir", str(tmp_path)])
    output = capsys.readouterr().out
    assert "[keras] loss became NaN" in output and "[kbn] loss became NaN" in output
    assert "keras vs kbn: curves agree" in output and "both diverged (NaN loss)" in output
    assert status == 0


def test_three_runs_share_a_timestamp_and_start_equal(compare_run):
    _, _, experiment = compare_run
    folders = run_dirs(experiment)
    stamps = {os.path.basename(folder)[:15] for folder in folders}
    assert len(stamps) == 1
    summaries = [_summary(folder) for folder in folders]
    assert [s["variant"] for s in summaries] == list(VARIANTS)
    keras_summary, kbn_summary = summaries[1], summaries[2]
    for key in ("best_val_accuracy", "final_val_accuracy", "final_val_loss"):
        assert keras_summary[key] == pytest.approx(kbn_summary[key], abs=1e-3)
    # Same hyperparameters except the variant.
    hyper = [dict(s["hyperparameters"], variant=None) for s in summaries]
    assert hyper[0] == hyper[1] == hyper[2]


def test_plot_is_written_and_logged_as_an_image_in_every_run(compare_run):
    _, _, experiment = compare_run
    (png,) = [name for name in os.listdir(experiment) if name.endswith(".png")]
    with open(os.path.join(experiment, png), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    for folder in run_dirs(experiment):
        assert tags_by_plugin(os.path.join(folder, "train"))["images"] == {"comparison_plot"}
        assert "hparams" in tags_by_plugin(folder)


def test_only_the_bn_runs_have_bn_histograms(compare_run):
    _, _, experiment = compare_run
    none_dir, keras_dir, kbn_dir = run_dirs(experiment)
    for folder, has_bn in ((none_dir, False), (keras_dir, True), (kbn_dir, True)):
        histograms = tags_by_plugin(os.path.join(folder, "train"))["histograms"]
        assert any("bn_2/moving_variance" in tag for tag in histograms) == has_bn
        assert "activation_input/act_2" in histograms  # the last hidden layer is watched


def _rows(values):
    return [
        {"epoch": i + 1, "loss": v, "accuracy": v, "val_loss": v, "val_accuracy": v}
        for i, v in enumerate(values)
    ]


@pytest.mark.parametrize(
    "a, b, agree",
    [
        ([0.5, 0.4], [0.5, 0.4], True),
        ([0.5, 0.4], [0.5, 0.4009], True),
        ([0.5, 0.4], [0.5, 0.4011], False),  # one epoch off by more than 1e-3 is enough
        ([0.5, 0.4], [0.5], False),  # one run stopped early
        ([0.5, math.nan], [0.5, math.nan], True),  # both diverged at the same epoch
        ([0.5, math.nan], [0.5, 0.4], False),
        ([0.5, math.inf], [0.5, 0.4], False),
        ([0.5, math.inf], [0.5, math.inf], True),
    ],
)
def test_curves_agree(a, b, agree):
    assert report.curves_agree(_rows(a), _rows(b))[0] is agree


def test_comparison_table_says_never():
    summary = {
        "variant": "none",
        "epochs_to_target": None,
        "best_val_accuracy": 0.9,
        "final_val_accuracy": 0.9,
        "final_val_loss": 0.3,
        "seconds_per_epoch": 0.25,
        "stopped_early": None,
    }
    table = report.comparison_table({"none": RunResult("x", summary, [], [])}, 0.95)
    header, rule, row = table.splitlines()
    assert header.startswith("variant  epochs to 0.95") and set(rule) <= {"-", " "}
    assert row.split() == ["none", "never", "0.9000", "0.9000", "0.3000", "0.250"]


def test_bad_flag_stops_before_training(tmp_path, capsys):
    from train import compare

    with pytest.raises(SystemExit):
        compare.main(["--bn", "kbn", "--logdir", str(tmp_path)])  # compare has no --bn
    assert capsys.readouterr().err.count("\n") == 1
    assert not os.listdir(tmp_path)
