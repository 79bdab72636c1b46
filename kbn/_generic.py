"""The batch-norm math in backend-agnostic `keras.ops`: the generic path.

Every function here is pure: tensors in, tensors out, no layer state. The
layer (`kbn/batch_normalization.py`) wires them together, and a backend fast
path (`kbn/_tf_fast.py`, `kbn/_torch_fast.py`) may replace `train_forward` /
`infer_forward` where it can give the same numbers faster.

Throughout, `axes` are the non-negative channel axes of `x` in increasing
order (one for the usual per-channel batch norm, several for tf.keras's
`axis=[...]`), and a statistic has the sizes of those axes in that order.
"""

import keras
from keras import ops


def broadcast_shape(rank, axes, shape):
    """Shape that lines a statistic of shape `shape` up with `axes` of a rank-`rank` tensor."""
    target = [1] * rank
    for axis, size in zip(axes, shape):
        target[axis] = -1 if size is None else size
    return target


def _trailing(axes, rank):
    """Whether `axes` are the last axes of the input, so a statistic broadcasts as it is."""
    return tuple(axes) == tuple(range(rank - len(axes), rank))


def _runs(axes):
    """`axes` split into runs of adjacent axes: (0, 2, 3) → [(0,), (2, 3)]."""
    runs = []
    for axis in sorted(axes):
        if runs and runs[-1][-1] == axis - 1:
            runs[-1] = runs[-1] + (axis,)
        else:
            runs.append((axis,))
    return runs


def reduce(op, x, axes, keepdims=False):
    """`op(x, axis=axes, keepdims=...)` for `ops.sum` / `ops.mean`, on TensorFlow
    one run of adjacent axes at a time.

    TensorFlow's CPU reductions over non-adjacent axes are slow: the mean over
    axes (0, 2) of a (16, 4, 1024, 32) tensor took 15 ms, over axis 0 and then
    axis 1 of the result 1.4 ms (the mean over (0, 1, 2) of the same tensor
    1.0 ms). Channels-first inputs and several axes reduce such axes. Means
    of equal-sized runs compose exactly (a mean of means). Inside
    `jit_compile=True` the stages pay too (`axis=[1, 3]` training step on
    128×32×32×64 vs tf.keras's: 0.80 staged, 1.00 as one reduction). Other
    backends are left to their own compilers.
    """
    runs = _runs(axes)
    if len(runs) == 1 or keras.backend.backend() != "tensorflow":
        return op(x, axis=tuple(axes), keepdims=keepdims)
    for run in reversed(runs):  # the last run first, so earlier axes keep their numbers
        x = op(x, axis=run, keepdims=keepdims)
    return x


def moments(x, reduction_axes, mask=None, all_reduce_sum=None):
    """Batch mean and biased (1/m) variance over `reduction_axes`.

    Two passes (mean first, then the mean of squared deviations), so an input
    like 1e4 + noise keeps its variance in float32, where E[x²] − E[x]² would
    cancel to garbage.

    Args:
        x: float tensor.
        reduction_axes: the axes to reduce (every axis but the channel axes).
        mask: optional boolean tensor broadcastable to `x`; False entries are
            left out of both statistics.
        all_reduce_sum: optional function that sums a list of tensors over all
            replicas (`synchronized=True`); the statistics are then those of
            the global batch.

    Returns:
        `(mean, variance, count)`, each with the sizes of the kept axes;
        `count` is the number of entries each statistic was taken over, or
        None when it is the same everywhere (no mask, one replica).
    """
    rank = len(x.shape)
    kept = [i for i in range(rank) if i not in reduction_axes]
    # d/dμ Σ(x − μ)² = −2Σ(x − μ) = 0, so stopping the gradient through μ in
    # the variance changes nothing but the work the backward pass does.
    if mask is None and all_reduce_sum is None:
        if _trailing(kept, rank):  # the statistics broadcast against x as they are
            mean = reduce(ops.mean, x, reduction_axes)
            variance = reduce(ops.mean, ops.square(x - ops.stop_gradient(mean)), reduction_axes)
            return mean, variance, None
        mean = reduce(ops.mean, x, reduction_axes, keepdims=True)
        variance = reduce(ops.mean, ops.square(x - ops.stop_gradient(mean)), reduction_axes,
                          keepdims=True)
        return ops.squeeze(mean, reduction_axes), ops.squeeze(variance, reduction_axes), None
    all_reduce = all_reduce_sum or (lambda tensors: tensors)
    weights = None
    if mask is None:
        local_sum = reduce(ops.sum, x, reduction_axes, keepdims=True)
        per_entry = ops.size(x) // ops.size(local_sum)
        local_count = ops.ones_like(local_sum) * ops.cast(per_entry, x.dtype)
    else:
        weights = ops.cast(ops.broadcast_to(mask, ops.shape(x)), x.dtype)
        local_sum = reduce(ops.sum, x * weights, reduction_axes, keepdims=True)
        local_count = reduce(ops.sum, weights, reduction_axes, keepdims=True)
    total, count = all_reduce([local_sum, local_count])
    # An entry with no unmasked value has count 0: max(count, 1) keeps its
    # statistics finite, and the layer skips its moving update.
    safe_count = ops.maximum(count, 1.0)
    mean = total / safe_count
    deviation = x - ops.stop_gradient(mean)
    if weights is not None:
        deviation = deviation * weights
    (squares,) = all_reduce([reduce(ops.sum, ops.square(deviation), reduction_axes,
                                    keepdims=True)])
    variance = squares / safe_count
    return tuple(ops.squeeze(t, reduction_axes) for t in (mean, variance, count))


