"""Terminal tables and the keras-vs-kbn agreement check.

from train.reports import report
print(report.comparison_table({"kbn": result}, target_accuracy=0.95))
agree, max_difference = report.curves_agree(keras_result.rows, kbn_result.rows)
"""

import math

from train.reports.numbers import number, plural

# The curves compared between the Keras and kbn variants.
CURVE_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
AGREEMENT_TOLERANCE = 1e-3


def setup_line(args, data, with_lr=True):
    """One line naming the data, model and training set-up of a table's runs."""
    lr = f" lr {args.lr:g}" if with_lr else ""
    return (
        f"{data.name}: {args.model} {args.hidden} {args.activation}, BN {args.bn_position}, "
        f"{args.optimizer}{lr}, batch {args.batch_size}, {plural(args.epochs, 'epoch')}, "
        f"inputs {data.input_norm}, seed {args.seed}"
    )


def where_lines(experiment_dir, stamp, run_name):
    """Where the run folders went, and how to look at them."""
    return (
        f"logs: {experiment_dir}/{stamp}-{run_name}-*/\n"
        f"look: make tensorboard   (or tensorboard --logdir {experiment_dir} --host 127.0.0.1)"
    )


def comparison_table(results, target_accuracy):
    """One row per variant: epochs to target, best/final val accuracy, final val loss, s/epoch.

    `results` maps each variant to its `RunResult`, in table order.
    """
    header = (
        "variant",
        f"epochs to {target_accuracy:g}",
        "best val acc",
        "final val acc",
        "final val loss",
        "s/epoch",
        "stopped",
    )
    # --recalibrate: the final numbers again, after kbn.recalibrate.
    recalibrated = any("val_accuracy_recalibrated" in result.summary
                       for result in results.values())
    if recalibrated:
        header = header[:5] + ("recal val acc", "recal val loss") + header[5:]
    rows = []
    for variant, result in results.items():
        s = result.summary
        row = (
            variant,
            _or_dash(s["epochs_to_target"], "never"),
            number(s["best_val_accuracy"], 4),
            number(s["final_val_accuracy"], 4),
            number(s["final_val_loss"], 4),
            number(s["seconds_per_epoch"], 3),
            s["stopped_early"] or "",
        )
        if recalibrated:
            row = row[:5] + (number(s.get("val_accuracy_recalibrated"), 4),
                             number(s.get("val_loss_recalibrated"), 4)) + row[5:]
        rows.append(row)
    return format_table(header, rows)


def sweep_table(results_by_lr, variants, target_accuracy):
    """One row per learning rate; per variant 'epochs to target (best val acc)'.

    `results_by_lr` maps each rate to {variant: RunResult}.
    """
    header = ("lr", *(f"{variant}: epochs to {target_accuracy:g} (best)" for variant in variants))
    rows = []
    for lr, results in results_by_lr.items():
        cells = []
        for variant in variants:
            s = results[variant].summary
            outcome = (
                "NaN" if s["stopped_early"] == "nan" else _or_dash(s["epochs_to_target"], "never")
            )
            best = number(s["best_val_accuracy"], 3)
            if "val_accuracy_recalibrated" in s:  # --recalibrate
                best += f", recalibrated {number(s['val_accuracy_recalibrated'], 3)}"
            cells.append(f"{outcome} ({best})")
        rows.append((f"{lr:g}", *cells))
    return format_table(header, rows)


def format_table(header, rows):
    """A plain-text table with columns padded to their widest cell."""
    table = [tuple(str(cell) for cell in row) for row in (header, *rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def curves_agree(rows_a, rows_b, tolerance=AGREEMENT_TOLERANCE):
    """Whether two runs' per-epoch curves match within `tolerance`, element by element.

    Returns:
        (agree, max_difference): a run that stopped earlier than the other, or a
        NaN (inf) in one where the other has a number, never agrees; NaN in both
        at the same place (both diverged together) counts as equal.
    """
    if len(rows_a) != len(rows_b) or not rows_a:
        return False, math.inf
    differences = [_difference(a[key], b[key])
                   for a, b in zip(rows_a, rows_b) for key in CURVE_KEYS]
    if not all(math.isfinite(difference) for difference in differences):
        return False, math.inf
    max_difference = max(differences)
    return max_difference <= tolerance, max_difference


def _difference(a, b):
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b)


def _or_dash(value, missing):
    return missing if value is None else value
