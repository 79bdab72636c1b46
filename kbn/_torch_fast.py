"""The PyTorch fast path: the batch-norm math in ATen's native batch norm.

Keras 3's batch norm on the torch backend (and `_generic`) is a chain of small
eager ops, each a pass over the tensor and a fresh allocation. ATen's native
batch norm (what `torch.nn.functional.batch_norm` runs on CPU) normalizes in
one pass, and its backward computes dx, dγ and dβ in two; `torch.native_batch_norm`
also returns the batch mean and 1/sqrt(σ²_B + ε), which the moving update needs.

It serves a float32 input with one channel axis, the last one or axis 1, of
any rank >= 2, with no mask and no cross-replica synchronization (renorm never
reaches a kernel module). `supports` says when; everything else stays on
`_generic`. The op wants the channels on axis 1; the two
layouts reach it by views, never by a copy:

- channels-first, (N, C, …): as (N, C, L), contiguous. ATen's statistics for
  this layout accumulate in float64, so the op runs whole (`torch.native_batch_norm`
  in training mode), and the biased variance for the moving update follows
  from the returned 1/sqrt(σ²_B + ε) without another pass (`_variance_from_invstd`).
- channels-last, (…, C): as (rows, C), which ATen's CPU kernel handles in its
  channels-last layout (rank 2 is its native case; a (N, C, H, W) permute of
  an NHWC tensor takes the same kernel). But there its statistics accumulate
  in float32, per thread, row after row: measured against float64 with 2
  threads, the variance was off by 2.5e-5 (relative) at 200 K rows per
  channel, and on 1e4 + N(0, 1) data by a factor of 56 (the running sum of
  ~1e4-sized terms loses the mean). So the statistics come from `_generic.moments`' two passes
  (torch's pairwise sums), and ATen does the rest: the normalization in its
  inference mode with those statistics, and the training-mode gradient
  (`native_batch_norm_backward` with them as the saved statistics), joined by
  `_NormalizeWithStatistics`, an autograd function.

`train_forward` / `infer_forward` (with `_generic`'s signatures and numbers)
use ATen from MIN_NATIVE_ELEMENTS elements and `_generic` below;
`always_fused` uses ATen at every size (`KBN_PATH=fast`). Ghost batches stay
on `_generic` (see `ghost_train_forward`).
"""

import types

import keras
import torch

from kbn import _generic

# ATen's CPU batch norm splits its loops over the threads at every size (grain
# 1), where torch's elementwise ops and reductions stay on the calling thread
# below 2^15 elements (ATen's GRAIN_SIZE). On a loaded machine a small call can
# then wait for a sleeping worker thread: inside the layer's training step on
# 8×4, with 5–6 runnable processes on the 2 cores, the forward op took 7 ms and
# its backward 21 ms (µs when the threads are awake). With the threads awake
# ATen is quicker at every size: kernel forward + backward / Keras's layer
# step, ATen vs generic, one thread, 8×4 0.27 vs 0.40, 2048×8 0.32 vs 0.49,
# 1024×32 0.36 vs 0.46, 1024×100 0.29 vs 0.42, 64×16×16×32 0.33 vs 0.84,
# 64×56×56×128 0.36 vs 0.92; forward-only inference 2048×8 0.08 vs 0.14,
# 1024×100 0.20 vs 0.22, 64×56×56×128 0.83 vs 1.54. The gain below 2^15 is
# a few hundredths of a millisecond, not worth the stalls: the generic ops run
# there.
MIN_NATIVE_ELEMENTS = 1 << 15


def supports(x, training, mask, axes, epsilon, synchronized=False):
    """Whether this module computes the same numbers as `_generic` for this call.

    Args:
        x: the (already upcast) input tensor.
        training: True for training mode (batch statistics).
        mask: the mask the layer would pass on, or None.
        axes: the non-negative channel axes (a tuple, or one int).
        epsilon: the layer's epsilon (any value > 0: ATen has no lower bound
            on CPU, and on GPUs it takes cuDNN only where cuDNN allows it).
        synchronized: the layer's `synchronized` (global-batch statistics).

    Returns:
        True when `train_forward` (if `training`) or `infer_forward` of this
        module may replace `_generic`'s.
    """
    del training, epsilon  # every mode and epsilon is served
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    rank = len(x.shape)
    return (
        keras.backend.backend() == "torch"
        and isinstance(x, torch.Tensor)
        and x.dtype == torch.float32
        and rank >= 2
        and len(axes) == 1
        and axes[0] in (1, rank - 1)
        and x.numel() > 0
        and mask is None
        and not synchronized
    )


def _channels_last(x, axes):
    """Whether the channel axis is the last one (rank 2 counts as channels-last)."""
    axis = axes if isinstance(axes, int) else axes[0]
    return axis == x.dim() - 1


def _as_rows(x):
    """A channels-last `x` as (rows, C): a view when `x` is contiguous."""
    return x.reshape(-1, x.shape[-1])


