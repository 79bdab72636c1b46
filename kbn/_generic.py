"""The batch-norm math in backend-agnostic `keras.ops`: the generic path.

Every function here is pure: tensors in, tensors out, no layer state. The
layer (`kbn/batch_normalization.py`) wires them together, and a backend fast
path (`kbn/_tf_fast.py`) may replace `train_forward` / `infer_forward` where it
can give the same numbers faster.
"""

from keras import ops


def broadcast_shape(rank, axis, channels):
    """Shape that lines a `(channels,)` vector up with `axis` of a rank-`rank` tensor."""
    shape = [1] * rank
    shape[axis] = channels
    return shape


def moments(x, reduction_axes, mask=None, all_reduce_sum=None):
    """Batch mean and biased (1/m) variance over `reduction_axes`.

    Two passes (mean first, then the mean of squared deviations), so an input
    like 1e4 + noise keeps its variance in float32, where E[x²] − E[x]² would
    cancel to garbage.

    Args:
        x: float tensor.
        reduction_axes: every axis except the channel axis.
        mask: optional boolean tensor broadcastable to `x`; False entries are
            left out of both statistics.
        all_reduce_sum: optional function that sums a list of tensors over all
            replicas (`synchronized=True`); the statistics are then those of
            the global batch.

    Returns:
        `(mean, variance, count)`, each of shape `(channels,)`; `count` is the
        number of entries each channel's statistics were taken over, or None
        when it is the same for every channel (no mask, one replica).
    """
    # d/dμ Σ(x − μ)² = −2Σ(x − μ) = 0, so stopping the gradient through μ in
    # the variance changes nothing but the work the backward pass does.
    if mask is None and all_reduce_sum is None:
        if len(x.shape) - 1 not in reduction_axes:  # channels last: (C,) broadcasts as it is
            mean = ops.mean(x, axis=reduction_axes)
            variance = ops.mean(ops.square(x - ops.stop_gradient(mean)), axis=reduction_axes)
            return mean, variance, None
        mean = ops.mean(x, axis=reduction_axes, keepdims=True)
        variance = ops.mean(ops.square(x - ops.stop_gradient(mean)), axis=reduction_axes,
                            keepdims=True)
        return ops.squeeze(mean, reduction_axes), ops.squeeze(variance, reduction_axes), None
    reduce = all_reduce_sum or (lambda tensors: tensors)
    weights = None
    if mask is None:
        local_sum = ops.sum(x, axis=reduction_axes, keepdims=True)
        per_channel = ops.size(x) // ops.size(local_sum)
        local_count = ops.ones_like(local_sum) * ops.cast(per_channel, x.dtype)
    else:
        weights = ops.cast(ops.broadcast_to(mask, ops.shape(x)), x.dtype)
        local_sum = ops.sum(x * weights, axis=reduction_axes, keepdims=True)
        local_count = ops.sum(weights, axis=reduction_axes, keepdims=True)
    total, count = reduce([local_sum, local_count])
    # A channel with no unmasked entry has count 0: max(count, 1) keeps its
    # statistics finite, and the layer skips its moving update.
    safe_count = ops.maximum(count, 1.0)
    mean = total / safe_count
    deviation = x - ops.stop_gradient(mean)
    if weights is not None:
        deviation = deviation * weights
    (squares,) = reduce([ops.sum(ops.square(deviation), axis=reduction_axes, keepdims=True)])
    variance = squares / safe_count
    return tuple(ops.squeeze(t, reduction_axes) for t in (mean, variance, count))


def normalize(x, mean, variance, gamma, beta, epsilon, axis):
    """`gamma · (x − mean) / sqrt(variance + epsilon) + beta`, per channel.

    Folded into one multiply-add per element, `x · k + (beta − mean · k)` with
    `k = gamma / sqrt(variance + ε)`: two passes over `x` instead of three.
    `gamma` / `beta` may be None (`scale=False` / `center=False`).
    """
    factor = ops.rsqrt(variance + epsilon)
    if gamma is not None:
        factor = factor * gamma
    offset = -mean * factor if beta is None else beta - mean * factor
    if axis != len(x.shape) - 1:  # a channel axis other than the last needs explicit broadcasting
        shape = broadcast_shape(len(x.shape), axis, mean.shape[0])
        factor, offset = ops.reshape(factor, shape), ops.reshape(offset, shape)
    return x * factor + offset


def moving_update(moving, batch, momentum, valid):
    """`moving · momentum + batch · (1 − momentum)` where `valid`, else `moving`.

    `valid` is a per-channel boolean: a channel whose batch statistic is not
    finite (or was taken over no entry) keeps its moving value, so one bad
    batch cannot poison inference forever.
    """
    updated = moving * momentum + batch * (1.0 - momentum)
    return ops.where(valid, updated, moving)


def is_valid(variance, count=None):
    """Per channel: the batch statistics are finite and, if `count` is given, `count > 0`.

    Testing the variance covers the mean too: it is the mean of squared
    deviations from that mean, so a NaN or ±inf mean (or input) makes it NaN
    or inf. One test per step is all NaN safety adds to the statistics.
    """
    valid = ops.isfinite(variance)
    if count is not None:
        valid = ops.logical_and(valid, count > 0)
    return valid


def renorm_correction(mean, variance, renorm_mean, renorm_stddev, epsilon, clipping):
    """Batch Renormalization's `(r, d)` (Ioffe 2017, Algorithm 1).

    `r = σ_B / σ` and `d = (μ_B − μ) / σ`, where σ_B = sqrt(var_B + ε) and
    (μ, σ) are the renorm moving averages; σ is floored at sqrt(ε) so the first
    steps cannot divide by ~0. `r` is clipped to [rmin, rmax] and `d` to
    [−dmax, dmax] (absent keys: no bound). Both are constants for the gradient,
    as the paper prescribes.
    """
    stddev = ops.sqrt(variance + epsilon)
    renorm_stddev = ops.maximum(renorm_stddev, epsilon**0.5)
    r = stddev / renorm_stddev
    d = (mean - renorm_mean) / renorm_stddev
    if "rmin" in clipping:
        r = ops.maximum(r, clipping["rmin"])
    if "rmax" in clipping:
        r = ops.minimum(r, clipping["rmax"])
    if "dmax" in clipping:
        d = ops.clip(d, -clipping["dmax"], clipping["dmax"])
    return ops.stop_gradient(r), ops.stop_gradient(d)


def train_forward(x, gamma, beta, epsilon, axis, reduction_axes, mask, moments_fn=moments):
    """Training-mode forward pass on the generic path.

    Returns:
        `(outputs, mean, variance, count)`; the statistics feed the moving update.
    """
    mean, variance, count = moments_fn(x, reduction_axes, mask)
    outputs = normalize(x, mean, variance, gamma, beta, epsilon, axis)
    return outputs, mean, variance, count


def infer_forward(x, mean, variance, gamma, beta, epsilon, axis):
    """Inference-mode forward pass on the generic path."""
    return normalize(x, mean, variance, gamma, beta, epsilon, axis)
