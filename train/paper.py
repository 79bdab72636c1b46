"""Reruns the paper's claims on the offline digits and writes a report: `make paper`.

    python -m train.paper                 # 10 experiments, 3 seeds (≤ 20 min on 2 cores)
    python -m train.paper --quick         # 1 seed, fewer epochs (≤ 3 min): a smoke run
    python -m train.paper --only E1,E4 --seeds 1,2

The experiments (train/claims/experiments.py) are data: rows of `train.compare`
flags, the number read from each run, and the comparisons that make the
claim. Every run is an ordinary run folder under
logs/paper/<YYYYmmdd-HHMMSS>/<experiment>/ (see train/run/runs.py), so
`tensorboard --logdir logs/paper` shows them all. The report,
logs/paper/<YYYYmmdd-HHMMSS>/report.md, gives per experiment the claim, what
was measured here (every seed, mean and range), a verdict and a PNG. The
terminal gets one line per run with an estimate of the time left; the runs'
own epoch lines go to runs.log in the report folder.
"""

import argparse
import math
import os
import sys
import time

from train.options import backend, cli
from train.options.settings import DEFAULTS
from train.claims import paper_report
from train.reports.numbers import plural
from train.run import run_folder
from train.data.datasets import DatasetError, load_data
from train.claims.experiments import EXPERIMENTS

FULL_SEEDS = "1,2,3"
QUICK_SEEDS = "1"
TRAINING_SAMPLES = 1437  # digits with the default 0.2 validation split, for time estimates
# A run's fixed cost (building, tracing, the end-of-run checks) in training steps.
# In a --quick run on the loaded 2-core machine a 2-epoch run (48 steps) took
# 3–4 s and a 15-epoch one (360 steps) 7–12 s: ~20 ms a step, ~2.5 s fixed.
FIXED_COST_STEPS = 120
# The settings `train.data.datasets.load_data` reads: runs that agree on them share one dataset.
DATA_SETTINGS = ("dataset", "data", "label_column", "input_norm", "validation_split", "seed",
                 "model", "train_samples")


class Job:
    """One training run: a row of an experiment at one seed (shared by identical rows)."""

    def __init__(self, experiment, row, seed, epochs):
        self.experiment = experiment
        self.row = row
        self.seed = seed
        self.epochs = epochs
        self.flags = (*experiment.flags, *row.flags)
        self.result = None
        self.error = None

    @property
    def identity(self):
        return (self.row.variant, self.flags, self.epochs, self.seed, self.experiment.monitor)

    def flag(self, name, default):
        """The integer value of flag `name` in this job's flags (the last, as for argparse)."""
        flags = list(self.flags)
        if name not in flags:
            return default
        return int(flags[len(flags) - 1 - flags[::-1].index(name) + 1])

    @property
    def batch_size(self):
        return self.flag("--batch-size", DEFAULTS["batch_size"])

    @property
    def cost(self):
        """Estimated cost in training steps."""
        samples = self.flag("--train-samples", TRAINING_SAMPLES)
        return self.epochs * math.ceil(samples / self.batch_size) + FIXED_COST_STEPS