def normalize(x, mean, variance, gamma, beta, epsilon, axes):
    """`gamma · (x − mean) / sqrt(variance + epsilon) + beta`, per entry of `axes`.

    Folded into one multiply-add per element, `x · k + (beta − mean · k)` with
    `k = gamma / sqrt(variance + ε)`: two passes over `x` instead of three.
    `gamma` / `beta` may be None (`scale=False` / `center=False`); they
    broadcast against the statistics from the right (ghost batches give the
    statistics one leading axis more).
    """
    factor = ops.rsqrt(variance + epsilon)
    if gamma is not None:
        factor = factor * gamma
    offset = -mean * factor if beta is None else beta - mean * factor
    rank = len(x.shape)
    if not _trailing(axes, rank):  # the statistics need explicit broadcasting
        shape = broadcast_shape(rank, axes, mean.shape)
        factor, offset = ops.reshape(factor, shape), ops.reshape(offset, shape)
    return x * factor + offset


def moving_update(moving, batch, momentum, valid):
    """`moving · momentum + batch · (1 − momentum)` where `valid`, else `moving`.

    `momentum` is a float (an exponential moving average) or a tensor of
    per-entry momenta (the cumulative average's n / (n + 1)). `valid` is a
    boolean per entry: one whose batch statistic is not finite (or was taken
    over no entry) keeps its moving value, so one bad batch cannot poison
    inference forever.
    """
    updated = moving * momentum + batch * (1.0 - momentum)
    return ops.where(valid, updated, moving)


def is_valid(variance, count=None, min_count=1):
    """Per entry: the batch statistics are finite and, if `count` is given,
    were taken over at least `min_count` values.

    Testing the variance covers the mean too: it is the mean of squared
    deviations from that mean, so a NaN or ±inf mean (or input) makes it NaN
    or inf. One test per step is all NaN safety adds to the statistics.
    """
    valid = ops.isfinite(variance)
    if count is not None:
        valid = ops.logical_and(valid, count >= min_count)
    return valid


def bessel(variance, count):
    """`σ²_B · m / (m − 1)`: the unbiased variance estimate from the biased
    batch variance over `m = count` entries (Algorithm 2 of the paper).

    `count` is a Python number (the layer refuses m < 2 before this) or a
    tensor (a mask's per-entry counts, or a size known only at run time);
    where such an m is below 2 no unbiased estimate exists, and the result is
    NaN, which the layer's validity test skips.
    """
    if isinstance(count, (int, float)):
        return variance * (count / (count - 1.0))
    corrected = variance * (count / ops.maximum(count - 1.0, 1.0))
    return ops.where(count >= 2.0, corrected, float("nan"))


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


def renorm_scale_and_offset(mean, variance, gamma, beta, renorm_mean, renorm_stddev, epsilon,
                            clipping):
    """The scale and offset of a renormalized output: with x̂ normalized by the
    batch statistics, `(x̂ · r + d) · γ + β = x̂ · (r · γ) + (d · γ + β)`."""
    r, d = renorm_correction(mean, variance, renorm_mean, renorm_stddev, epsilon, clipping)
    scale = r if gamma is None else r * gamma
    offset = d if gamma is None else d * gamma
    return scale, offset if beta is None else offset + beta


def train_forward(x, gamma, beta, epsilon, axes, reduction_axes, mask, moments_fn=moments,
                  correction=None):
    """Training-mode forward pass on the generic path (Algorithm 1).

    Args:
        correction: optional `(mean, variance, gamma, beta) -> (scale, offset)`
            that replaces γ and β from the batch statistics (Batch
            Renormalization, see `renorm_scale_and_offset`).

    Returns:
        `(outputs, mean, variance, count)`; the statistics feed the moving update.
    """
    mean, variance, count = moments_fn(x, reduction_axes, mask)
    if correction is not None:
        gamma, beta = correction(mean, variance, gamma, beta)
    outputs = normalize(x, mean, variance, gamma, beta, epsilon, axes)
    return outputs, mean, variance, count


