"""Runs trained one after another: the loop of compare, lr_sweep and paper.

    from train.run import series
    plans = [series.Plan(variant, f"digits-{variant}", variant, args, data) for variant in COMPARED]
    for done in series.train_in_turn(plans, distribution, stamp):
        results[done.plan.variant] = done.result

Each plan gets a new run folder `<settings.logdir>/<settings.experiment>/<stamp>-<run_name>/`
(on the chief; other workers write nothing) and the line `--- <heading>: <run folder>`;
the series ends after the run that Ctrl-C or SIGTERM interrupted.
"""

import argparse
import contextlib
import time
import typing

from train.data.datasets import Dataset
from train.distribution import distributed
from train.run import run_folder, runs


class Plan(typing.NamedTuple):
    """One run of a series.

    Attributes:
        heading: What its `---` line calls it ("kbn", "lr 0.3, kbn").
        run_name: Its run folder's name after the time stamp.
        variant: The `train.data.variants` name it trains.
        settings: Its settings (the flags); `logdir` and `experiment` place its folder.
        data: The dataset it trains on.
        tag: What the caller knows it by (a learning rate, a job), handed back as given.
        monitor_layers: "last", "all" or None: which activation inputs to log.
    """

    heading: str
    run_name: str
    variant: str
    settings: argparse.Namespace
    data: Dataset
    tag: object = None
    monitor_layers: typing.Optional[str] = "last"


class Done(typing.NamedTuple):
    """A run of the series as it ended: its `RunResult`, or the error it raised."""

    plan: Plan
    result: typing.Optional[runs.RunResult]
    error: typing.Optional[Exception]
    seconds: float

    @property
    def interrupted(self):
        return self.result is not None and self.result.summary["stopped_early"] == "interrupted"


def train_in_turn(plans, distribution=None, stamp=None, *, log=None, keep_going=False):
    """Trains every plan in order; yields a `Done` each, and stops after an interrupted one.

    Args:
        plans: `Plan`s, any iterable (a generator builds each when its turn comes).
        distribution: The started strategy (default: one process, one device).
        stamp: The run folders' time stamp (default: the time each one starts).
        log: A file for the `---` lines and the runs' own output (default: stdout).
        keep_going: Hand an exception of one run back in `Done.error` and go on
            with the next, instead of raising it.
    """
    distribution = distribution or distributed.default()
    for plan in plans:
        began = time.perf_counter()
        result = error = None
        with contextlib.redirect_stdout(log) if log else contextlib.nullcontext():
            run_dir = None  # workers other than the chief write nothing
            if distribution.is_chief:
                settings = plan.settings
                run_dir = run_folder.make_run_dir(settings.logdir, settings.experiment,
                                                  plan.run_name, stamp)
                print(f"--- {plan.heading}: {run_dir}", flush=True)
            try:
                result = runs.train_variant(plan.settings, plan.data, plan.variant, run_dir,
                                            monitor_layers=plan.monitor_layers,
                                            distribution=distribution)
            except Exception as raised:
                if not keep_going:
                    raise
                error = raised
        done = Done(plan, result, error, time.perf_counter() - began)
        yield done
        if done.interrupted:
            return