def _as_ncl(x):
    """A channels-first `x` as contiguous (N, C, L), the layout whose ATen
    statistics accumulate in float64 (a channels_last-strided 4-D tensor is
    copied here rather than sent to the float32 kernel)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _two_pass_moments(rows):
    """Per-column mean and biased variance of a (rows, C) tensor: `_generic.moments`'
    two passes (μ = mean(x), then σ² = mean((x − μ)²)), squaring in place."""
    mean = torch.mean(rows, 0)
    return mean, torch.mean(torch.sub(rows, mean).square_(), 0)


def _variance_from_invstd(invstd, epsilon):
    """σ²_B = 1 / invstd² − ε, from ATen's saved 1/sqrt(σ²_B + ε).

    Computed in float64: the float32 invstd carries a relative rounding of at
    most 2⁻²⁴, so 1/invstd² is within 2⁻²³ · (σ²_B + ε) of the exact value, and
    σ²_B within that much too (relative 1.2e-7 · (1 + ε/σ²_B); absolute
    1.2e-10 for σ²_B ≪ ε = 1e-3). Rounding can take a zero variance a hair
    below zero, hence the clamp.
    """
    variance = 1.0 / torch.square(invstd.double()) - epsilon
    return variance.clamp_min(0.0).to(invstd.dtype)


class _NormalizeWithStatistics(torch.autograd.Function):
    """y = γ·(x − μ)·invstd + β on a (rows, C) tensor, with the gradient of
    batch norm in training mode, where μ and invstd = 1/sqrt(σ² + ε) are the
    batch statistics of x (given, computed by the caller).

    Forward: ATen's inference-mode batch norm, one pass. Backward: ATen's
    training-mode batch-norm gradient with (μ, invstd) as the saved statistics:

        dβ = Σ dy,  dγ = Σ dy·x̂,  dx = γ·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)),

    x̂ = (x − μ)·invstd, the sums and means over the rows of each channel.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, mean, variance, epsilon):
        outputs = torch.native_batch_norm(x, gamma, beta, mean, variance, False, 0.0, epsilon)[0]
        invstd = torch.rsqrt(variance + epsilon)
        ctx.save_for_backward(x, gamma, mean, invstd)
        ctx.epsilon = epsilon
        return outputs

    @staticmethod
    def backward(ctx, upstream):
        x, gamma, mean, invstd = ctx.saved_tensors
        wanted = [ctx.needs_input_grad[0], gamma is not None and ctx.needs_input_grad[1],
                  ctx.needs_input_grad[2]]
        dx, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
            upstream.contiguous(), x, gamma, None, None, mean, invstd, True, ctx.epsilon, wanted
        )
        return dx, dgamma, dbeta, None, None, None


def native_train_forward(x, gamma, beta, epsilon, axes, reduction_axes=None, mask=None,
                         moments_fn=None, correction=None):
    """Training-mode forward pass in ATen's batch norm, whatever the size.

    Returns:
        `(outputs, mean, variance, None)` as `_generic.train_forward` without
        a mask: the variance is the biased (1/m) one. The statistics carry no
        gradient (they feed the moving update only).
    """
    if correction is not None:  # renorm needs the statistics before normalizing
        return _generic.train_forward(x, gamma, beta, epsilon, axes, reduction_axes, mask,
                                      correction=correction)
    if _channels_last(x, axes):
        rows = _as_rows(x)
        with torch.no_grad():
            mean, variance = _two_pass_moments(rows)
        outputs = _NormalizeWithStatistics.apply(rows, gamma, beta, mean, variance, epsilon)
        return outputs.reshape(x.shape), mean, variance, None
    outputs, mean, invstd = torch.native_batch_norm(
        _as_ncl(x), gamma, beta, None, None, True, 0.0, epsilon
    )
    variance = _variance_from_invstd(invstd.detach(), epsilon)
    return outputs.reshape(x.shape), mean.detach(), variance, None


def native_infer_forward(x, mean, variance, gamma, beta, epsilon, axes):
    """Inference-mode forward pass in ATen's batch norm, whatever the size:
    y = x·k + (β − μ·k) with k = γ/sqrt(σ² + ε), one pass."""
    view = _as_rows(x) if _channels_last(x, axes) else _as_ncl(x)
    outputs = torch.native_batch_norm(view, gamma, beta, mean, variance, False, 0.0, epsilon)[0]
    return outputs.reshape(x.shape)


def train_forward(x, gamma, beta, epsilon, axes, reduction_axes, mask, moments_fn=None,
                  correction=None):
    """Training-mode forward pass (see `supports`): ATen from MIN_NATIVE_ELEMENTS."""
    if x.numel() >= MIN_NATIVE_ELEMENTS:
        return native_train_forward(x, gamma, beta, epsilon, axes, reduction_axes, mask,
                                    correction=correction)
    return _generic.train_forward(x, gamma, beta, epsilon, axes, reduction_axes, mask,
                                  correction=correction)


def infer_forward(x, mean, variance, gamma, beta, epsilon, axes):
    """Inference-mode forward pass: ATen from MIN_NATIVE_ELEMENTS."""
    if x.numel() >= MIN_NATIVE_ELEMENTS:
        return native_infer_forward(x, mean, variance, gamma, beta, epsilon, axes)
    return _generic.infer_forward(x, mean, variance, gamma, beta, epsilon, axes)


def ghost_train_forward(x, gamma, beta, epsilon, axes, mask, k, moments_fn=None,
                        correction=None, unbiased=False):
    """Ghost batch norm in training mode: always `_generic.ghost_train_forward`.

    ATen normalizes per entry of axis 1; a ghost batch's (ghost batch, channel)
    pairs are strided in memory (ghost batch g is samples g, g + N/k, …), so
    no view of the input puts them on one axis, and a transposed copy in and
    out would cost what the native op saves.
    """
    return _generic.ghost_train_forward(x, gamma, beta, epsilon, axes, mask, k,
                                        correction=correction, unbiased=unbiased)


# ATen at every size, with the kernel-module interface: what `KBN_PATH=fast`
# selects, so the parity suite's small tensors exercise it too.
always_fused = types.SimpleNamespace(
    supports=supports, train_forward=native_train_forward, infer_forward=native_infer_forward,
    ghost_train_forward=ghost_train_forward,
)
FORCED = {"fast": always_fused, "fused": always_fused}  # `KBN_PATH` names for it
