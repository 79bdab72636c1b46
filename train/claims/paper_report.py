"""The report of `python -m train.paper`: verdicts, report.md, one PNG per experiment.

    from train.claims import paper_report
    path, table = paper_report.write(report_dir, experiments, seeds, by_cell, skipped, ...)

A comparison "A beats B" holds for a seed when A's number is strictly better
than B's in the metric's direction; a run that never got there (None: never
reached the target, NaN) is worse than any number, and two such runs tie.
"""

import datetime
import math
import os
import platform

from train.data.variants import VARIANTS
from train.reports import plots, report
from train.reports.numbers import number, plural

VERDICTS = ("reproduced", "partly", "not reproduced")


def metric_of(experiment, row):
    return row.metric or experiment.metric


def values(experiment, row, seeds, by_cell):
    """The metric of `row` for each seed whose run finished (None where it never got there)."""
    metric = metric_of(experiment, row)
    found = {}
    for seed in seeds:
        job = by_cell.get((experiment.key, row.label, seed))
        if job is not None and job.result is not None:
            if job.result.summary["stopped_early"] != "interrupted":
                found[seed] = metric.read(job.result)
    return found


def describe(found, metric, absent="not run"):
    """'11.3 [11–12]', or each seed's value when some are missing: '12, never, 14'."""
    if not found:
        return absent
    numbers = list(found.values())
    if any(value is None for value in numbers):
        return ", ".join(metric.missing if v is None else number(v, metric.digits) for v in numbers)
    if len(numbers) == 1:
        return number(numbers[0], metric.digits)
    mean = sum(numbers) / len(numbers)
    low, high = min(numbers), max(numbers)
    mean_digits = metric.digits or 1
    return f"{mean:.{mean_digits}f} [{number(low, metric.digits)}–{number(high, metric.digits)}]"


def _beats(a, b, higher_is_better):
    worst = -math.inf if higher_is_better else math.inf
    a = worst if a is None else a
    b = worst if b is None else b
    return a > b if higher_is_better else a < b


def verdict(experiment, seeds, by_cell):
    """(verdict, one sentence saying how many (comparison, seed) pairs held), or None if not run."""
    rows = {row.label: row for row in experiment.rows}
    held, total, lines = 0, 0, []
    for better, worse in experiment.comparisons:
        a = values(experiment, rows[better], seeds, by_cell)
        b = values(experiment, rows[worse], seeds, by_cell)
        common = [seed for seed in seeds if seed in a and seed in b]
        higher = metric_of(experiment, rows[better]).higher_is_better
        wins = sum(_beats(a[seed], b[seed], higher) for seed in common)
        held, total = held + wins, total + len(common)
        relation = f"{better} {'>' if higher else '<'} {worse}"
        lines.append(f"{relation} in {wins} of {plural(len(common), 'seed')}" if common
                     else f"{relation} not run")
    if total == 0:
        return None
    if held == total:
        outcome = VERDICTS[0]
    elif 2 * held >= total:
        outcome = VERDICTS[1]
    else:
        outcome = VERDICTS[2]
    return outcome, "; ".join(lines)


def plot_experiment(experiment, seeds, by_cell, path):
    """Each row's number per seed (dots) and mean (bar); runs that never got there at the edge.

    One panel per metric, in the order the rows first use it (E8's gaps and accuracy,
    E9's epochs and accuracy), each with its own axis.
    """
    panels = {}
    for row in experiment.rows:
        panels.setdefault(metric_of(experiment, row).name, []).append(row)
    heights = [0.45 * len(rows) + 1.1 for rows in panels.values()]
    plt = plots.pyplot()
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, sum(heights) + 0.5), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    for axis, (name, rows) in zip(axes[:, 0], panels.items()):
        _plot_panel(axis, experiment, rows, seeds, by_cell)
        axis.set_xlabel(name)
    axes[0, 0].set_title(f"{experiment.key}: {experiment.title}"
                         f" (seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))})")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _plot_panel(axis, experiment, rows, seeds, by_cell):
    """One metric's rows on one axis; a line at 0 when a number is negative (a gap)."""
    finite = [v for row in rows for v in values(experiment, row, seeds, by_cell).values()
              if v is not None]
    low, high = min(finite + [0.0]), max(finite + [0.0])
    edge = high + 0.1 * ((high - low) or 1.0)  # where "never" / "NaN" is drawn
    for index, row in enumerate(rows):
        found = values(experiment, row, seeds, by_cell)
        numbers = [v for v in found.values() if v is not None]
        if numbers:
            axis.barh(index, sum(numbers) / len(numbers), color=VARIANTS[row.variant].color,
                      alpha=0.35)
        axis.scatter(numbers, [index] * len(numbers), color="black", zorder=3, s=18)
        missing = len(found) - len(numbers)
        if missing:
            axis.scatter([edge] * missing, [index] * missing, marker="x", color="tab:red", zorder=3)
            axis.annotate(metric_of(experiment, row).missing, (edge, index),
                          textcoords="offset points", xytext=(6, -3), fontsize=8)
    if low < 0:
        axis.axvline(0, color="grey", linewidth=0.8)
    axis.set_yticks(range(len(rows)), [row.label for row in rows])
    axis.invert_yaxis()


