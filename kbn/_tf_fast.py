"""The TensorFlow fast path: the batch-norm math in TensorFlow's fused kernel.

Keras 3's batch norm (and `_generic`) is a chain of small ops; without XLA each
one is a separate pass over the tensor. `FusedBatchNormV3` takes the
statistics, normalizes, and (in its gradient) computes dx, dγ and dβ in a few
passes, so it does the same math with less memory traffic.

It serves a float32 input whose channel axis is the last one, of any rank >= 2
(reshaped to the 4-D NHWC layout the kernel wants; the reshape is free), when
there is no mask and no cross-replica synchronization (renorm never reaches
a kernel module, nor ghost batches with a mask). `supports` says when;
everything else stays on `_generic`. Within what it serves, `train_forward`,
`ghost_train_forward` and `infer_forward` (with `_generic`'s signatures and
numbers) pick by what the benchmark measured fastest:

- the fused kernel for tensors of MIN_FUSED_ELEMENTS or more (in inference,
  from MIN_FUSED_INFER_ELEMENTS to MAX_FUSED_INFER_ELEMENTS);
- the generic ops for smaller ones (the fused call has a fixed cost);
- for ghost batches, the fused kernel on a transposed view whose channels
  are the (ghost batch, channel) pairs, from MIN_FUSED_ELEMENTS too;
- inside `jit_compile=True`, statistics by matrix products for tall tensors
  (MIN_ROWS_PER_CHANNEL rows per channel or more, up to MAX_MATMUL_CHANNELS
  channels), otherwise the generic ops, which XLA fuses.
"""

import types

import keras
import tensorflow as tf

from kbn import _generic, _tf_compiled


