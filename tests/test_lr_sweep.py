"""python -m train.lr_sweep end to end on tiny settings."""

import contextlib
import glob
import io
import json
import os

import pytest

from tensorboard_events import tags_by_plugin
from train import lr_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("sweep")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = lr_sweep.main(
            [
                "--lrs",
                "0.1,3",
                "--variants",
                "none,kbn",
                "--epochs",
                "2",
                "--hidden",
                "8",
                "--logdir",
                str(logdir),
            ]
        )
    return status, output.getvalue(), str(logdir / "lr_sweep")


def test_table_has_a_row_per_rate_and_a_column_per_variant(sweep):
    status, output, _ = sweep
    assert status == 0
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("lr "))
    assert (
        "none: epochs to 0.95 (best)" in lines[header]
        and "kbn: epochs to 0.95 (best)" in lines[header]
    )
    assert [line.split()[0] for line in lines[header + 2 : header + 4]] == ["0.1", "3"]


def test_each_run_has_its_rate_and_variant(sweep):
    _, _, experiment = sweep
    folders = sorted(glob.glob(os.path.join(experiment, "*-digits-lr*")))
    assert len(folders) == 4
    for folder in folders:
        with open(os.path.join(folder, "summary.json")) as f:
            summary = json.load(f)
        lr_text, variant = os.path.basename(folder).split("-lr")[1].split("-")
        assert summary["hyperparameters"]["lr"] == float(lr_text) and summary["variant"] == variant
        assert summary["epochs_run"] == 2
        assert tags_by_plugin(os.path.join(folder, "train"))["images"] == {"lr_sweep_plot"}
    assert len(glob.glob(os.path.join(experiment, "*.png"))) == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lrs", "0.1,x"], "--lrs '0.1,x'"),
        (["--lrs", "0,1"], "must be > 0"),
        (["--variants", "none,batch"], "--variants 'none,batch': unknown 'batch'"),
    ],
)
def test_bad_sweep_flags(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        lr_sweep.main([*flags, "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err
    assert not glob.glob(str(tmp_path / "lr_sweep" / "*"))