def make_parser():
    parser = cli.OneLineParser(
        prog="python -m train.paper",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one seed, fewer epochs (≤ 3 min)")
    parser.add_argument(
        "--only",
        metavar="E1,E2,...",
        help="run only these experiments (default: all of "
        + ",".join(experiment.key for experiment in EXPERIMENTS)
        + ")",
    )
    parser.add_argument(
        "--seeds",
        metavar="S,S,...",
        help=f"seeds of every row (default: {FULL_SEEDS}; with --quick {QUICK_SEEDS})",
    )
    parser.add_argument("--logdir", default="logs", help="root of all runs (default: %(default)s)")
    cli.add_backend_flag(parser)
    return parser


def parse(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        args.experiments = _select(args.only)
        default_seeds = QUICK_SEEDS if args.quick else FULL_SEEDS
        args.seed_values = _seeds(default_seeds if args.seeds is None else args.seeds)
        args.backend = args.backend or backend.default()
        backend.check(args.backend)
        cli.check_logdir(os.path.join(args.logdir, "paper"))
        cli.resolve_backend(args)
    except (cli.UsageError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return args


def _select(only):
    if only is None:
        return EXPERIMENTS
    by_key = {experiment.key: experiment for experiment in EXPERIMENTS}
    keys = [key.strip().upper() for key in only.split(",") if key.strip()]
    unknown = [key for key in keys if key not in by_key]
    if unknown or not keys:
        raise cli.UsageError(
            f"--only {only!r}: unknown {', '.join(unknown) or 'empty list'};"
            f" choose from {', '.join(by_key)}"
        )
    return tuple(by_key[key] for key in by_key if key in keys)


def _seeds(text):
    try:
        seeds = tuple(int(seed) for seed in text.split(","))
    except ValueError:
        raise cli.UsageError(f"--seeds {text!r}: expected integers like 1,2,3") from None
    if len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise cli.UsageError(f"--seeds {text!r}: seeds must be distinct and >= 0")
    for seed in seeds:
        cli.check_seed(seed, "--seeds")
    return seeds


def plan(experiments, seeds, quick):
    """Jobs per (experiment key, row label, seed); identical rows share one `Job`.

    Returns:
        (jobs in run order, {(key, label, seed): Job}, {key: reason} for skipped experiments)
    """
    unique, by_cell, skipped = {}, {}, {}
    for experiment in experiments:
        reason = experiment.requires() if experiment.requires else None
        if reason:
            skipped[experiment.key] = reason
            continue
        for row in experiment.rows:
            full, short = row.epochs or experiment.epochs
            if quick and short == 0:
                continue
            for seed in seeds:
                job = Job(experiment, row, seed, short if quick else full)
                job = unique.setdefault(job.identity, job)
                by_cell[(experiment.key, row.label, seed)] = job
    return list(unique.values()), by_cell, skipped


def run_jobs(jobs, report_dir, log, backend):
    """Trains every job; one progress line each. Returns False if interrupted (Ctrl-C)."""
    from train.run import series  # imports Keras: after the backend is chosen

    total = sum(job.cost for job in jobs)
    done_cost = 0
    start = time.perf_counter()
    plans = _plans(jobs, report_dir, backend)
    for number, done in enumerate(series.train_in_turn(plans, log=log, keep_going=True), start=1):
        job, label = done.plan.tag, done.plan.heading
        job.result = done.result
        if done.error is not None:  # one failed run must not lose the others
            job.error = f"{type(done.error).__name__}: {_reason(done.error)}"
            print(f"{label} failed: {job.error}", file=log, flush=True)
        done_cost += job.cost
        elapsed = time.perf_counter() - start
        left = elapsed / done_cost * (total - done_cost)
        if job.result is None:
            outcome = f"FAILED ({job.error[:160]}; see runs.log)"
        else:
            summary = job.result.summary
            outcome = (
                f"{plural(summary['epochs_run'], 'epoch')},"
                f" to 0.95: {summary['epochs_to_target'] or 'never'},"
                f" final val acc {paper_report.number(summary['final_val_accuracy'], 3)}"
            )
        print(
            f"[{number:2d}/{len(jobs)}] {label}: {outcome} ({done.seconds:.0f} s);"
            f" elapsed {_clock(elapsed)}, about {_clock(left)} left",
            flush=True,
        )
        if done.interrupted:
            return False
    return True


def _plans(jobs, report_dir, backend):
    """A `series.Plan` per job, each built when its turn comes; runs with the same data share it."""
    from train.run import series

    parser = cli.make_parser("", experiment="paper", bn_flag=False)
    datasets = {}
    for job in jobs:
        settings = cli.parse(
            parser,
            [
                *job.flags,
                "--epochs", str(job.epochs),
                "--seed", str(job.seed),
                "--logdir", report_dir,
                "--experiment", job.experiment.key,
                "--backend", backend,
            ],
        )
        data_key = tuple(getattr(settings, name) for name in DATA_SETTINGS)
        if data_key not in datasets:
            datasets[data_key] = load_data(settings)
        yield series.Plan(
            f"{job.experiment.key} {job.row.label}, seed {job.seed}",
            run_folder.run_name(_slug(job.row.label), settings.model, f"seed{job.seed}"),
            job.row.variant,
            settings,
            datasets[data_key],
            tag=job,
            monitor_layers="last" if job.experiment.monitor else None,
        )


def make_report_dir(logdir):
    """logs/paper/<YYYYmmdd-HHMMSS>/, never an existing folder (a clash gets -2, -3 …)."""
    return run_folder.make_new_folder(os.path.join(logdir, "paper", run_folder.timestamp()))


def _reason(error):
    """One line of an exception: TensorFlow's run-time assertion if there is one, else the first."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or ["(no message)"]
    return next((line for line in lines if line.startswith("assertion failed")), lines[0])


def _slug(text):
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").replace("--", "-")


def _clock(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}"


def main(argv=None):
    args = parse(argv)
    jobs, by_cell, skipped = plan(args.experiments, args.seed_values, args.quick)
    report_dir = make_report_dir(args.logdir)
    command = "python -m train.paper " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{plural(len(jobs), 'run')} for"
          f" {plural(len(args.experiments) - len(skipped), 'experiment')},"
          f" seeds {','.join(map(str, args.seed_values))}; report folder {report_dir}", flush=True)
    for key, reason in skipped.items():
        print(f"{key} skipped: {reason}", flush=True)
    start = time.perf_counter()
    try:
        with open(os.path.join(report_dir, "runs.log"), "w") as log:
            finished = run_jobs(jobs, report_dir, log, args.backend)
    except KeyboardInterrupt:  # outside a fit (runs.py handles Ctrl-C inside one)
        finished = False
    except DatasetError as error:
        cli.fail("python -m train.paper", error, status=1)
    wall = time.perf_counter() - start
    path, table = paper_report.write(
        report_dir,
        args.experiments,
        args.seed_values,
        by_cell,
        skipped,
        command=command.strip(),
        wall_seconds=wall,
        finished=finished,
    )
    print()
    print(table)
    print(f"\nreport: {path}  ({_clock(wall)} for {plural(len(jobs), 'run')})")
    print(f"look: tensorboard --logdir {os.path.join(args.logdir, 'paper')} --host 127.0.0.1")
    return 0 if finished else 130


if __name__ == "__main__":
    sys.exit(main())
