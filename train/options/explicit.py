"""The flags a command line gives explicitly, and what `train.train --resume RUN` takes.

    from train.options import explicit
    explicit.given(parser, argv)                # ["resume", "epochs"]: set on the command line
    explicit.check_resume(parser, argv)         # UsageError: one line
    epochs = explicit.resume_epochs(parser, argv, args, settings, epochs_done)

A flag's value alone cannot say whether it was typed (`--lr 1` is the
default), so `given` asks argparse. A resumed run keeps its own settings
(args.json), so that it ends as the uninterrupted run would. `--epochs N`
sets a new total: the run continues from its last finished epoch to epoch
N. `--backend` must be the run's (train/options/cli.py says so). Any other
flag would be silently ignored, so it is refused, before anything is read
or written.
"""

import argparse

from train.options.settings import CLUSTER_FLAGS, UsageError
from train.reports.numbers import plural

# Destinations that --resume takes: itself, the new total, the run's own backend, the
# time stamp train/distribution/workers.py adds for the worker processes it starts, and
# where this process sits in a JAX cluster (given again on a resume, like TF_CONFIG).
TAKEN = ("resume", "epochs", "backend", "stamp", *CLUSTER_FLAGS)


def given(parser, argv):
    """The destinations of the flags `argv` sets, whatever their value (a default included).

    Every destination starts out as a marker that argparse leaves alone (it
    only fills in defaults that are missing); a flag on the command line
    replaces it.
    """
    unset = object()
    destinations = vars(parser.parse_args(argv))
    namespace = argparse.Namespace(**dict.fromkeys(destinations, unset))
    return [dest for dest, value in vars(parser.parse_args(argv, namespace)).items()
            if value is not unset]


def check_resume(parser, argv):
    """Raises UsageError naming every flag besides --epochs and --backend given with --resume."""
    refused = [f"--{dest.replace('_', '-')}" for dest in given(parser, argv) if dest not in TAKEN]
    if refused:
        raise UsageError(
            f"{', '.join(refused)} with --resume: a resumed run keeps the settings in its"
            " args.json (only --epochs N, a new total, can change); start a new run for others"
        )


def resume_epochs(parser, argv, args, settings, epochs_done):
    """The resumed run's total epochs: `--epochs` if given, else the run's own.

    Raises:
        UsageError: --epochs is below 1 or below the epochs the run has finished.
    """
    if "epochs" not in given(parser, argv):
        return settings.epochs
    if args.epochs < max(epochs_done, 1):
        raise UsageError(
            f"--epochs {args.epochs}: {args.resume} has finished {plural(epochs_done, 'epoch')};"
            " --resume continues a run to a total of at least that"
        )
    return args.epochs
