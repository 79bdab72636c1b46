"""A float64 NumPy reference of batch normalization, written straight from the papers.

Ioffe & Szegedy 2015, Algorithm 1 (forward), its backward pass, the moving-average
update, and Batch Renormalization (Ioffe 2017). Everything is computed in float64,
so a float32 layer can be measured against it element by element.
"""

import numpy as np


def _axes(axis, rank):
    """`axis` (an int or a list of ints) as sorted non-negative axes."""
    return sorted(a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis]))


def _channel_view(x, axis):
    """`x` as a 2-D (entries, channels) float64 array, and a function undoing that.

    With several axes (tf.keras's `axis=[...]`), "channels" are all the
    combinations of their indices, in input order.
    """
    x = np.asarray(x, np.float64)
    axes = _axes(axis, x.ndim)
    last = list(range(x.ndim - len(axes), x.ndim))
    moved = np.moveaxis(x, axes, last)
    shape = moved.shape

    def back(flat):
        return np.moveaxis(flat.reshape(shape), last, axes)

    return moved.reshape(-1, int(np.prod(shape[len(shape) - len(axes):]))), back


def channel_shape(x_shape, axis):
    """The shape of a statistic (and of γ, β): the sizes of the channel axes in input order."""
    return tuple(x_shape[a] for a in _axes(axis, len(x_shape)))


def _mask_view(mask, x_shape, axis):
    """Keras's mask covers every axis but the last: broadcast it, then view it like `x`."""
    full = np.broadcast_to(np.asarray(mask, bool)[..., None], x_shape)
    flat, _ = _channel_view(full, axis)
    return flat.astype(bool)


def batch_moments(x, axis=-1, mask=None, return_count=False):
    """Per-channel batch mean and biased (1/m) variance over the unmasked entries,
    shaped like the channel axes (and the count m per channel if asked)."""
    flat, _ = _channel_view(x, axis)
    weights = np.ones_like(flat) if mask is None else _mask_view(mask, np.shape(x), axis)
    count = weights.sum(axis=0)
    mean = (flat * weights).sum(axis=0) / count
    variance = (((flat - mean) ** 2) * weights).sum(axis=0) / count
    shape = channel_shape(np.shape(x), axis)
    result = (mean.reshape(shape), variance.reshape(shape))
    return result + (count.reshape(shape),) if return_count else result


def normalize(x, mean, variance, gamma, beta, epsilon, axis=-1):
    """y = γ · (x − mean) / sqrt(variance + ε) + β, per channel."""
    flat, back = _channel_view(x, axis)
    channels = flat.shape[1]
    mean, variance = np.ravel(mean), np.ravel(variance)
    gamma = np.ones(channels) if gamma is None else np.ravel(np.asarray(gamma, np.float64))
    beta = np.zeros(channels) if beta is None else np.ravel(np.asarray(beta, np.float64))
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
    gamma = np.ones(flat.shape[1]) if gamma is None else np.ravel(np.asarray(gamma, np.float64))
    dgamma = (dy * x_hat).sum(axis=0)
    dbeta = dy.sum(axis=0)
    dx_hat = dy * gamma
    dx = inv_std / m * (m * dx_hat - dx_hat.sum(axis=0) - x_hat * (dx_hat * x_hat).sum(axis=0))
    shape = channel_shape(np.shape(x), axis)
    return back(dx), dgamma.reshape(shape), dbeta.reshape(shape)


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


def ghost_batches(n, k):
    """The sample indices of each ghost batch of k samples in a batch of n:
    ghost batch g is samples g, g + n/k, g + 2n/k, … (tf.keras's strided grouping)."""
    groups = n // k
    return [np.arange(g, n, groups) for g in range(groups)]


def ghost_step(x, upstream, k, gamma, beta, epsilon, axis=-1, mask=None, unbiased=False):
    """Ghost batch norm in training: each ghost batch normalized with its own
    statistics (Algorithm 1 applied per ghost batch, forward and backward).

    Returns:
        `(y, dx, dgamma, dbeta, mean, variance)`; `mean` and `variance` are
        what the moving statistics take: the average over ghost batches (with
        a mask, weighted by each ghost batch's count), with `unbiased` each
        ghost batch's variance multiplied by m/(m − 1) first.
    """
    x = np.asarray(x, np.float64)
    y, dx = np.zeros_like(x), np.zeros_like(x)
    shape = channel_shape(x.shape, axis)
    dgamma, dbeta = np.zeros(shape), np.zeros(shape)
    means, variances, counts = [], [], []
    for idx in ghost_batches(len(x), k):
        part_mask = None if mask is None else np.asarray(mask)[idx]
        mean, variance, count = batch_moments(x[idx], axis, part_mask, return_count=True)
        y[idx] = normalize(x[idx], mean, variance, gamma, beta, epsilon, axis)
        if upstream is not None and mask is None:
            dx[idx], dg, db = backward(x[idx], upstream[idx], gamma, epsilon, axis)
            dgamma, dbeta = dgamma + dg, dbeta + db
        means.append(mean)
        variances.append(variance * count / (count - 1) if unbiased else variance)
        counts.append(count)
    weights = np.array(counts)
    mean = (np.array(means) * weights).sum(axis=0) / weights.sum(axis=0)
    variance = (np.array(variances) * weights).sum(axis=0) / weights.sum(axis=0)
    return y, dx, dgamma, dbeta, mean, variance


def cumulative_average(batch_values):
    """The moving value after n batches with PyTorch's `momentum=None`: their plain mean."""
    return np.mean(np.asarray(batch_values, np.float64), axis=0)
