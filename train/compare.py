"""Trains the same network with no BN, Keras's BN and kbn's BN, and compares them.

    python -m train.compare                     # the `make run` job: digits, 3x100 sigmoid, SGD
    python -m train.compare --lr 0.3 --epochs 40
    python -m train.compare --dataset placement --hidden 16,16 --epochs 30
    python -m train.compare --input-norm standard   # normalized inputs: the plain net catches up
    python -m train.compare --strategy multi-worker --workers 2   # on 2 local worker processes

All three variants start from the same initial weights (same seed) and see the
same batches in the same order. Prints a table, checks that the Keras and kbn
curves agree within 1e-3, and writes a PNG next to the run folders in
<logdir>/<experiment>/; `make tensorboard` shows everything.
"""

import os
import sys

from train.options import cli
from train.reports import disagreement, plots, report
from train.reports.numbers import plural
from train.distribution import distributed, workers
from train.run import run_folder
from train.data.datasets import DatasetError, load_data
from train.data.variants import COMPARED as VARIANTS


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = cli.make_parser(__doc__, experiment="compare", bn_flag=False)
    args = cli.parse(parser, argv)
    try:
        data = load_data(args)
    except DatasetError as error:
        cli.fail(parser.prog, error)
    if distributed.needs_local_workers(args):
        return workers.launch("train.compare", args, argv, parser.prog)
    from train.run import series  # imports Keras: after the backend is chosen

    distribution = cli.start_distribution(parser.prog, args)

    stamp = args.stamp or run_folder.timestamp()
    run_name = args.run_name or run_folder.run_name(data.name, args.model)
    plans = [series.Plan(variant, f"{run_name}-{variant}", variant, args, data)
             for variant in VARIANTS]
    results = {done.plan.variant: done.result
               for done in series.train_in_turn(plans, distribution, stamp)}
    if not distribution.is_chief:
        return distributed.leave(distribution, _status(results), _lost_peer(results))

    experiment_dir = os.path.join(args.logdir, args.experiment)
    plot_path = os.path.join(experiment_dir, f"{stamp}-{run_name}.png")
    plots.plot_comparison(results, plot_path, args.target_accuracy)
    plots.log_image_to_runs(plot_path, [result.run_dir for result in results.values()])

    print()
    print(report.setup_line(args, data))
    print(report.comparison_table(results, args.target_accuracy))
    if len(results) == len(VARIANTS):
        keras_rows, kbn_rows = results["keras"].rows, results["kbn"].rows
        agree, difference = report.curves_agree(keras_rows, kbn_rows)
        verdict = "agree" if agree else "DISAGREE"
        diverged = all(results[v].summary["stopped_early"] == "nan" for v in ("keras", "kbn"))
        print(
            f"keras vs kbn: curves {verdict} (max |difference| {difference:.1e} over"
            f" {plural(len(keras_rows), 'epoch')} of loss, accuracy, val_loss, val_accuracy;"
            f" tolerance {report.AGREEMENT_TOLERANCE:g})"
            + ("; both diverged (NaN loss)" if diverged else "")
        )
        if not agree:
            print("\n".join(disagreement.reasons(results["keras"].summary,
                                                 results["kbn"].summary)))
    else:
        print("interrupted: the table shows the runs so far")
    print(f"plot: {plot_path}")
    print(report.where_lines(experiment_dir, stamp, run_name))
    return distributed.leave(distribution, _status(results), _lost_peer(results))


def _lost_peer(results):
    return any(result.lost_worker for result in results.values())


def _status(results):
    """0, 1 if the keras and kbn curves disagree, or the interrupted run's 130/143."""
    if len(results) < len(VARIANTS):
        return list(results.values())[-1].exit_status
    return 0 if report.curves_agree(results["keras"].rows, results["kbn"].rows)[0] else 1


if __name__ == "__main__":
    cli.run_script(main, "python -m train.compare")
