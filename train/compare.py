"""Trains the same network with no BN, Keras's BN and kbn's BN, and compares them.

    python -m train.compare                     # the `make run` job: digits, 3x100 sigmoid, SGD
    python -m train.compare --lr 0.3 --epochs 40
    python -m train.compare --dataset placement --hidden 16,16 --epochs 30
    python -m train.compare --input-norm standard   # normalized inputs: the plain net catches up

All three variants start from the same initial weights (same seed) and see the
same batches in the same order. Prints a table, checks that the Keras and kbn
curves agree within 1e-3, and writes a PNG next to the run folders in
<logdir>/<experiment>/; `make tensorboard` shows everything.
"""

import os
import sys

from train import cli, disagreement, plots, report, runs
from train.datasets import DatasetError
from train.train import load_data

VARIANTS = ("none", "keras", "kbn")


def main(argv=None):
    parser = cli.make_parser(__doc__, experiment="compare", bn_flag=False)
    args = cli.parse(parser, argv)
    try:
        data = load_data(args)
    except DatasetError as error:
        cli.fail(parser.prog, error)

    stamp = runs.timestamp()
    run_name = args.run_name or data.name
    results = []
    for variant in VARIANTS:
        run_dir = runs.make_run_dir(args.logdir, args.experiment, f"{run_name}-{variant}", stamp)
        print(f"--- {variant}: {run_dir}", flush=True)
        results.append(runs.train_variant(args, data, variant, run_dir))
        if results[-1].summary["stopped_early"] == "interrupted":
            break

    experiment_dir = os.path.join(args.logdir, args.experiment)
    plot_path = os.path.join(experiment_dir, f"{stamp}-{run_name}.png")
    plots.plot_comparison(results, plot_path, args.target_accuracy)
    plots.log_image_to_runs(plot_path, [result.run_dir for result in results])

    print()
    print(report.setup_line(args, data))
    print(report.comparison_table(results, args.target_accuracy))
    status = 0
    if len(results) == len(VARIANTS):
        agree, difference = report.curves_agree(results[1].rows, results[2].rows)
        verdict = "agree" if agree else "DISAGREE"
        diverged = all(result.summary["stopped_early"] == "nan" for result in results[1:])
        print(
            f"keras vs kbn: curves {verdict} (max |difference| {difference:.1e} over"
            f" {len(results[1].rows)} epochs of loss, accuracy, val_loss, val_accuracy;"
            f" tolerance {report.AGREEMENT_TOLERANCE:g})"
            + ("; both diverged (NaN loss)" if diverged else "")
        )
        if not agree:
            print("\n".join(disagreement.reasons(results[1].summary, results[2].summary)))
        status = 0 if agree else 1
    else:
        status = 130
        print("interrupted: the table shows the runs so far")
    print(f"plot: {plot_path}")
    print(report.where_lines(experiment_dir, stamp, run_name))
    return status


if __name__ == "__main__":
    sys.exit(main())
