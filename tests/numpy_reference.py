"""A float64 NumPy reference of batch normalization, written straight from the papers.

Ioffe & Szegedy 2015, Algorithm 1 (forward), its backward pass, the moving-average
update, and Batch Renormalization (Ioffe 2017). Everything is computed in float64,
so a float32 layer can be measured against it element by element.
"""

import numpy as np


def _channel_view(x, axis):
    """`x` as a 2-D (entries, channels) float64 array, and a function undoing that."""
    moved = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    shape = moved.shape

    def back(flat):
        return np.moveaxis(flat.reshape(shape), -1, axis)

    return moved.reshape(-1, shape[-1]), back


def _mask_view(mask, x_shape, axis):
    """Keras's mask covers every axis but the last: broadcast it, then view it like `x`."""
    if mask is None:
        return None
    full = np.broadcast_to(np.asarray(mask, bool)[..., None], x_shape)
    return np.moveaxis(full, axis, -1).reshape(-1, x_shape[axis])


def batch_moments(x, axis=-1, mask=None):
    """Per-channel batch mean and biased (1/m) variance over the unmasked entries."""
    flat, _ = _channel_view(x, axis)
    weights = np.ones_like(flat) if mask is None else _mask_view(mask, np.shape(x), axis)
    count = weights.sum(axis=0)
    mean = (flat * weights).sum(axis=0) / count
    variance = (((flat - mean) ** 2) * weights).sum(axis=0) / count
    return mean, variance


def normalize(x, mean, variance, gamma, beta, epsilon, axis=-1):
    """y = γ · (x − mean) / sqrt(variance + ε) + β, per channel."""
    flat, back = _channel_view(x, axis)
    channels = flat.shape[1]
    gamma = np.ones(channels) if gamma is None else np.asarray(gamma, np.float64)
    beta = np.zeros(channels) if beta is None else np.asarray(beta, np.float64)
    return back(gamma * (flat - mean) / np.sqrt(variance + epsilon) + beta)


def moving_update(moving, batch, momentum):
    """moving ← moving · momentum + batch · (1 − momentum)."""
    moving, batch = np.asarray(moving, np.float64), np.asarray(batch, np.float64)
    return moving * momentum + batch * (1 - momentum)


def backward(x, upstream, gamma, epsilon, axis=-1):
    """Gradients of Σ upstream · y for training-mode y (the paper's backprop formulas).

    Returns:
        `(dx, dgamma, dbeta)`.
    """
    flat, back = _channel_view(x, axis)
    dy, _ = _channel_view(upstream, axis)
    m = flat.shape[0]
    mean = flat.mean(axis=0)
    variance = flat.var(axis=0)
    inv_std = 1.0 / np.sqrt(variance + epsilon)
    x_hat = (flat - mean) * inv_std
    gamma = np.ones(flat.shape[1]) if gamma is None else np.asarray(gamma, np.float64)
    dgamma = (dy * x_hat).sum(axis=0)
    dbeta = dy.sum(axis=0)
    dx_hat = dy * gamma
    dx = inv_std / m * (m * dx_hat - dx_hat.sum(axis=0) - x_hat * (dx_hat * x_hat).sum(axis=0))
    return back(dx), dgamma, dbeta


def renorm_factors(x, state, epsilon, axis=-1):
    """Batch Renormalization's correction `(r, d)` per channel, before clipping:
    the batch's stddev and mean relative to the renorm moving ones."""
    mean, variance = batch_moments(x, axis)
    reference_stddev = np.maximum(state["renorm_stddev"], np.sqrt(epsilon))
    r = np.sqrt(variance + epsilon) / reference_stddev
    d = (mean - state["renorm_mean"]) / reference_stddev
    return r, d


def renorm_step(x, gamma, beta, state, epsilon, momentum, renorm_momentum, clipping, axis=-1):
    """One Batch Renormalization training step.

    Args:
        state: dict of float64 arrays `moving_mean`, `moving_stddev`,
            `renorm_mean`, `renorm_stddev` (read, not modified).

    Returns:
        `(y, new_state)`; `new_state` also holds the derived `moving_variance`.
    """
    mean, variance = batch_moments(x, axis)
    stddev = np.sqrt(variance + epsilon)
    r, d = renorm_factors(x, state, epsilon, axis)
    r = np.clip(r, clipping.get("rmin", -np.inf), clipping.get("rmax", np.inf))
    dmax = clipping.get("dmax", np.inf)
    d = np.clip(d, -dmax, dmax)
    flat, back = _channel_view(x, axis)
    x_hat = (flat - mean) / stddev
    gamma = np.ones_like(mean) if gamma is None else np.asarray(gamma, np.float64)
    beta = np.zeros_like(mean) if beta is None else np.asarray(beta, np.float64)
    y = back(gamma * (x_hat * r + d) + beta)
    new = {
        "renorm_mean": moving_update(state["renorm_mean"], mean, renorm_momentum),
        "renorm_stddev": moving_update(state["renorm_stddev"], stddev, renorm_momentum),
        "moving_mean": moving_update(state["moving_mean"], mean, momentum),
        "moving_stddev": moving_update(state["moving_stddev"], stddev, momentum),
    }
    new["moving_variance"] = np.maximum(new["moving_stddev"] ** 2 - epsilon, 0.0)
    return y, new