def _onednn_enabled():
    """Whether this TensorFlow runs its oneDNN CPU kernels (`TF_ENABLE_ONEDNN_OPTS`,
    whose default depends on the CPU), as TensorFlow itself reports it."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow without the probe: read the switch itself
        import os

        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() in ("1", "true")
    return bool(_pywrap_util_port.IsMklEnabled())


# Read once: oneDNN is switched on or off when TensorFlow loads, and which
# kernel is fastest depends on it (see `train_forward`).
ONEDNN = _onednn_enabled()

# cuDNN (the kernel on GPUs) refuses epsilon below 1e-5; TensorFlow's own
# wrapper clamps to this value. kbn never changes a user's epsilon, so a smaller
# one goes to the generic path instead.
_MIN_EPSILON = 1.001e-5

# On CPU each fused call has a fixed cost of about 0.5–1 ms (forward and
# backward each set up a oneDNN primitive): for small tensors the generic ops
# are quicker. Training step, fused vs generic vs Keras, measured here:
# 512×100: 4.0 / 2.6 / 2.3 ms; 32×8×8×32: 4.0 / 4.1 / 5.1 ms;
# 1024×100: 2.1 / 3.2 / 3.7 ms. So tensors under 2^16 elements take `_generic`.
MIN_FUSED_ELEMENTS = 1 << 16
# Inference is two elementwise ops on the generic path, so the fixed cost
# weighs more: 1024×100 took 4.5 ms fused vs 2.7 ms for Keras, 512×512 3.6
# vs 3.9 ms. Inference takes the fused kernel from 2^18 elements.
MIN_FUSED_INFER_ELEMENTS = 1 << 18
# At the other end the generic multiply-add streams memory better: on
# 64×56×56×128 (25.7 M elements) fused inference took 56 ms against 47 ms
# for the generic ops and Keras, while 8192×2048 (2^24) still gained (0.5×).
MAX_FUSED_INFER_ELEMENTS = 1 << 24
NOMINAL_BATCH = 32  # Keras's default batch size

# Without oneDNN (TF_ENABLE_ONEDNN_OPTS=0) the compiled passes of
# `_tf_compiled` take training steps from MIN_COMPILED_ELEMENTS. Step / Keras's,
# compiled vs fused vs generic, measured on the loaded machine: 32×8×8×32
# (2^16) 1.41 / 1.22 / 1.13; 512×100 1.24 / 1.64 / 1.14; 1024×100 0.84 /
# 0.75 / 0.80 (a second Keras copy read 0.82 in that run); 4096×32 (2^17) 0.73 / 0.69 /
# 0.96; 96×24×24×48 0.61 / 0.72 / 0.93 (quiet machine, final code: compiled
# 0.39). The fused kernel's gradient is a slow Eigen loop there, so above
# the threshold the compiled passes win by more the larger the tensor.
# (The MIN_FUSED_* measurements above are with oneDNN.)
MIN_COMPILED_ELEMENTS = 1 << 17
# With oneDNN, ghost batches take "fused" (the kernel on a transposed view) or
# "compiled". Ghost step / kbn's plain step, 96×24×24×48 and 128×32×32×64,
# k = 16 and 32, oneDNN on: compiled 2.01–2.40 (2026-12-01), fused 1.83–2.09
# (2026-11-26). Without oneDNN both plain and ghost steps are compiled.
GHOST_KERNEL = "fused"

# Inside a jit_compile=True function XLA lowers the fused op back to plain
# math, and on CPU it compiles the reductions over the leading axes of a tall
# (rows, channels) tensor to slow loops: Keras's training step on
# 128×32×32×64 took 125 ms. Summing with a matrix product by a row of ones
# runs in the multi-threaded GEMM instead (69 ms). Over 256 channels (few
# rows per channel) XLA's reductions were as fast (8192×2048: 68 vs 72 ms).
MAX_MATMUL_CHANNELS = 256
# The products pay when the sums are long next to the number of channels.
# Compiled training step / Keras's, products vs XLA's reductions (Keras
# against a second copy of itself: 0.96–1.04), rows per channel in brackets:
# 32×14×14×16 (392) 1.01–1.09 vs 1.08–1.14; 16×16×16×32 (128) 0.84–0.94 vs
# 0.95–1.01; 4096×32 (128) 0.91–0.99 vs 0.97–1.03; 40×12×12×160 (36)
# 0.78–0.87 vs ~1; but 1024×100 (10) 1.04–1.12 vs 0.96–1.04 and 8×8×8×64 (8)
# 1.14–1.17 vs 0.98–1.01. Short, wide tensors keep XLA's reductions.
MIN_ROWS_PER_CHANNEL = 32


def supports(x, training, mask, axes, epsilon, synchronized=False):
    """Whether this module computes the same numbers as `_generic` for this call.

    Args:
        x: the (already upcast) input tensor.
        training: True for training mode.
        mask: the mask the layer would pass on, or None.
        axes: the non-negative channel axes.
        epsilon: the layer's epsilon.
        synchronized: the layer's `synchronized` (global-batch statistics).

    Returns:
        True when `train_forward` (if `training`) or `infer_forward` of this
        module may replace `_generic`'s.
    """
    rank = len(x.shape)
    return (
        keras.backend.backend() == "tensorflow"
        and x.dtype == tf.float32
        and rank >= 2
        and tuple(axes) == (rank - 1,)
        and x.shape[-1] is not None
        and epsilon >= _MIN_EPSILON
        and mask is None
        and not (training and synchronized)
    )


def _in_xla_function():
    """Whether the op being built goes into a `jit_compile=True` function."""
    return tf.__internal__.get_enclosing_xla_context() is not None


def _as_nhwc(x):
    """`x` in the kernel's 4-D NHWC layout: (batch, the other axes merged, 1, channels).

    The batch axis stays first because the CPU kernel (oneDNN) splits its work
    over it: merging everything into one row ran single-threaded, up to 2.5×
    slower on 2 cores.
    """
    if len(x.shape) == 4:
        return x
    shape = tf.shape(x)
    middle = tf.reduce_prod(shape[1:-1])  # 1 for rank 2
    return tf.reshape(x, tf.stack([shape[0], middle, 1, shape[-1]]))


def _by_size(x, fused, generic, min_elements=MIN_FUSED_ELEMENTS, max_elements=None):
    """`fused()` for tensors of `min_elements` up to `max_elements` (None: no
    limit), else `generic()`.

    Decided while tracing. A batch axis unknown then (`fit()` traces with
    None) counts as NOMINAL_BATCH samples, which keeps a run-time branch out
    of the graph; only when other axes are unknown too does a `tf.cond` on the
    run-time size decide.
    """
    size = x.shape.num_elements()
    per_sample = x.shape[1:].num_elements()
    if size is None and per_sample is not None:
        size = per_sample * NOMINAL_BATCH
    max_elements = max_elements or float("inf")
    if size is not None:
        return fused() if min_elements <= size <= max_elements else generic()
    size = tf.cast(tf.size(x), tf.float64)
    return tf.cond((size >= min_elements) & (size <= max_elements), fused, generic)


def train_forward(x, gamma, beta, epsilon, axes, reduction_axes, mask, moments_fn=None):
    """Training-mode forward pass (see `supports`): the fused kernel (oneDNN) or
    the compiled passes (no oneDNN) for large tensors; inside XLA, statistics by
    matrix products where that pays."""
    if _in_xla_function():
        def generic():
            return _generic.train_forward(x, gamma, beta, epsilon, axes, reduction_axes, None)

        channels = x.shape[-1]
        if channels > MAX_MATMUL_CHANNELS:
            return generic()
        # rows ≥ MIN_ROWS_PER_CHANNEL · channels ⟺ elements ≥ that · channels
        return _by_size(x, lambda: matmul_train_forward(x, gamma, beta, epsilon), generic,
                        min_elements=MIN_ROWS_PER_CHANNEL * channels * channels)
    kernel = fused_train_forward if ONEDNN else _tf_compiled.train_forward
    return _by_size(
        x,
        lambda: kernel(x, gamma, beta, epsilon),
        lambda: _generic.train_forward(x, gamma, beta, epsilon, axes, reduction_axes, None),
        min_elements=MIN_FUSED_ELEMENTS if ONEDNN else MIN_COMPILED_ELEMENTS,
    )


def infer_forward(x, mean, variance, gamma, beta, epsilon, axes):
    """Inference-mode forward pass: with oneDNN, the fused kernel for large
    tensors outside XLA; otherwise the generic multiply-add (one elementwise
    pass as Keras's; inside XLA, XLA fuses it). Kept a plain graph op either
    way, so exporters (SavedModel, TFLite, ONNX) see ordinary batch-norm math."""
    def generic():
        return _generic.infer_forward(x, mean, variance, gamma, beta, epsilon, axes)

    if _in_xla_function() or not ONEDNN:
        return generic()
    return _by_size(
        x,
        lambda: fused_infer_forward(x, mean, variance, gamma, beta, epsilon),
        generic,
        min_elements=MIN_FUSED_INFER_ELEMENTS, max_elements=MAX_FUSED_INFER_ELEMENTS,
    )


def fused_train_forward(x, gamma, beta, epsilon, axes=None, reduction_axes=None, mask=None,
                        moments_fn=None):
    """Training-mode forward pass in the fused kernel, whatever the size.

    Returns:
        `(outputs, mean, variance, None)` as `_generic.train_forward` without
        a mask: the variance is the biased (1/m) one.
    """
    channels = x.shape[-1]
    scale, offset = _tf_compiled.scale_and_offset(gamma, beta, channels)
    empty = tf.constant([], tf.float32)
    result = tf.raw_ops.FusedBatchNormV3(
        x=_as_nhwc(x), scale=scale, offset=offset, mean=empty, variance=empty,
        epsilon=epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True,
    )
    m = tf.cast(tf.size(x) // channels, tf.float32)
    # The kernel reports the Bessel-corrected variance, Σ(x − μ)² / (m − 1);
    # the moving update wants the biased one, Σ(x − μ)² / m. For m = 1 the
    # kernel reports 0, which stays 0; an empty batch (m = 0) gives NaN, as
    # the generic mean of nothing does, and the layer skips its update.
    variance = result.batch_variance * ((m - 1.0) / m)
    outputs = tf.reshape(result.y, tf.shape(x))
    return outputs, result.batch_mean, variance, None


def matmul_train_forward(x, gamma, beta, epsilon, axes=None, reduction_axes=None, mask=None,
                         moments_fn=None):
    """Training-mode forward pass with the per-channel sums as matrix products.

    The input as a (rows, channels) matrix; Σ over rows = a row of ones times
    it. Two passes as in `_generic.moments`: the mean, then the mean of squared
    deviations. Meant for XLA (see MIN_ROWS_PER_CHANNEL), correct anywhere.
    """
    channels = x.shape[-1]
    rows = tf.reshape(x, [-1, channels])
    ones = tf.ones([1, tf.shape(rows)[0]], x.dtype)
    m = tf.cast(tf.shape(rows)[0], x.dtype)
    mean = tf.matmul(ones, rows)[0] / m
    squares = tf.square(rows - tf.stop_gradient(mean))  # see `_generic.moments` on the gradient
    variance = tf.matmul(ones, squares)[0] / m
    outputs = _generic.normalize(x, mean, variance, gamma, beta, epsilon, (len(x.shape) - 1,))
    return outputs, mean, variance, None


def ghost_train_forward(x, gamma, beta, epsilon, axes, mask, k, moments_fn=None,
                        correction=None, unbiased=False):
    """Ghost batch norm in training mode (see `_generic.ghost_train_forward`):
    for large tensors outside XLA, the compiled passes (which need no
    transposes) or, with oneDNN, whichever of them and the fused kernel on a
    transposed view GHOST_KERNEL names; the generic ops otherwise. The layer
    sends masks and renorm to `_generic` directly."""
    def generic():
        return _generic.ghost_train_forward(x, gamma, beta, epsilon, axes, None, k,
                                            unbiased=unbiased)

    if _in_xla_function():
        return generic()
    kernel = fused_ghost_train_forward if ONEDNN and GHOST_KERNEL == "fused" else (
        _tf_compiled.ghost_train_forward)
    return _by_size(x, lambda: kernel(x, gamma, beta, epsilon, axes, None, k, unbiased=unbiased),
                    generic,
                    min_elements=MIN_FUSED_ELEMENTS if ONEDNN else MIN_COMPILED_ELEMENTS)


def fused_ghost_train_forward(x, gamma, beta, epsilon, axes=None, mask=None, k=None,
                              moments_fn=None, correction=None, unbiased=False):
    """Ghost batch norm in the fused kernel: every (ghost batch, channel) pair is
    one channel of the kernel.

    The batch viewed as (k, G, S, C) (ghost batch g = samples g, g + G, …,
    as `_generic.ghost_view`) is transposed to (k, S, G, C), so that the
    kernel's channels are the G·C pairs, normalized over k·S entries each; the
    output is transposed back. The kernel's variance is the Bessel-corrected
    one, which is what `unbiased` asks for; otherwise it is turned back into
    the biased one.
    """
    channels = x.shape[-1]
    ghosts = tf.shape(x)[0] // k
    view = tf.reshape(x, tf.stack([k, ghosts, -1, channels]))
    pairs = tf.transpose(view, [0, 2, 1, 3])
    rows = tf.shape(pairs)[1]
    scale, offset = _tf_compiled.scale_and_offset(gamma, beta, channels)
    empty = tf.constant([], tf.float32)
    result = tf.raw_ops.FusedBatchNormV3(
        x=tf.reshape(pairs, tf.stack([k, rows, 1, ghosts * channels])),
        scale=tf.tile(scale, [ghosts]), offset=tf.tile(offset, [ghosts]), mean=empty,
        variance=empty, epsilon=epsilon, exponential_avg_factor=1.0, data_format="NHWC",
        is_training=True,
    )
    m = tf.cast(k * rows, tf.float32)
    variance = result.batch_variance if unbiased else result.batch_variance * ((m - 1.0) / m)
    mean = tf.reduce_mean(tf.reshape(result.batch_mean, [-1, channels]), axis=0)
    variance = tf.reduce_mean(tf.reshape(variance, [-1, channels]), axis=0)
    outputs = tf.transpose(tf.reshape(result.y, tf.shape(pairs)), [0, 2, 1, 3])
    return tf.reshape(outputs, tf.shape(x)), mean, variance, None


def fused_infer_forward(x, mean, variance, gamma, beta, epsilon, axes=None):
    """Inference-mode forward pass in the fused kernel, whatever the size."""
    scale, offset = _tf_compiled.scale_and_offset(gamma, beta, x.shape[-1])
    result = tf.raw_ops.FusedBatchNormV3(
        x=_as_nhwc(x), scale=scale, offset=offset, mean=mean, variance=variance,
        epsilon=epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=False,
    )
    if len(x.shape) == 4:
        # No reshape back for 4-D inputs: it changes nothing, yet its Shape op sits
        # between the convolution and the batch norm, so TFLite and tf2onnx no
        # longer fold the batch norm into the convolution (a MUL and an ADD per layer).
        return result.y
    return tf.reshape(result.y, tf.shape(x))



# Each kernel at every size, with the kernel-module interface, for `KBN_PATH`
# (so the parity suite's small tensors exercise them too): `fused` and
# `compiled` name one, `fast` the one this configuration's `auto` takes.
always_fused = types.SimpleNamespace(
    train_forward=fused_train_forward, infer_forward=fused_infer_forward,
    ghost_train_forward=fused_ghost_train_forward,
)
always_compiled = types.SimpleNamespace(
    train_forward=_tf_compiled.train_forward, infer_forward=_generic.infer_forward,
    ghost_train_forward=_tf_compiled.ghost_train_forward,
)
FORCED = {"fused": always_fused, "compiled": always_compiled,
          "fast": always_fused if ONEDNN else always_compiled}
