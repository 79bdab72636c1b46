"""Trains every variant over a range of learning rates: where does the plain net fail?

    python -m train.lr_sweep                                  # digits, lr 0.05 … 20, 60 epochs
    python -m train.lr_sweep --lrs 0.1,1,10 --variants none,kbn --epochs 30

Takes every flag of `train.compare`, with --lrs in place of --lr (refused here). Prints one row
per learning rate (epochs to the target accuracy, best validation accuracy in
brackets; "never" if not reached, "NaN" if the loss blew up) and writes a PNG
next to the run folders in <logdir>/<experiment>/.
"""

import argparse
import os
import sys

from train.options import cli, explicit
from train.distribution import distributed, workers
from train.reports import plots, report
from train.run import run_folder
from train.data.datasets import DatasetError, load_data
from train.data.variants import COMPARED, NAMES

DEFAULT_LRS = "0.05,0.1,0.3,1,3,10,20"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = cli.make_parser(__doc__, experiment="lr_sweep", bn_flag=False)
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument(
        "--lrs",
        default=DEFAULT_LRS,
        metavar="LR,LR,...",
        help="learning rates (default: %(default)s)",
    )
    sweep.add_argument(
        "--variants",
        default=",".join(COMPARED),
        metavar="V,V,...",
        help="BN variants to train at each rate (default: %(default)s)",
    )
    args = cli.parse(parser, argv, also=lambda args: check_sweep(parser, argv, args))
    rates, variants = args.rates, args.variant_names
    try:
        data = load_data(args)
    except DatasetError as error:
        cli.fail(parser.prog, error)
    if distributed.needs_local_workers(args):
        return workers.launch("train.lr_sweep", args, argv, parser.prog)
    from train.run import series  # imports Keras: after the backend is chosen

    distribution = cli.start_distribution(parser.prog, args)

    stamp = args.stamp or run_folder.timestamp()
    run_name = args.run_name or run_folder.run_name(data.name, args.model)
    plans = [
        series.Plan(f"lr {lr:g}, {variant}", f"{run_name}-lr{lr:g}-{variant}", variant,
                    argparse.Namespace(**{**vars(args), "lr": lr}), data, tag=lr)
        for lr in rates
        for variant in variants
    ]
    results_by_lr = {}
    interrupted = None
    for done in series.train_in_turn(plans, distribution, stamp):
        results_by_lr.setdefault(done.plan.tag, {})[done.plan.variant] = done.result
        if done.interrupted:
            interrupted = done.result
            del results_by_lr[done.plan.tag]  # an incomplete row would misalign the table
    status = interrupted.exit_status if interrupted else 0
    lost_peer = bool(interrupted and interrupted.lost_worker)
    if not distribution.is_chief:
        return distributed.leave(distribution, status, lost_peer)

    experiment_dir = os.path.join(args.logdir, args.experiment)
    print()
    print(report.setup_line(args, data, with_lr=False))
    if results_by_lr:
        plot_path = os.path.join(experiment_dir, f"{stamp}-{run_name}.png")
        plots.plot_sweep(results_by_lr, variants, plot_path, args.target_accuracy)
        run_dirs = [
            result.run_dir for results in results_by_lr.values() for result in results.values()
        ]
        plots.log_image_to_runs(plot_path, run_dirs, tag="lr_sweep_plot")
        print(report.sweep_table(results_by_lr, variants, args.target_accuracy))
        print(f"plot: {plot_path}")
    print(report.where_lines(experiment_dir, stamp, run_name))
    return distributed.leave(distribution, status, lost_peer)


def check_sweep(parser, argv, args):
    """Fills in `args.rates` and `args.variant_names`; raises UsageError for a bad --lrs,
    --variants, or an --lr (which the sweep would override)."""
    if "lr" in explicit.given(parser, argv):
        raise cli.UsageError(f"--lr {args.lr:g}: lr_sweep trains at each of --lrs; use --lrs")
    args.rates = cli.parse_floats(args.lrs, "--lrs")
    args.variant_names = tuple(args.variants.split(","))
    unknown = [variant for variant in args.variant_names if variant not in NAMES]
    if unknown:
        raise cli.UsageError(f"--variants {args.variants!r}: unknown"
                             f" {', '.join(map(repr, unknown))}; use {', '.join(NAMES)}")


if __name__ == "__main__":
    cli.run_script(main, "python -m train.lr_sweep")
