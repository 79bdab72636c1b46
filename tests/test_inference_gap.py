"""The pipeline's batch-statistics monitor, train/inference gap line, --recalibrate and
compare's explanation of a DISAGREE, end to end on tiny runs."""

import glob
import json
import os
import types

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


# Run in a subprocess: splitting the CPU into two logical devices cannot be undone in-process.
MIRRORED = r"""
import argparse, contextlib, io, json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from train.data.datasets import load_dataset
from train.data.models import build_model
from train.run import inference_gap

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
data = load_dataset("digits", seed=1, input_norm="unit")
args = argparse.Namespace(batch_size=60, recalibrate=False)
found = {}
for synchronized in (False, True):
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = build_model("mlp", input_shape=data.input_shape, num_classes=data.num_classes,
                            bn="kbn", seed=1, hidden=(16, 16), bn_synchronized=synchronized)
        model.compile(keras.optimizers.SGD(1.0), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=60, epochs=1, verbose=0)
    spread = inference_gap.replica_spread(model)
    per_replica = model.evaluate(data.x_val, data.y_val, batch_size=60, verbose=0)[1]
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        entries = inference_gap.after_training(model, data, args, "kbn")
    path = os.path.join(sys.argv[1], f"sync-{synchronized}.keras")
    model.save(path)
    saved = keras.saving.load_model(path)  # outside the strategy: one copy of everything
    found[str(synchronized)] = {
        "spread": spread, "spread_after": inference_gap.replica_spread(model),
        "per_replica": per_replica, "entries": entries, "output": output.getvalue(),
        "saved": saved.evaluate(data.x_val, data.y_val, batch_size=60, verbose=0)[1]}
print(json.dumps(found))
"""


def test_under_mirrored_without_bn_sync_the_check_measures_the_saved_model(tmp_path):
    """Regression: under --no-bn-sync the replicas' moving averages differ, fit's val_acc
    used each replica's, and the gap line gave another number for the same thing unsaid."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], capture_output=True,
                          text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    apart, together = found["False"], found["True"]
    assert apart["spread"] > 1e-4 and apart["spread_after"] == 0.0
    assert together["spread"] == 0.0 and "moving_statistics_replica_spread" not in (
        together["entries"])
    entries = apart["entries"]
    assert entries["moving_statistics_replica_spread"] == apart["spread"]
    assert entries["val_accuracy_replicas_own_statistics"] == apart["per_replica"]
    # The gap check's accuracy is the saved model's, measured on one device.
    measured = entries["val_accuracy_batch_stats"] - entries["train_inference_gap"]
    assert measured == pytest.approx(apart["saved"], abs=1e-6)
    said = "with each replica's own on its share of a batch (fit's val_acc)"
    assert (said in apart["output"]) == (apart["saved"] != apart["per_replica"])


def test_when_the_replicas_numbers_differ_the_line_gives_both(monkeypatch, capsys):
    """The issue's numbers: val_acc 0.3454 in the epoch line, 0.3482 in the gap line."""
    measured = iter([(2.0, 0.3454), (2.0, 0.3482)])  # each replica's own, then replica 0's
    monkeypatch.setattr(inference_gap, "replica_spread", lambda model: 0.031)
    monkeypatch.setattr(inference_gap, "make_replicas_agree", lambda model: None)
    monkeypatch.setattr(inference_gap, "inference_metrics", lambda *args: next(measured))
    monkeypatch.setattr(inference_gap, "batch_statistics_accuracy", lambda *args: 0.9)
    data = types.SimpleNamespace(x_val=None, y_val=None)
    args = types.SimpleNamespace(batch_size=60, recalibrate=False)
    entries = inference_gap.after_training(None, data, args, "kbn")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "[kbn] validation accuracy with the moving averages: 0.3482 as checkpoint.keras keeps"
        " them (replica 0's), 0.3454 with each replica's own on its share of a batch (fit's"
        " val_acc): without --bn-sync the replicas' moving averages drift apart (up to 3.1e-02)")
    assert lines[1].startswith("[kbn] train/inference gap: validation accuracy 0.3482 with")
    assert entries["val_accuracy_replicas_own_statistics"] == 0.3454
