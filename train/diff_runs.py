"""How far apart two finished runs are: per-epoch metrics and final weights.

    python -m train.diff_runs logs/train/<one process> logs/train/<2 workers>

Prints, for each metric of metrics.csv (loss, accuracy, val_loss,
val_accuracy), the largest relative difference over the epochs both runs
have, |a − b| / |a|, and for the checkpoints the largest absolute difference
over every weight (BN's moving statistics included) and, relative to each
weight tensor's scale, max |a − b| / max |a|.
A synchronized distributed run and the single-process run with the same seed
differ only by the order of float32 sums (docs/distributed.md).
"""

import argparse
import csv
import os
import sys

import numpy as np

from train.options import cli

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def differences(run_a, run_b):
    """{"<metric>": max relative difference, "weights_abs": …, "weights_rel": …, "epochs": n}."""
    import keras

    import kbn  # noqa: F401  (registers kbn's layer for load_model)

    rows_a, rows_b = _rows(run_a), _rows(run_b)
    epochs = min(len(rows_a), len(rows_b))
    result = {"epochs": epochs}
    for key in METRICS:
        a = np.array([float(row[key]) for row in rows_a[:epochs]])
        b = np.array([float(row[key]) for row in rows_b[:epochs]])
        result[key] = float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12)))
    weights = [
        keras.saving.load_model(os.path.join(run, "checkpoint.keras")).get_weights()
        for run in (run_a, run_b)
    ]
    result["weights_abs"] = max(float(np.max(np.abs(a - b))) for a, b in zip(*weights))
    result["weights_rel"] = max(
        float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12)) for a, b in zip(*weights)
    )
    return result


def main(argv=None):
    parser = cli.OneLineParser(prog="python -m train.diff_runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    cli.add_backend_flag(parser)
    args = parser.parse_args(argv)
    for run in (args.run_a, args.run_b):
        if not os.path.isfile(os.path.join(run, "checkpoint.keras")):
            cli.fail(parser.prog, f"{run}: not a finished run folder (no checkpoint.keras)")
    try:
        cli.resolve_backend(args)  # the checkpoints load on any backend
    except cli.UsageError as error:
        cli.fail(parser.prog, error)
    found = differences(args.run_a, args.run_b)
    print(f"over {found['epochs']} epochs, largest relative difference:")
    for key in METRICS:
        print(f"  {key:<13} {found[key]:.1e}")
    print(f"final weights: largest absolute difference {found['weights_abs']:.1e}"
          f" ({found['weights_rel']:.1e} of the largest |weight| of its tensor)")
    return 0


def _rows(run):
    with open(os.path.join(run, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    sys.exit(main())
