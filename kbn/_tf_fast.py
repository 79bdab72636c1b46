"""The TensorFlow fast path: the batch-norm math in TensorFlow's fused kernel.

Keras 3's batch norm (and `_generic`) is a chain of small ops; without XLA each
one is a separate pass over the tensor. `FusedBatchNormV3` takes the
statistics, normalizes, and (in its gradient) computes dx, dγ and dβ in a few
passes, so it does the same math with less memory traffic.

It serves a float32 input whose channel axis is the last one, of any rank >= 2
(reshaped to the 4-D NHWC layout the kernel wants; the reshape is free), when
there is no mask, no cross-replica synchronization and no renorm. `supports`
says when; everything else stays on `_generic`. The functions have
`_generic.train_forward` / `_generic.infer_forward`'s signatures and numbers.
"""

import types

import keras
import tensorflow as tf

from kbn import _generic

# cuDNN (the kernel on GPUs) refuses epsilon below 1e-5; TensorFlow's own
# wrapper clamps to this value. kbn never changes a user's epsilon, so a smaller
# one goes to the generic path instead.
_MIN_EPSILON = 1.001e-5

# On CPU each fused call costs about 0.5 ms whatever its size (forward and
# backward each set up a oneDNN primitive): below about 1e5 elements the
# generic ops are quicker (benchmarks: 60×100 took 1.2 ms fused vs 0.75 ms
# generic, 1024×100 the same both ways). Smaller tensors take `_generic`.
MIN_FUSED_ELEMENTS = 1 << 17


def supports(x, training, mask, axis, epsilon, synchronized=False, renorm=False):
    """Whether this module computes the same numbers as `_generic` for this call.

    Args:
        x: the (already upcast) input tensor.
        training: True for training mode.
        mask: the mask the layer would pass on, or None.
        axis: the non-negative channel axis.
        epsilon: the layer's epsilon.
        synchronized: the layer's `synchronized` (global-batch statistics).
        renorm: the layer's `renorm`.

    Returns:
        True when `train_forward` (if `training`) or `infer_forward` of this
        module may replace `_generic`'s.
    """
    rank = len(x.shape)
    return (
        keras.backend.backend() == "tensorflow"
        and x.dtype == tf.float32
        and rank >= 2
        and axis == rank - 1
        and x.shape[-1] is not None
        and epsilon >= _MIN_EPSILON
        and mask is None
        and not (training and (synchronized or renorm))
        # Inside an XLA function the fused op is lowered back to elementwise
        # math; the benchmark shows that pays for rank-4 inputs (0.4–0.95× of
        # Keras) but not for merged ranks (1.0–1.4×), which XLA fuses as well.
        and not (rank != 4 and _in_xla_function())
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


def _scale_and_offset(gamma, beta, channels):
    scale = tf.ones([channels], tf.float32) if gamma is None else gamma
    offset = tf.zeros([channels], tf.float32) if beta is None else beta
    return scale, offset


def _by_size(x, fused, generic):
    """`fused()` for tensors of at least MIN_FUSED_ELEMENTS, else `generic()`.

    Decided while tracing when the size is static; otherwise (a `None` batch
    axis, as in `fit()`) by a `tf.cond` on the runtime size.
    """
    size = x.shape.num_elements()
    if size is not None:
        return fused() if size >= MIN_FUSED_ELEMENTS else generic()
    return tf.cond(tf.size(x) >= MIN_FUSED_ELEMENTS, fused, generic)


def train_forward(x, gamma, beta, epsilon, axis, reduction_axes, mask, moments_fn=None):
    """Training-mode forward pass: the fused kernel for large tensors (see `supports`)."""
    return _by_size(
        x,
        lambda: fused_train_forward(x, gamma, beta, epsilon),
        lambda: _generic.train_forward(x, gamma, beta, epsilon, axis, reduction_axes, None),
    )


def infer_forward(x, mean, variance, gamma, beta, epsilon, axis):
    """Inference-mode forward pass: the fused kernel for large tensors (see `supports`)."""
    return _by_size(
        x,
        lambda: fused_infer_forward(x, mean, variance, gamma, beta, epsilon),
        lambda: _generic.infer_forward(x, mean, variance, gamma, beta, epsilon, axis),
    )


def fused_train_forward(x, gamma, beta, epsilon, axis=None, reduction_axes=None, mask=None,
                        moments_fn=None):
    """Training-mode forward pass in the fused kernel, whatever the size.

    Returns:
        `(outputs, mean, variance, count)` as `_generic.train_forward`: the
        variance is the biased (1/m) one.
    """
    channels = x.shape[-1]
    scale, offset = _scale_and_offset(gamma, beta, channels)
    empty = tf.constant([], tf.float32)
    result = tf.raw_ops.FusedBatchNormV3(
        x=_as_nhwc(x), scale=scale, offset=offset, mean=empty, variance=empty,
        epsilon=epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True,
    )
    count = tf.cast(tf.size(x) // channels, tf.float32)
    # The kernel reports the Bessel-corrected variance, Σ(x − μ)² / (m − 1);
    # the moving update wants the biased one, Σ(x − μ)² / m (for m = 1 the
    # kernel reports 0, which stays 0). An empty batch (m = 0) gets NaN from
    # the kernel and 0 from `_generic`: report 0, as `_generic` does.
    nonempty = count > 0.0
    mean = tf.where(nonempty, result.batch_mean, 0.0)
    variance = tf.where(nonempty, result.batch_variance * ((count - 1.0) / count), 0.0)
    outputs = tf.reshape(result.y, tf.shape(x))
    return outputs, mean, variance, tf.fill([channels], count)


def fused_infer_forward(x, mean, variance, gamma, beta, epsilon, axis=None):
    """Inference-mode forward pass in the fused kernel, whatever the size."""
    scale, offset = _scale_and_offset(gamma, beta, x.shape[-1])
    result = tf.raw_ops.FusedBatchNormV3(
        x=_as_nhwc(x), scale=scale, offset=offset, mean=mean, variance=variance,
        epsilon=epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=False,
    )
    return tf.reshape(result.y, tf.shape(x))



# The fused kernel at every size, with the kernel-module interface: what
# `KBN_PATH=fast` selects, so the parity suite's small tensors exercise it too.
always_fused = types.SimpleNamespace(
    train_forward=fused_train_forward, infer_forward=fused_infer_forward
)
