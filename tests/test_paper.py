"""python -m train.paper: the --quick report end to end, the verdict rule, sharing, bad input."""

import contextlib
import csv
import glob
import io
import json
import math
import os
import re
from types import SimpleNamespace

import matplotlib.axes
import pytest

from tiny_runs import run_python
from train import paper
from train.claims import paper_report
from train.claims.experiments import EXPERIMENTS, Experiment, Metric, Row
from train.data.datasets import load_dataset
from train.data.variants import VARIANTS

# The training digits of the default split (E1's runs): the report's step counts come from it.
TRAINING_DIGITS = len(load_dataset("digits", seed=1).x_train)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One `python -m train.paper --quick` for the module: (status, stdout, report folder)."""
    logdir = tmp_path_factory.mktemp("logs")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = paper.main(["--quick", "--logdir", str(logdir)])
    (report_dir,) = glob.glob(str(logdir / "paper" / "*"))
    return status, output.getvalue(), report_dir


def test_quick_report_has_every_experiment_with_a_verdict_and_a_png(quick):
    status, stdout, report_dir = quick
    assert status == 0
    assert re.fullmatch(r"\d{8}-\d{6}", os.path.basename(report_dir))
    with open(os.path.join(report_dir, "report.md")) as f:
        text = f.read()
    assert "`python -m train.paper --quick" in text
    for experiment in EXPERIMENTS:
        row = re.search(rf"^\| {experiment.key} {re.escape(experiment.title)} \| ([a-z ]+) \|",
                        text, re.MULTILINE)
        assert row, experiment.key
        assert row.group(1) in paper_report.VERDICTS  # E4 runs: kbn.recalibrate is merged
        assert f"## {experiment.key} {experiment.title}" in text
        with open(os.path.join(report_dir, f"{experiment.key}.png"), "rb") as f:
            assert f.read(8) == PNG_MAGIC
    with open(os.path.join(report_dir, "E1-curves.png"), "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert "full run only" in text  # E5's batch-2 rows
    assert "FAILED" not in stdout and "failed (runs.log)" not in text


def test_report_numbers_are_the_runs_summary_numbers(quick):
    """E1's cells are its runs' summary.json epochs_to_target; E4's its recalibration entries;
    E8's loss gap its run's last metrics.csv row."""
    _, _, report_dir = quick
    with open(os.path.join(report_dir, "report.md")) as f:
        text = f.read()
    for label, variant in (("no BN", "none"), ("BN (kbn)", "kbn")):
        (summary_path,) = glob.glob(os.path.join(report_dir, "E1", f"*-{_slug(label)}-seed1",
                                                 "summary.json"))
        with open(summary_path) as f:
            summary = json.load(f)
        assert summary["variant"] == variant and summary["epochs_run"] == 15
        # The epochs and steps the report names are the run's own: 15 epochs of 24 steps.
        assert summary["steps"] == 15 * math.ceil(TRAINING_DIGITS / 60)
        expected = summary["epochs_to_target"]
        cell = "never" if expected is None else str(expected)
        assert re.search(rf"^\| {re.escape(label)} \| `{variant}` \| [^|]+ \| 15 \(360\) \|"
                         rf" {cell} \|", text, re.MULTILINE), (label, cell)
    (summary_path,) = glob.glob(os.path.join(report_dir, "E4", "*-6-epochs-seed1", "summary.json"))
    with open(summary_path) as f:
        summary = json.load(f)
    for label, key in (("moving averages, 6 epochs", "val_accuracy_ema"),
                       ("recalibrated, 6 epochs", "val_accuracy_recalibrated")):
        assert re.search(rf"^\| {label} \| `kbn` \| [^|]+ \| 6 \(144\) \| {summary[key]:.3f} \|",
                         text, re.MULTILINE), label
    (metrics_path,) = glob.glob(os.path.join(report_dir, "E8", "*-no-BN-loss-gap-seed1",
                                             "metrics.csv"))
    with open(metrics_path) as f:
        last = list(csv.DictReader(f))[-1]
    gap = float(last["val_loss"]) - float(last["loss"])
    assert int(last["epoch"]) == 8
    assert re.search(rf"^\| no BN: loss gap \| `none` \| [^|]+ \| 8 \(80\) \| {gap:.3f} \|",
                     text, re.MULTILINE), gap


def test_progress_lines_and_run_folders(quick):
    status, stdout, report_dir = quick
    jobs, _, _ = paper.plan(EXPERIMENTS, (1,), quick=True)
    progress = [line for line in stdout.splitlines() if line.startswith("[")]
    assert len(progress) == len(jobs)
    for number, line in enumerate(progress, start=1):
        assert re.match(
            rf"\[ ?{number}/{len(jobs)}\] E\d+ .*elapsed \d+:\d\d, about \d+:\d\d left$", line)
    assert progress[-1].endswith("about 0:00 left")
    assert len(glob.glob(os.path.join(report_dir, "E*", "*", "summary.json"))) == len(jobs)
    with open(os.path.join(report_dir, "runs.log")) as f:
        assert "epoch   1/" in f.read()  # the runs' own epoch lines went to the log


def _slug(label):
    return paper._slug(label)


def _fake_job(value):
    return SimpleNamespace(result=SimpleNamespace(summary={"stopped_early": None, "x": value}),
                           error=None)


def _experiment(higher):
    metric = Metric("x", lambda result: result.summary["x"], higher)
    return Experiment(key="T", title="t", claim="c", source="s",
                      rows=(Row("a", "kbn"), Row("b", "none")), metric=metric,
                      comparisons=(("a", "b"),), epochs=(1, 1))


@pytest.mark.parametrize(
    "a, b, higher, expected",
    [
        ((1, 2, 3), (2, 3, 4), False, "reproduced"),
        ((1, 2, 5), (2, 3, 4), False, "partly"),
        ((3, 3, 5), (2, 3, 4), False, "not reproduced"),
        ((11, 12, 13), (None, None, None), False, "reproduced"),  # never reached: worst
        ((None, 12, 13), (None, None, 20), False, "partly"),  # a tie of two nevers does not hold
        ((0.9, 0.8, 0.7), (0.5, None, 0.7), True, "partly"),
    ],
)
def test_verdict_rule(a, b, higher, expected):
    experiment = _experiment(higher)
    by_cell = {}
    for seed in (1, 2, 3):
        by_cell[("T", "a", seed)] = _fake_job(a[seed - 1])
        by_cell[("T", "b", seed)] = _fake_job(b[seed - 1])
    outcome, sentence = paper_report.verdict(experiment, (1, 2, 3), by_cell)
    assert outcome == expected
    assert "of 3 seeds" in sentence


def test_experiment_plot_draws_each_row_in_its_variants_registry_colour(tmp_path, monkeypatch):
    """Guards the one registry: the bars take `variants.VARIANTS[...].color`, not colours
    of their own (keras was green and renorm too, like kbn)."""
    drawn = []
    original = matplotlib.axes.Axes.barh

    def barh(axis, *args, **kwargs):
        drawn.append(kwargs["color"])
        return original(axis, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "barh", barh)
    rows = (Row("k", "keras"), Row("r", "kbn-renorm"), Row("n", "none"))
    experiment = Experiment(key="T", title="t", claim="c", source="s", rows=rows,
                            metric=_experiment(True).metric, comparisons=(), epochs=(1, 1))
    by_cell = {("T", row.label, 1): _fake_job(0.5) for row in rows}
    paper_report.plot_experiment(experiment, (1,), by_cell, str(tmp_path / "T.png"))
    assert drawn == [VARIANTS[row.variant].color for row in rows]


def test_identical_rows_share_runs_and_quick_leaves_out_full_only_rows():
    jobs, by_cell, skipped = paper.plan(EXPERIMENTS, (1, 2), quick=False)
    assert skipped == {}
    for label_e1, label_e3 in (("no BN", "no BN"), ("BN (kbn)", "BN (kbn)")):
        assert by_cell[("E1", label_e1, 2)] is by_cell[("E3", label_e3, 2)]
    assert by_cell[("E1", "BN (kbn)", 1)] is by_cell[("E6", "before", 1)]
    assert by_cell[("E1", "BN (kbn)", 1)] is not by_cell[("E1", "BN (kbn)", 2)]
    assert ("E5", "batch 2, BN", 1) in by_cell
    _, quick_cells, _ = paper.plan(EXPERIMENTS, (1,), quick=True)
    assert ("E5", "batch 2, BN", 1) not in quick_cells
    assert quick_cells[("E1", "no BN", 1)].epochs == 15


def test_e9_and_e10_reuse_e1_and_e2_runs_and_e8_rows_share_one_run_per_setting():
    """Guards the budget: the ×1 and plain-SGD rows are the runs E1 and E2 train anyway,
    and E8's three metrics of one setting read one run."""
    for quick in (False, True):
        _, by_cell, _ = paper.plan(EXPERIMENTS, (1,), quick=quick)
        for variant_label, label in (("no BN", "no BN"), ("BN", "BN (kbn)")):
            for metric in ("epochs", "best val. acc."):
                assert by_cell[("E9", f"×1, {variant_label}: {metric}", 1)] is by_cell[
                    ("E1", label, 1)]
            assert by_cell[("E10", f"SGD lr 1, {variant_label}", 1)] is by_cell[("E1", label, 1)]
            assert (by_cell[("E10", f"SGD lr 10, {variant_label}", 1)]
                    is by_cell[("E2", f"{variant_label}, lr 10", 1)])
        e8 = {key: job for key, job in by_cell.items() if key[0] == "E8"}
        assert len({id(job) for job in e8.values()}) == (4 if not quick else 2)
        assert all(job.flag("--train-samples", None) == 300 for job in e8.values())
    jobs, _, _ = paper.plan(EXPERIMENTS, (1,), quick=False)
    assert paper.Job(EXPERIMENTS[7], EXPERIMENTS[7].rows[2], 1, 20).cost == (
        20 * 30 + paper.FIXED_COST_STEPS)  # 300 digits at batch 10


