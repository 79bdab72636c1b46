"""Confidence intervals of paired time ratios, and the A/A control that gives
a measurement's resolution.

- Paired ratio CI: each round times the layers back to back, so the ratio of
  the two times within a round cancels the machine's slow drifts. Tables give
  a distribution-free 95% confidence interval of the median of those
  per-round ratios (order statistics of the binomial sign test; with 5
  rounds, the fewest a full run times, it is [min, max] at 94%). An interval
  that holds 1.00 means no difference this machine can resolve.
- A/A control: each case also times a second, separately built copy of the
  reference layer (`CONTROL` for Keras's), and gives the same interval for
  reference-again / reference. Two copies of one program are not always
  timed alike (memory placement, thread scheduling), so this interval is the
  measurement's own resolution: a ratio whose interval overlaps it is a tie.
"""

import math

CONTROL = "Keras again"  # the A/A control: a second Keras layer, timed like the others


def paired_ci(times, name, reference="Keras"):
    """`median_ci` of the per-round ratios times[name] / times[reference], as (low, high)."""
    return median_ci([a / b for a, b in zip(times[name], times[reference])])[:2]


def median_ci(values, confidence=0.95):
    """Distribution-free confidence interval of the median of `values`.

    The interval between the k-th smallest and the k-th largest value covers
    the median with probability 1 − 2·P(B ≤ k − 1), B ~ Binomial(n, ½); k is
    the largest with coverage ≥ `confidence`, or 1 (min, max) when even that
    falls short (n ≤ 5). Returns `(low, high, coverage)`.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median_ci needs at least one value, got none")

    def coverage(k):
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    return ordered[k - 1], ordered[n - k], coverage(k)
