"""Ratios of named layers timed together, judged against the A/A control and a target.

A case times several layers in the same interleaved rounds
(`benchmarks.timing`) and reports some of their ratios, each a `Comparison`:
the median time of `timed` over that of `against`, its paired interval, and
the A/A interval of `control`, a second, separately built copy of `against`
(`benchmarks.intervals`). Pure Python, so every backend's subprocess uses it.

Verdict against the A/A control: "faster" when the paired interval lies
wholly below the A/A one, "slower" wholly above it, "tie" when they overlap
(the difference is within what two copies of one program show).
"""

import dataclasses

from benchmarks.intervals import paired_ci


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal for a ratio timed / against (lower is faster).

    `at_most`: the ratio's median must not exceed it; None: a tie or better,
    i.e. the verdict against the A/A control is not "slower". `stretch`: an
    optional tighter bound, reported beside the goal.
    """

    at_most: float | None = None
    stretch: float | None = None

    def text(self):
        goal = "tie or better" if self.at_most is None else f"≤ {self.at_most:g}"
        return goal if self.stretch is None else f"{goal}; stretch ≤ {self.stretch:g}"

    def met(self, ratio, verdict):
        """"yes" or "no", and the stretch goal's the same way when there is one."""
        met = verdict != "slower" if self.at_most is None else ratio <= self.at_most
        text = "yes" if met else "no"
        if self.stretch is not None:
            text += "; stretch " + ("yes" if ratio <= self.stretch else "no")
        return text


TIE_OR_BETTER = Target()


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One reported ratio: `timed` over `against`, with `control` (a second copy
    of `against`) as its A/A control, judged against `target`."""

    timed: str
    against: str
    control: str
    target: Target = TIE_OR_BETTER


def verdict(ci, aa_ci):
    """"faster", "tie" or "slower": a paired interval against the A/A interval."""
    if ci[1] < aa_ci[0]:
        return "faster"
    if ci[0] > aa_ci[1]:
        return "slower"
    return "tie"


def comparison_rows(case, comparisons, timing):
    """One row per comparison of a case timed once.

    Args:
        case: dict column -> text naming the case (shape, mode, ...); the
            first columns of the table.
        comparisons: the `Comparison`s to report.
        timing: `(medians, spreads, times)` as `time_interleaved` returns.
    """
    medians, spreads, times = timing
    rows = []
    for comparison in comparisons:
        ci = paired_ci(times, comparison.timed, comparison.against)
        aa_ci = paired_ci(times, comparison.control, comparison.against)
        ratio = medians[comparison.timed] / medians[comparison.against]
        judged = verdict(ci, aa_ci)
        layers = (comparison.timed, comparison.against, comparison.control)
        rows.append({
            "case": dict(case),
            "timed": comparison.timed,
            "against": comparison.against,
            "timed_ms": medians[comparison.timed] * 1e3,
            "against_ms": medians[comparison.against] * 1e3,
            "ratio": ratio,
            "ci": ci,
            "aa_ci": aa_ci,
            "verdict": judged,
            "target": comparison.target.text(),
            "met": comparison.target.met(ratio, judged),
            "reps": len(times[comparison.timed]),
            "spread": max(spreads[name] for name in layers),
        })
    return rows


def log_line(row):
    """A one-line progress summary of a comparison row."""
    case = " ".join(str(value) for value in row["case"].values())
    return (f"{case:>36}  {row['timed']} / {row['against']}: {row['ratio']:.2f}"
            " [{:.2f}, {:.2f}]  A/A [{:.2f}, {:.2f}]".format(*row["ci"], *row["aa_ci"])
            + f"  {row['verdict']}, target {row['target']}: {row['met']}")