def _rows_result(rows):
    return SimpleNamespace(rows=rows, summary={"stopped_early": None})


def test_e8_gaps_are_read_from_the_last_epoch_row():
    loss_gap, accuracy_gap = (paper_report.metric_of(EXPERIMENTS[7], row)
                              for row in EXPERIMENTS[7].rows[:5:4])
    rows = [{"loss": 2.0, "val_loss": 2.1, "accuracy": 0.2, "val_accuracy": 0.2},
            {"loss": 0.1, "val_loss": 0.6, "accuracy": 1.0, "val_accuracy": 0.85}]
    assert loss_gap.read(_rows_result(rows)) == pytest.approx(0.5)
    assert accuracy_gap.read(_rows_result(rows)) == pytest.approx(0.15)
    assert not loss_gap.higher_is_better and not accuracy_gap.higher_is_better
    assert loss_gap.read(_rows_result([])) is None
    nan_row = [{"loss": float("nan"), "val_loss": 1.0, "accuracy": 0.1, "val_accuracy": 0.1}]
    assert loss_gap.read(_rows_result(nan_row)) is None


def test_an_experiment_with_two_metrics_gets_one_panel_each(tmp_path, monkeypatch):
    labels = []
    original = matplotlib.axes.Axes.set_xlabel

    def set_xlabel(axis, label, *args, **kwargs):
        labels.append(label)
        return original(axis, label, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel", set_xlabel)
    other = Metric("y", lambda result: -result.summary["x"], True)  # a negative number: a gap
    rows = (Row("a", "kbn"), Row("b", "none"), Row("a y", "kbn", metric=other))
    experiment = Experiment(key="T", title="t", claim="c", source="s", rows=rows,
                            metric=_experiment(True).metric, comparisons=(), epochs=(1, 1))
    by_cell = {("T", row.label, 1): _fake_job(0.5) for row in rows}
    paper_report.plot_experiment(experiment, (1,), by_cell, str(tmp_path / "T.png"))
    assert labels == ["x", "y"]
    with open(tmp_path / "T.png", "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_an_experiment_whose_requirement_is_missing_is_skipped_with_its_reason(tmp_path):
    missing = Experiment(key="E4", title="t", claim="c", source="s", rows=(Row("a", "kbn"),),
                         metric=EXPERIMENTS[0].metric, comparisons=(), epochs=(1, 1),
                         requires=lambda: "kbn.recalibrate (issue 9) is not in this version")
    jobs, by_cell, skipped = paper.plan((missing,), (1,), quick=True)
    assert jobs == [] and skipped == {"E4": "kbn.recalibrate (issue 9) is not in this version"}
    path, table = paper_report.write(str(tmp_path), (missing,), (1,), by_cell, skipped,
                                     command="python -m train.paper", wall_seconds=0.0,
                                     finished=True)
    with open(path) as f:
        text = f.read()
    assert "| E4 t | skipped | kbn.recalibrate (issue 9) is not in this version |" in text
    assert "**Skipped:** kbn.recalibrate (issue 9) is not in this version." in text


def test_report_folder_is_never_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(paper.run_folder, "timestamp", lambda: "20260101-000000")
    first = paper.make_report_dir(str(tmp_path))
    second = paper.make_report_dir(str(tmp_path))
    assert first != second and second.endswith("20260101-000000-2")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "E11"], "--only 'E11': unknown E11; choose from E1, E2"),
        (["--only", ","], "--only ',': unknown empty list"),
        (["--seeds", "1,a"], "--seeds '1,a': expected integers"),
        (["--seeds", "1,1"], "seeds must be distinct"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        paper.parse([*argv, "--logdir", str(tmp_path)])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not os.path.exists(tmp_path / "paper" / "E1")


def test_unwritable_logdir_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = run_python("-m", "train.paper", "--quick", "--logdir", str(blocker))
    assert done.returncode == 2
    assert done.stderr.startswith("python -m train.paper: error: cannot create log folder")
    assert "Traceback" not in done.stderr
