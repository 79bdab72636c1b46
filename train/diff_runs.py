"""How far apart two finished runs are: per-epoch metrics and final weights.

    python -m train.diff_runs logs/train/<one process> logs/train/<2 workers>

Prints, for each metric of metrics.csv (loss, accuracy, val_loss,
val_accuracy), the largest relative difference over the epochs both runs
have, |a − b| / |a|, and for the checkpoints the largest absolute difference
over every weight (BN's moving statistics included) and, relative to each
weight tensor's scale, max |a − b| / max |a|.
A synchronized distributed run and the single-process run with the same seed
differ only by the order of float32 sums (docs/distributed.md).

It says what differs between the two runs' settings (args.json), compares
only what can be compared, and says what it left out: runs of different
lengths are compared over the epochs both have, and their final weights
(from different epochs) are not; nor are the weights of different models
(other shapes). Two runs with nothing in common to compare are one line and
exit status 2.
"""

import argparse
import csv
import json
import os
import sys

import numpy as np

from train.options import cli
from train.reports.numbers import plural

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
# args.json entries that say where a run was written, not what it did (`variant` says
# which BN it trained, whichever command's flag chose it).
NOT_COMPARED = ("logdir", "experiment", "run_name", "bn", "lrs", "variants")


def differences(run_a, run_b):
    """How far apart `run_a` and `run_b` are, over what both have.

    Returns:
        {"epochs": epochs compared (those both have), "epochs_a", "epochs_b": each run's,
        "<metric>": largest relative difference over those epochs (None if there are none),
        "weights_abs", "weights_rel": the final weights' largest absolute and relative
        difference, None when they were not compared, "weights_skipped": why not (or None),
        "settings": {setting: (a's value, b's value)} for every setting that differs}.
    """
    rows_a, rows_b = _rows(run_a), _rows(run_b)
    epochs = min(len(rows_a), len(rows_b))
    result = {"epochs": epochs, "epochs_a": len(rows_a), "epochs_b": len(rows_b),
              "settings": settings_differences(run_a, run_b)}
    for key in METRICS:
        a = np.array([float(row[key]) for row in rows_a[:epochs]])
        b = np.array([float(row[key]) for row in rows_b[:epochs]])
        result[key] = (float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12)))
                       if epochs else None)
    result.update(weights_abs=None, weights_rel=None, weights_skipped=None)
    saved_a, saved_b = _checkpoint_epoch(run_a, rows_a), _checkpoint_epoch(run_b, rows_b)
    if saved_a != saved_b:
        result["weights_skipped"] = (f"they are from different epochs ({saved_a} and {saved_b});"
                                     " only weights of the same epoch are comparable")
        return result
    (names_a, weights_a), (names_b, weights_b) = _weights(run_a), _weights(run_b)
    shapes_a, shapes_b = [w.shape for w in weights_a], [w.shape for w in weights_b]
    if shapes_a != shapes_b:
        where = _parting(list(zip(names_a, shapes_a)), list(zip(names_b, shapes_b)))
        result["weights_skipped"] = f"the models differ ({where})"
        return result
    result["weights_abs"] = max(float(np.max(np.abs(a - b))) for a, b in zip(weights_a, weights_b))
    result["weights_rel"] = max(float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12))
                                for a, b in zip(weights_a, weights_b))
    return result


def settings_differences(run_a, run_b):
    """{setting: (a's, b's)} for each args.json entry that differs; {} if either has none."""
    saved = []
    for run in (run_a, run_b):
        try:
            with open(os.path.join(run, "args.json")) as f:
                saved.append(json.load(f))
        except (OSError, ValueError):
            return {}
    a, b = saved
    return {key: (a.get(key), b.get(key)) for key in sorted(a.keys() | b.keys())
            if key not in NOT_COMPARED and a.get(key) != b.get(key)}


def main(argv=None):
    parser = cli.OneLineParser(prog="python -m train.diff_runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    cli.add_backend_flag(parser)
    args = parser.parse_args(argv)
    for run in (args.run_a, args.run_b):
        for name in ("checkpoint.keras", "metrics.csv"):
            if not os.path.isfile(os.path.join(run, name)):
                cli.fail(parser.prog, f"{run}: not a finished run folder (no {name})")
    try:
        cli.resolve_backend(args)  # the checkpoints load on any backend
    except cli.UsageError as error:
        cli.fail(parser.prog, error)
    try:
        found = differences(args.run_a, args.run_b)
    except (OSError, ValueError, KeyError) as error:
        cli.fail(parser.prog, f"cannot read the runs: {error}")
    if not found["epochs"] and found["weights_abs"] is None:
        cli.fail(parser.prog, f"nothing to compare: {_lengths(found)}, and the final weights"
                              f" are not comparable: {found['weights_skipped']}")
    for line in report(found):
        print(line)
    return 0


def report(found):
    """The lines `main` prints for `differences`'s result."""
    lines = []
    if found["settings"]:
        lines.append("settings that differ (a vs b): " + "; ".join(
            f"{key} {a} vs {b}" for key, (a, b) in found["settings"].items()))
    if found["epochs"]:
        over = plural(found["epochs"], "epoch")
        if found["epochs_a"] != found["epochs_b"]:
            over = f"the first {over}, the ones both have ({_lengths(found)})"
        lines.append(f"over {over}, largest relative difference:")
        lines += [f"  {key:<13} {found[key]:.1e}" for key in METRICS]
    else:
        lines.append(f"metrics not compared: {_lengths(found)}")
    if found["weights_abs"] is None:
        lines.append(f"final weights not compared: {found['weights_skipped']}")
    else:
        lines.append(f"final weights: largest absolute difference {found['weights_abs']:.1e}"
                     f" ({found['weights_rel']:.1e} of the largest |weight| of its tensor)")
    return lines


def _lengths(found):
    return f"a has {plural(found['epochs_a'], 'epoch')}, b {found['epochs_b']}"


def _parting(weights_a, weights_b):
    """Where two models' (name, shape) lists part: 'weight 2: bn_1/gamma (8,) in a, …'."""
    for number, (a, b) in enumerate(zip(weights_a, weights_b), start=1):
        if a != b:
            return f"weight {number}: {a[0]} {a[1]} in a, {b[0]} {b[1]} in b"
    return f"a has {plural(len(weights_a), 'weight tensor')}, b {len(weights_b)}"


def _rows(run):
    with open(os.path.join(run, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _checkpoint_epoch(run, rows):
    """The epoch checkpoint.keras holds: checkpoint.json's, else (older runs) the last row's."""
    try:
        with open(os.path.join(run, "checkpoint.json")) as f:
            return int(json.load(f)["epochs_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return len(rows)


def _weights(run):
    """The checkpoint's weight names and values, in the model's order."""
    import keras

    import kbn  # noqa: F401  (registers kbn's layer for load_model)

    model = keras.saving.load_model(os.path.join(run, "checkpoint.keras"))
    return [weight.path for weight in model.weights], model.get_weights()


if __name__ == "__main__":
    sys.exit(main())
