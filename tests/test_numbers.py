"""Numbers printed for people are rounded as the tables are; counts take the right plural."""

import types

import keras
import pytest

from train.reports import report
from train.reports.numbers import number, plural
from train.run.recording import RunRecorder


@pytest.mark.parametrize("value, decimals, printed", [
    (0.3788300835654596, 4, "0.3788"),
    (0.9861, 4, "0.9861"),
    (2.5, 3, "2.500"),
    (999999.0, 4, "999999.0000"),
    (1e6, 4, "1.000e+06"),
    (395436496844521315453676552192.0, 4, "3.954e+29"),  # a diverged loss
    (-3.954e29, 4, "-3.954e+29"),
    (float("nan"), 4, "nan"),
    (float("inf"), 4, "inf"),
    (None, 4, "-"),
])
def test_number_keeps_decimals_and_goes_scientific_when_huge(value, decimals, printed):
    assert number(value, decimals) == printed


def test_plural_agrees_with_the_count():
    assert plural(1, "epoch") == "1 epoch"
    assert plural(0, "epoch") == "0 epochs"
    assert plural(3, "epoch") == "3 epochs"
    assert plural(2, "batch", "batches") == "2 batches"


def test_the_setup_line_says_1_epoch():
    args = types.SimpleNamespace(model="mlp", hidden="8", activation="sigmoid",
                                 bn_position="before", optimizer="sgd", lr=1.0, batch_size=60,
                                 epochs=1, seed=1)
    data = types.SimpleNamespace(name="digits", input_norm="unit")
    assert ", 1 epoch, " in report.setup_line(args, data)


def test_the_epoch_line_prints_a_diverged_loss_in_scientific_notation(tmp_path, capsys):
    """Regression: the epoch line printed a loss of 3.95e29 as 3954364968…192.0000 (31 digits)."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    state = types.SimpleNamespace(rows=[], summary={"target_accuracy": 0.95}, writes=True,
                                  run_dir=str(tmp_path), variant="none")
    recorder = RunRecorder(state)
    recorder.set_model(model)
    recorder.set_params({"epochs": 1})
    recorder.on_epoch_begin(0)
    recorder.on_epoch_end(0, {"loss": 3.954364968445213e29, "accuracy": 0.1,
                              "val_loss": 2.0, "val_accuracy": 0.0985})
    line = capsys.readouterr().out.strip()
    assert line.startswith("[none] epoch   1/1  loss 3.954e+29  acc 0.1000  val_loss 2.0000"
                           "  val_acc 0.0985  ")