def plot_curves(experiment, seeds, by_cell, path):
    """`make run`'s figure (accuracy, loss, activation-input percentiles) for the first seed."""
    results = {}
    for row in experiment.rows:
        job = by_cell.get((experiment.key, row.label, seeds[0]))
        if job is None or job.result is None:
            return False
        results[row.variant] = job.result
    first = next(iter(results.values()))
    plots.plot_comparison(results, path, first.summary["target_accuracy"])
    return True


def write(report_dir, experiments, seeds, by_cell, skipped, *, command, wall_seconds, finished):
    """Writes report.md and the PNGs into `report_dir`; returns (path, terminal table)."""
    summary_rows, sections = [], []
    for experiment in experiments:
        heading = f"{experiment.key} {experiment.title}"
        if experiment.key in skipped:
            reason = skipped[experiment.key]
            summary_rows.append((heading, "skipped", reason))
            sections.append(f"## {heading}\n\n**Claim.** {experiment.claim} ({experiment.source})"
                            f"\n\n**Skipped:** {reason}.\n")
            continue
        outcome = verdict(experiment, seeds, by_cell)
        measured = "; ".join(
            f"{row.label}: "
            + describe(values(experiment, row, seeds, by_cell), metric_of(experiment, row),
                       _cell(experiment, row, seeds[0], {}, by_cell, None))
            for row in experiment.rows
        )
        summary_rows.append((heading, outcome[0] if outcome else "not run", measured))
        sections.append(_section(experiment, seeds, by_cell, outcome, report_dir))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform(terse=True)}"
    lines = [
        "# Batch normalization's claims, rerun with kbn on the offline digits",
        "",
        f"`{command}` · {stamp} · seeds {', '.join(map(str, seeds))} · wall time"
        f" {wall_seconds / 60:.1f} min · {machine}",
        "",
        "Every run is a folder next to this file (`tensorboard --logdir` this folder).",
        "Verdict: *reproduced* when every comparison holds for every seed, *partly* when at"
        " least half of them do, *not reproduced* otherwise. Numbers: one per seed, or the"
        " mean [min–max] over seeds.",
        "",
    ]
    if not finished:
        lines += ["**Interrupted (Ctrl-C): the report covers the runs that finished.**", ""]
    lines += ["| experiment | verdict | measured |", "|---|---|---|"]
    lines += [f"| {heading} | {outcome} | {measured} |" for heading, outcome, measured in
              summary_rows]
    lines += ["", *sections]
    path = os.path.join(report_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    table = report.format_table(
        ("experiment", "verdict"), [(heading, outcome) for heading, outcome, _ in summary_rows]
    )
    return path, table


def _section(experiment, seeds, by_cell, outcome, report_dir):
    rows = []
    for row in experiment.rows:
        metric = metric_of(experiment, row)
        found = values(experiment, row, seeds, by_cell)
        cells = [_cell(experiment, row, seed, found, by_cell, metric) for seed in seeds]
        flags = " ".join((*experiment.flags, *row.flags)) or "(defaults)"
        job = next((by_cell[(experiment.key, row.label, s)] for s in seeds
                    if (experiment.key, row.label, s) in by_cell), None)
        epochs = _epochs_and_steps(job)
        rows.append(f"| {row.label} | `{row.variant}` | `{flags}` | {epochs} | "
                    + " | ".join(cells) + f" | {describe(found, metric, cells[0])} |")
    header = "| row | variant | flags | epochs (steps) | " + " | ".join(f"seed {s}" for s in seeds)
    header += " | summary |"
    separator = "|---" * (5 + len(seeds)) + "|"
    metric = metric_of(experiment, experiment.rows[0])
    text = [
        f"## {experiment.key} {experiment.title}",
        "",
        f"**Claim.** {experiment.claim} ({experiment.source})",
        "",
        f"**Measured:** {metric.name}"
        + (" (higher is better)." if metric.higher_is_better else " (lower is better).")
        + (f" {experiment.note}" if experiment.note else ""),
        "",
        header,
        separator,
        *rows,
        "",
    ]
    if outcome:
        text += [f"**Verdict: {outcome[0]}** — {outcome[1]}.", ""]
    else:
        text += ["**Verdict:** not run.", ""]
    png = f"{experiment.key}.png"
    plot_experiment(experiment, seeds, by_cell, os.path.join(report_dir, png))
    text += [f"![{experiment.key}]({png})", ""]
    if experiment.curves:
        curves = f"{experiment.key}-curves.png"
        if plot_curves(experiment, seeds, by_cell, os.path.join(report_dir, curves)):
            text += [f"Seed {seeds[0]}: validation accuracy, training loss and the 15th/50th/85th"
                     " percentiles of the last sigmoid's input, without and with BN:", "",
                     f"![{experiment.key} curves]({curves})", ""]
    return "\n".join(text)


def _epochs_and_steps(job):
    """What the row's run did: its finished epochs and optimizer steps (a NaN stop ends it
    early), or the epochs it was asked for when it did not run."""
    if job is None:
        return "-"
    if job.result is None or "steps" not in job.result.summary:
        return str(job.epochs)
    return f"{len(job.result.rows)} ({job.result.summary['steps']})"


def _cell(experiment, row, seed, found, by_cell, metric):
    if seed in found:
        return metric.missing if found[seed] is None else number(found[seed], metric.digits)
    job = by_cell.get((experiment.key, row.label, seed))
    if job is None:
        return "full run only"
    return "failed (runs.log)" if job.error else "not run"
