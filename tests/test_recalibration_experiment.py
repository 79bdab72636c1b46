"""python -m train.recalibration on tiny settings: its table, and that recalibration is
measured on the side (training goes on from the moving averages it kept)."""


from train import recalibration
from train.data.datasets import load_dataset


def test_table(capsys):
    assert recalibration.main(["--steps", "3,6", "--seeds", "1", "--bn-momentums", "0.9"]) == 0
    output = capsys.readouterr().out
    lines = output[output.index("BN momentum"):].splitlines()
    assert lines[0].split() == ["BN", "momentum", "steps", "moving", "averages", "recalibrated"]
    assert [line.split()[:2] for line in lines[2:4]] == [["0.9", "3"], ["0.9", "6"]]


def test_recalibration_does_not_change_the_training_that_follows():
    """Validation loss with the moving averages after 5 steps is the same whether or not
    the statistics were recalibrated (and put back) after step 4."""
    data = load_dataset("digits", seed=1, input_norm="unit")
    args_longer = recalibration.parse_args(["--steps", "4,5", "--seeds", "1",
                                            "--bn-momentums", "0.9"])
    args_plain = recalibration.parse_args(["--steps", "5", "--seeds", "1",
                                           "--bn-momentums", "0.9"])
    with_side_trip = recalibration.one_run(data, args_longer, 0.9, 1)[5][3]
    without = recalibration.one_run(data, args_plain, 0.9, 1)[5][3]
    assert with_side_trip == without
