"""Timing calls: medians of interleaved rounds whose order rotates.

Pure Python (no TensorFlow), so the per-backend subprocesses of
`benchmarks.backends` time with the same code as the TensorFlow cases.

Method. Each layer of a case is warmed up (tracing, compilation, allocator
growth), then timed in interleaved rounds: one call of every layer per round,
in an order that rotates (`round_orders`), so a slow spell of a noisy machine
hits all alike. A round's calls run back to back, so ratios within a round
cancel the machine's slow drifts (see `benchmarks.intervals`).
"""

import dataclasses
import statistics
import time


@dataclasses.dataclass(frozen=True)
class Rounds:
    """How many interleaved rounds a case gets: about `budget_s` seconds in
    all, but at least `min_reps` and at most `max_reps` rounds."""

    min_reps: int
    max_reps: int
    budget_s: float


FULL_ROUNDS = Rounds(min_reps=5, max_reps=60, budget_s=2.5)
QUICK_ROUNDS = Rounds(min_reps=3, max_reps=10, budget_s=0.2)  # a smoke run: seconds in all


def median_seconds(fn, reps):
    """Median seconds of `reps` calls of `fn`, after two untimed calls."""
    fn()
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_interleaved(fns, rounds, warmup=2):
    """Median seconds per call of each of `fns`, timed in interleaved rounds.

    Args:
        fns: dict name -> callable with no arguments.
        rounds: a `Rounds`, how many timed rounds.
        warmup: untimed calls of each before timing.

    Returns:
        `(medians, spreads, times)`: dicts name -> median seconds,
        name -> interquartile range / median, and name -> the list of
        per-round seconds (index i of every list is the same round).
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    start = time.perf_counter()
    for name in names:
        fns[name]()
    round_s = time.perf_counter() - start
    reps = int(min(rounds.max_reps,
                   max(rounds.min_reps, rounds.budget_s / max(round_s, 1e-9))))
    times = {name: [] for name in names}
    orders = round_orders(names)
    for rep in range(reps):
        for name in orders[rep % len(orders)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    spreads = {}
    for name, t in times.items():
        q1, _, q3 = statistics.quantiles(t, n=4) if len(t) > 1 else (t[0], t[0], t[0])
        spreads[name] = (q3 - q1) / medians[name]
    return medians, spreads, times


def round_orders(names):
    """The orders in which interleaved rounds run `names`: every rotation, then
    every rotation reversed. Each block of len(names) rounds, counted from
    the first, puts each name in each position once; each full cycle also puts
    each name before and after each other name equally often."""
    names = list(names)
    rotations = [names[i:] + names[:i] for i in range(len(names))]
    return rotations + [order[::-1] for order in rotations]