def ghost_view(x, k):
    """`x` of shape (N, …) as (k, N/k, …): entry [i, g] is sample i·N/k + g.

    Ghost batch g is then the k samples g, g + N/k, g + 2N/k, …: strided, not
    contiguous, which is how tf.keras groups them (it reshapes the batch axis
    the same way).
    """
    return ops.reshape(x, (k, -1) + tuple(ops.shape(x)[1:]))


def ghost_train_forward(x, gamma, beta, epsilon, axes, mask, k, moments_fn=moments,
                        correction=None, unbiased=False):
    """Ghost batch normalization (Hoffer, Hubara & Soudry 2017) in training mode.

    The batch of N samples is split into G = N/k ghost batches of k samples
    (see `ghost_view`), and each is normalized with its own statistics:

        y = γ · (x − μ_g) / sqrt(σ²_g + ε) + β     for x in ghost batch g

    The moving statistics take one update per real batch, from the mean over
    ghost batches of their statistics, (1/G) Σ_g μ_g and (1/G) Σ_g σ²_g (with
    a mask: each ghost batch weighted by its number of unmasked entries).
    With `unbiased`, each σ²_g is first multiplied by m_g / (m_g − 1).
    A `correction` (renorm) sees those averaged statistics.

    Returns:
        `(outputs, mean, variance, count)` as `train_forward`, the statistics
        being the averages over ghost batches; `count` (with a mask) is the
        number of unmasked entries over all ghost batches.
    """
    rank = len(x.shape)
    if mask is None and tuple(axes) == (rank - 1,):
        # Channels last: the batch as (k, G, S, C), the statistics reduced
        # over the non-adjacent axes 0 and 2 (in two stages on TensorFlow's
        # CPU kernels: see `reduce`).
        view = ops.reshape(x, (k, -1, _middle_size(x), x.shape[-1]))
        kept, reduction = (1, 3), (0, 2)
        ghost_mean = reduce(ops.mean, view, reduction)
        deviation = view - ops.stop_gradient(ops.expand_dims(ghost_mean, 1))
        ghost_variance = reduce(ops.mean, ops.square(deviation), reduction)
        ghost_count = None
    else:
        view = ghost_view(x, k)
        kept = (1,) + tuple(axis + 1 for axis in axes)
        reduction = tuple(i for i in range(rank + 1) if i not in kept)
        mask_view = None if mask is None else ghost_view(mask, k)
        ghost_mean, ghost_variance, ghost_count = moments_fn(view, reduction, mask_view)
    # Normalization uses each ghost batch's biased variance; the moving update
    # may take the unbiased one.
    update_variance = ghost_variance
    if unbiased:
        update_variance = bessel(ghost_variance, entries(view, reduction, ghost_count))
    if ghost_count is None:
        mean, variance = ops.mean(ghost_mean, axis=0), ops.mean(update_variance, axis=0)
        count = None
    else:
        total = ops.sum(ghost_count, axis=0)
        safe_total = ops.maximum(total, 1.0)
        mean = ops.sum(ghost_mean * ghost_count, axis=0) / safe_total
        # A ghost batch with no entry has weight 0 (and its NaN from Bessel's
        # 0/0 must not leak through 0 · NaN).
        weighted = ops.where(ghost_count > 0, update_variance * ghost_count, 0.0)
        variance = ops.sum(weighted, axis=0) / safe_total
        count = total
    if correction is not None:
        gamma, beta = correction(mean, variance, gamma, beta)
    outputs = normalize(view, ghost_mean, ghost_variance, gamma, beta, epsilon, kept)
    return ops.reshape(outputs, ops.shape(x)), mean, variance, count


def _middle_size(x):
    """The product of the axes between the batch axis and the last one (1 for rank 2)."""
    size = 1
    for axis in range(1, len(x.shape) - 1):
        size = size * (x.shape[axis] if x.shape[axis] is not None else ops.shape(x)[axis])
    return size


def entries(x, reduction_axes, count=None):
    """m, the number of entries behind each statistic: `count` when given (a
    mask), else the size of the reduced axes, a Python int when it is known."""
    if count is not None:
        return count
    m = 1
    for axis in reduction_axes:
        m = m * (x.shape[axis] if x.shape[axis] is not None else ops.shape(x)[axis])
    return m if isinstance(m, int) else ops.cast(m, x.dtype)


def infer_forward(x, mean, variance, gamma, beta, epsilon, axes):
    """Inference-mode forward pass on the generic path."""
    return normalize(x, mean, variance, gamma, beta, epsilon, axes)
