"""The pipeline's batch-statistics monitor, train/inference gap line, --recalibrate and
compare's explanation of a DISAGREE, end to end on tiny runs."""

import glob
import json
import os

import keras
import numpy as np
import pytest

import kbn
from tensorboard_events import tags_by_plugin
from train import compare
from train.reports import disagreement
from train.run import inference_gap
from train import train as train_command

# One epoch (24 steps) at momentum 0.99: the moving averages still lag far behind.
TINY = ["--epochs", "1", "--hidden", "16,16", "--shift-every", "6", "--batch-log-every", "6"]


def _run(logdir, *flags):
    status = train_command.main([*TINY, "--logdir", str(logdir), *flags])
    (run_dir,) = glob.glob(str(logdir / "train" / "*"))
    with open(os.path.join(run_dir, "summary.json")) as f:
        return status, run_dir, json.load(f)


def test_recalibrate_records_both_and_the_gap_is_announced(tmp_path, capsys):
    status, run_dir, summary = _run(tmp_path, "--recalibrate")
    output = capsys.readouterr().out
    assert status == 0
    assert summary["val_accuracy_ema"] == pytest.approx(summary["final_val_accuracy"])
    # Measured: 0.30 with the moving averages, 0.88 recalibrated, 0.90 with batch statistics.
    assert summary["val_accuracy_recalibrated"] > summary["val_accuracy_ema"] + 0.3
    assert summary["val_loss_recalibrated"] < summary["val_loss_ema"]
    assert summary["val_accuracy_batch_stats"] - summary["val_accuracy_ema"] == pytest.approx(
        summary["train_inference_gap"])
    assert "[kbn] train/inference gap: validation accuracy" in output
    assert "--recalibrate recomputes" not in output  # it was given
    assert f"recalibrated: val accuracy {summary['val_accuracy_ema']:.4f}" in output
    # The batch-statistics monitor is on by default.
    scalars = tags_by_plugin(os.path.join(run_dir, "train"))["scalars"]
    assert {"batch_stats/bn_1/mean_shift", "batch_stats/bn_1/variance_ratio",
            "batch_stats/bn_2/skipped"} <= scalars
    assert summary["batch_stats_events"] == []


def test_without_recalibrate_the_gap_line_suggests_it_and_the_monitor_can_be_off(tmp_path,
                                                                                   capsys):
    status, run_dir, summary = _run(tmp_path, "--no-batch-stats", "--bn", "keras")
    output = capsys.readouterr().out
    assert status == 0 and "val_accuracy_recalibrated" not in summary
    assert "[keras] train/inference gap" in output and "--recalibrate recomputes" in output
    scalars = tags_by_plugin(os.path.join(run_dir, "train"))["scalars"]
    assert not any(tag.startswith("batch_stats/") for tag in scalars)
    assert "batch_stats_events" not in summary


def overflowing_variance_data(path, magnitude=1e22):
    """A two-class table whose every batch-norm input has an infinite batch variance
    and a finite mean, on any CPU and in any summation order.

    Feature 0 is ±`magnitude` (half the samples each sign), feature 1 is 0, so
    the first Dense layer's unit j sees ±w_j·magnitude: its square overflows
    float32 (|w_j| > 2e-3 suffices), while the batch mean is 0 up to rounding
    (≤ 64 · 2⁻²⁴ · |w_j|·magnitude, whose square stays finite). Keras's moving
    variance becomes inf; kbn's NaN safety skips the update. The training
    outputs stay finite (x̂ = (x − μ) · rsqrt(inf) = 0), so neither run diverges.
    """
    sign = np.tile([1.0, -1.0], 32)
    x = np.zeros((64, 2), "float32")
    x[:, 0] = sign * magnitude
    x_test = x[:16].copy()
    np.savez(path, x_train=x, y_train=(sign > 0).astype("int64"),
             x_test=x_test, y_test=(x_test[:, 0] > 0).astype("int64"))
    return str(path)


def test_compare_explains_why_keras_and_kbn_disagree(tmp_path, capsys):
    """Keras's moving variance becomes inf at the first step, kbn skips it; one
    batch of the whole table, so every batch keeps its mean finite."""
    data = overflowing_variance_data(tmp_path / "huge.npz")
    status = compare.main(["--data", data, "--input-norm", "none", "--batch-size", "64",
                           "--hidden", "4,4", "--epochs", "2", "--lr", "0.1",
                           "--logdir", str(tmp_path)])
    output = capsys.readouterr().out
    assert status == 1 and "keras vs kbn: curves DISAGREE" in output
    assert ("why: in the keras run bn_1's moving_variance became inf in epoch 1 (step 1),"
            " while kbn's NaN safety skipped those updates") in output
    assert "warning: step 1 (epoch 1): NaN safety skipped 4 channel update(s)" in output
    assert "both diverged" not in output


def test_reasons_without_events():
    lines = disagreement.reasons({"batch_stats_events": []}, {})
    assert lines == ["why: no batch-norm layer hit NaN safety or non-finite statistics in"
                     " either run (or the monitor was off); the difference is elsewhere"]


def test_batch_statistics_accuracy_restores_every_variable():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                              kbn.BatchNormalization(), keras.layers.Dense(2,
                                                                           activation="softmax")])
    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    y = np.zeros(10, "int64")
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    accuracy = inference_gap.batch_statistics_accuracy(model, x, y, batch_size=4)
    for value, variable in zip(before, model.variables):
        np.testing.assert_array_equal(value, keras.ops.convert_to_numpy(variable))
    predicted = np.concatenate([np.argmax(keras.ops.convert_to_numpy(
        model(x[i:i + 4], training=True)), -1) for i in (0, 4, 8)])
    assert accuracy == np.mean(predicted == 0)


def test_tables_show_the_recalibrated_accuracy():
    from train.reports import report
    from train.run.runs import RunResult

    summary = {"variant": "kbn", "epochs_to_target": None, "best_val_accuracy": 0.3,
               "final_val_accuracy": 0.3, "final_val_loss": 2.2, "seconds_per_epoch": 0.1,
               "stopped_early": None, "val_accuracy_recalibrated": 0.88,
               "val_loss_recalibrated": 1.05}
    result = RunResult("run", summary, [], [])
    table = report.comparison_table({"kbn": result}, 0.95).splitlines()
    assert table[0].split("  ")[:7] == ["variant", "epochs to 0.95", "best val acc",
                                        "final val acc", "final val loss", "recal val acc",
                                        "recal val loss"]
    assert table[2].split()[5:7] == ["0.8800", "1.0500"]
    sweep = report.sweep_table({1.0: {"kbn": result}}, ["kbn"], 0.95)
    assert "never (0.300, recalibrated 0.880)" in sweep
