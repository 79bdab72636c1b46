"""How far one set of batch-norm statistics is from another, per layer (pure NumPy).

Shared by `recalibrate`'s report (new moving statistics vs old) and
`BatchStatsMonitor` (a training batch's statistics vs the moving ones), so
both speak in the same units: the distance a channel's mean moved, measured
in the reference standard deviations, and the ratio of variances.
"""

import numpy as np


def mean_shift(mean, reference_mean, reference_variance, epsilon):
    """Mean over channels of `|μ − μ_ref| / sqrt(σ²_ref + ε)`.

    0 when the means agree; 1 when they are, on average, one reference
    standard deviation apart, i.e. the normalized values would be off by 1.
    """
    mean, reference_mean, reference_variance = _float64(mean, reference_mean, reference_variance)
    return float(np.mean(np.abs(mean - reference_mean) / np.sqrt(reference_variance + epsilon)))


def variance_ratio(variance, reference_variance, epsilon):
    """Mean over channels of `σ² / (σ²_ref + ε)`: 1 when the variances agree."""
    variance, reference_variance = _float64(variance, reference_variance)
    return float(np.mean(variance / (reference_variance + epsilon)))


def _float64(*arrays):
    return [np.asarray(array, dtype="float64") for array in arrays]
