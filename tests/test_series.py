"""train/run/series.py, the loop of compare, lr_sweep and paper, with a stand-in for training."""

import argparse
import io
import os

import pytest

from train.run import runs, series

STAMP = "20260101-000000"


@pytest.fixture
def trained(monkeypatch):
    """Replaces `runs.train_variant`; returns the variants it was asked to train."""
    asked = []

    def train_variant(settings, data, variant, run_dir, **kwargs):
        asked.append(variant)
        if variant == "broken":
            raise RuntimeError("assertion failed: NaN")
        stopped = "interrupted" if variant == "stopped" else None
        return runs.RunResult(run_dir, {"stopped_early": stopped}, [], [])

    monkeypatch.setattr(runs, "train_variant", train_variant)
    return asked


def _plans(tmp_path, variants):
    settings = argparse.Namespace(logdir=str(tmp_path), experiment="exp")
    return [series.Plan(f"heading {v}", f"name-{v}", v, settings, data=None) for v in variants]


def test_each_run_gets_its_folder_and_line_and_the_series_ends_after_an_interrupted_one(
        tmp_path, trained, capsys):
    done = list(series.train_in_turn(_plans(tmp_path, ("none", "stopped", "kbn")), stamp=STAMP))
    assert trained == ["none", "stopped"]
    assert [d.interrupted for d in done] == [False, True]
    folders = [os.path.join(str(tmp_path), "exp", f"{STAMP}-name-{v}") for v in ("none", "stopped")]
    assert [d.result.run_dir for d in done] == folders and all(map(os.path.isdir, folders))
    assert capsys.readouterr().out.splitlines() == [
        f"--- heading none: {folders[0]}", f"--- heading stopped: {folders[1]}"]


def test_keep_going_hands_back_a_runs_error_and_log_takes_the_lines(tmp_path, trained, capsys):
    log = io.StringIO()
    done = list(series.train_in_turn(_plans(tmp_path, ("broken", "kbn")), log=log,
                                     keep_going=True))
    assert trained == ["broken", "kbn"]
    assert done[0].result is None and str(done[0].error) == "assertion failed: NaN"
    assert done[1].error is None and done[1].result is not None
    assert log.getvalue().count("--- heading") == 2 and capsys.readouterr().out == ""
    with pytest.raises(RuntimeError):
        list(series.train_in_turn(_plans(tmp_path, ("broken",))))
