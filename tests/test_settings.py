"""train/options/settings.py: the one place of the defaults, the range checks and args.json."""

import math

import pytest

from train import explain
from train.options import cli, settings


def test_the_flags_defaults_are_the_settings_defaults():
    """Guards the one source: a default written into a flag of its own would differ here."""
    defaults = vars(cli.make_parser("", experiment="train").parse_args([]))
    assert {name: defaults[name] for name in settings.DEFAULTS} == settings.DEFAULTS
    lesson = explain.make_parser().parse_args([])
    assert (lesson.epsilon, lesson.momentum) == (settings.DEFAULTS["bn_epsilon"],
                                                 settings.DEFAULTS["bn_momentum"])


@pytest.mark.parametrize("name, value, flag, message", [
    ("bn_momentum", 1.5, None, "--bn-momentum must be in [0, 1], got 1.5"),
    ("bn_momentum", math.nan, "--momentum", "--momentum must be in [0, 1], got nan"),
    ("bn_epsilon", 0.0, "--epsilon", "--epsilon must be > 0, got 0.0"),
    ("bn_epsilon", math.inf, None, "--bn-epsilon must be > 0, got inf"),
    ("lr", -3.0, None, "--lr must be > 0, got -3.0"),
    ("validation_split", 1.0, None, "--validation-split must be in (0, 1), got 1.0"),
    ("train_samples", 0, None, "--train-samples must be >= 1, got 0"),
    ("dropout", 1.0, None, "--dropout must be in [0, 1), got 1.0"),
    ("dropout", -0.1, None, "--dropout must be in [0, 1), got -0.1"),
    ("init_scale", 0.0, None, "--init-scale must be > 0, got 0.0"),
    ("init_scale", math.nan, None, "--init-scale must be > 0, got nan"),
])
def test_a_value_out_of_range_is_one_line_naming_the_flag(name, value, flag, message):
    with pytest.raises(settings.UsageError) as error:
        settings.check_value(name, value, flag)
    assert str(error.value) == message


def test_the_ends_of_a_range_that_belong_to_it_pass():
    for name, value in (("bn_momentum", 0.0), ("bn_momentum", 1.0), ("target_accuracy", 1.0),
                        ("momentum", 0.0), ("batch_size", 1), ("train_samples", None),
                        ("train_samples", 1), ("dropout", 0.0)):
        assert settings.check_value(name, value) == value


def test_args_json_round_trip_leaves_out_what_is_not_a_setting(tmp_path):
    parser = cli.make_parser("", experiment="train", resume_flag=True)
    args = cli.parse(parser, ["--hidden", "8,4", "--logdir", str(tmp_path)])
    saved = settings.to_args_json(args, variant="kbn", backend="jax")
    assert not set(settings.NOT_SAVED) & set(saved)
    assert saved["variant"] == "kbn" and saved["backend"] == "jax" and saved["hidden"] == "8,4"
    back = settings.from_args_json(saved)
    assert back.hidden_widths == (8, 4) and back.bn_momentum == args.bn_momentum


def test_a_run_saved_before_a_setting_existed_gets_what_it_did():
    old = {"hidden": "100,100,100", "lr": 0.5}  # no backend, strategy, bn_sync …
    back = settings.from_args_json(old)
    assert back.lr == 0.5
    assert (back.backend, back.strategy, back.bn_sync, back.replicas) == (
        "tensorflow", "default", False, 1)
    assert settings.from_args_json({**old, "backend": "jax"}).backend == "jax"
    assert (back.train_samples, back.dropout, back.init_scale) == (None, 0.0, 1.0)
    assert back.jit_compile == "auto"  # Keras's default, which every earlier run compiled with
