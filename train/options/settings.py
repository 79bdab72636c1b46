"""A run's settings: every default, every range check, and what args.json holds.

    from train.options import settings
    settings.DEFAULTS["bn_momentum"]                  # 0.99, the --bn-momentum default
    settings.check_value("bn_epsilon", 0.0, "--epsilon")
    #   UsageError: --epsilon must be > 0, got 0.0
    settings.check(args)                              # every range; fills in args.hidden_widths
    saved = settings.to_args_json(args, variant="kbn")     # what args.json holds
    args = settings.from_args_json(saved)                 # back, with defaults for older runs

`train/options/cli.py` builds its flags from `DEFAULTS` and checks them here;
`train.explain` checks its BN ε and momentum here too. No Keras import: flags
are checked before the backend is chosen.
"""

import argparse
import math

# The flags' defaults (cli.py; --experiment's is the command's name; a flag whose
# default is None, or off for a switch, is not listed).
DEFAULTS = {
    "dataset": "digits",
    "input_norm": "auto",
    "validation_split": 0.2,
    "model": "mlp",
    "hidden": "100,100,100",
    "activation": "sigmoid",
    "dropout": 0.0,  # off: no Dropout layer at all
    "init_scale": 1.0,  # the kernel initializer's own draws
    "bn": "kbn",
    "bn_position": "before",
    "bn_momentum": 0.99,  # keras.layers.BatchNormalization's and kbn's
    "bn_epsilon": 1e-3,
    "optimizer": "sgd",
    "lr": 1.0,
    "momentum": 0.0,
    "batch_size": 60,
    "epochs": 60,
    "seed": 1,
    "target_accuracy": 0.95,
    "jit_compile": "auto",  # Keras's own choice (model.compile's default)
    "strategy": "default",
    "logdir": "logs",
    "shift_every": 20,
    "batch_log_every": 10,
}

# --jit-compile's choices → model.compile's jit_compile.
JIT_COMPILE = {"auto": "auto", "on": True, "off": False}

# Settings that runs saved before the setting existed lack, and what those runs
# did: the default, but every run was on TensorFlow before --backend, and
# without a strategy BN was not synchronized and there was one replica.
EARLIER_RUNS = {
    "strategy": DEFAULTS["strategy"],
    "devices": None,
    "workers": None,
    "drop_remainder": False,
    "backend": "tensorflow",
    "bn_sync": False,
    "replicas": 1,
    "train_samples": None,
    "dropout": DEFAULTS["dropout"],
    "init_scale": DEFAULTS["init_scale"],
    "jit_compile": DEFAULTS["jit_compile"],
}

# Where this process sits in a JAX cluster: given again on a resume, like TF_CONFIG.
CLUSTER_FLAGS = ("coordinator", "num_processes", "process_id", "join_timeout")
# Command-line values that are not settings of the run: args.json leaves them out.
NOT_SAVED = ("hidden_widths", "stamp", "resume", *CLUSTER_FLAGS)

# Each numeric setting's range: (test, the range in words for the one-line error).
RANGES = {
    "lr": (lambda value: 0 < value < math.inf, "> 0"),
    "batch_size": (lambda value: value >= 1, ">= 1"),
    "epochs": (lambda value: value >= 1, ">= 1"),
    "momentum": (lambda value: 0 <= value <= 1, "in [0, 1]"),  # Keras's SGD refuses more
    "bn_momentum": (lambda value: 0 <= value <= 1, "in [0, 1]"),
    "bn_epsilon": (lambda value: 0 < value < math.inf, "> 0"),
    "target_accuracy": (lambda value: 0 < value <= 1, "in (0, 1]"),
    "validation_split": (lambda value: 0 < value < 1, "in (0, 1)"),
    # None: the whole training split; its upper end, the split's size, is checked on loading.
    "train_samples": (lambda value: value is None or value >= 1, ">= 1"),
    "dropout": (lambda value: 0 <= value < 1, "in [0, 1)"),
    "init_scale": (lambda value: 0 < value < math.inf, "> 0"),
    "shift_every": (lambda value: value >= 1, ">= 1"),
    "batch_log_every": (lambda value: value >= 1, ">= 1"),
}


class UsageError(Exception):
    """A bad flag value or unusable path; the message is one line for the user."""


def check_value(name, value, flag=None):
    """Returns `value` if it is in the range of setting `name` (NaN never is).

    Raises:
        UsageError: "<flag> must be <range>, got <value>"; `flag` defaults to `--<name>`.
    """
    test, words = RANGES[name]
    if not test(value):
        raise UsageError(f"{flag or _flag(name)} must be {words}, got {value}")
    return value


def check(args):
    """Checks every setting that has a range; fills in `args.hidden_widths`.

    Raises:
        UsageError: the first bad value (one line).
    """
    try:
        args.hidden_widths = hidden_widths(args.hidden)
    except ValueError:
        raise UsageError(f"--hidden {args.hidden!r}: expected widths like 100,100,100") from None
    if not all(width > 0 for width in args.hidden_widths):
        raise UsageError(f"--hidden {args.hidden!r}: widths must be > 0")
    for name in RANGES:
        check_value(name, getattr(args, name))


def hidden_widths(text):
    """'100,100,100' → (100, 100, 100); raises ValueError if one is not an integer."""
    return tuple(int(width) for width in text.split(","))


def to_args_json(args, **facts):
    """What args.json holds: every setting of `args`, then `facts` the run adds
    (its variant, the dataset's name, the backend it trains on)."""
    saved = {key: value for key, value in vars(args).items() if key not in NOT_SAVED}
    saved.update(facts)
    return saved


def from_args_json(saved):
    """A run's settings from its args.json, with `EARLIER_RUNS` where it predates one.

    Raises:
        KeyError, ValueError, AttributeError: no usable `hidden` in `saved`.
    """
    settings = argparse.Namespace(**{**EARLIER_RUNS, **saved})
    settings.hidden_widths = hidden_widths(settings.hidden)
    return settings


def _flag(name):
    return "--" + name.replace("_", "-")
