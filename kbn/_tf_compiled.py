"""Batch norm as two small XLA programs inside an ordinary TensorFlow graph.

Without oneDNN, TensorFlow's CPU `FusedBatchNormV3` and its gradient are
Eigen loops that run far below what the CPU can do (96×24×24×48 training
step: 13.5 ms forward and 23 ms gradient, against 4.6 and 5.1 ms with
oneDNN), and the generic ops pay one pass over memory per op. Here the
forward pass and the backward pass are each one `jit_compile=True`
function, called from the surrounding (not compiled) graph: XLA fuses each
pass's elementwise work into its reductions, so the step reads and writes
the tensor about as often as the math needs (see `benchmarks.layer_steps`'s
floor). The gradient is the closed form of Algorithm 1's backward pass,
tied to the forward pass by `tf.custom_gradient`:

    x̂ = (x − μ) / s,   s = sqrt(σ² + ε)
    dβ = Σ dy,   dγ = Σ dy·x̂
    dx = (γ / s) · (dy − dβ/m − x̂ · dγ/m)

(sums over the m entries of a channel). A gradient to the returned batch
statistics is not propagated, as TensorFlow's fused kernel does not: they
feed only the moving update.

Statistics take two passes, as `_generic.moments` (μ, then the mean of
squared deviations).

It serves what `_tf_fast` hands it: float32, channels last, no mask, no
synchronization; ghost batches as the strided (k, G, S, C) view of
`_generic.ghost_view`, reduced over axes 0 and 2, with no transposes.
XLA compiles each pass once per input shape (a fit's last, smaller batch
costs one more compile). Inference stays on plain graph ops (`_tf_fast`), so
exported models hold no compiled functions.
"""

import tensorflow as tf


def _ghost_moments(view):
    """Mean and biased variance of a (k, G, S, C) view over axes 0 and 2: (G, C) each.

    Each reduction is a pass of its own on XLA's CPU backend (sibling
    reductions are not fused): a third one, −(mean of the deviations)²,
    which would correct float32's rounding of μ exactly, cost 19.1 against
    14.7 ms on the 96×24×24×48 training step without oneDNN, so the
    variance is `_generic.moments`' two-pass one.
    """
    mean = tf.reduce_mean(view, axis=(0, 2), keepdims=True)
    variance = tf.reduce_mean(tf.square(view - mean), axis=(0, 2), keepdims=True)
    return mean, variance


def _forward(view, gamma, beta, epsilon):
    mean, variance = _ghost_moments(view)
    inverse = tf.math.rsqrt(variance + epsilon)
    outputs = (view - mean) * (gamma * inverse) + beta
    return outputs, mean, variance, inverse


def _backward(dy, view, gamma, mean, inverse):
    m = tf.cast(tf.shape(view)[0] * tf.shape(view)[2], view.dtype)
    normalized = (view - mean) * inverse
    dbeta = tf.reduce_sum(dy, axis=(0, 2), keepdims=True)
    dgamma = tf.reduce_sum(dy * normalized, axis=(0, 2), keepdims=True)
    dx = (gamma * inverse) * (dy - dbeta / m - normalized * (dgamma / m))
    return dx, dgamma, dbeta


_compiled_forward = tf.function(_forward, jit_compile=True, reduce_retracing=True)
_compiled_backward = tf.function(_backward, jit_compile=True, reduce_retracing=True)


def _normalize_view(view, gamma, beta, epsilon):
    """y of a (k, G, S, C) view, each (ghost batch, channel) normalized over axes 0 and 2,
    and the per-ghost-batch statistics, shaped (G, C).

    `gamma` and `beta` are (C,) tensors; their gradients are summed over ghost batches.
    """
    channels = view.shape[-1]

    @tf.custom_gradient
    def normalize(view, gamma, beta):
        outputs, mean, variance, inverse = _compiled_forward(
            view, tf.reshape(gamma, [1, 1, 1, channels]), tf.reshape(beta, [1, 1, 1, channels]),
            epsilon)

        def gradient(dy, unused_dmean, unused_dvariance):
            dx, dgamma, dbeta = _compiled_backward(
                dy, view, tf.reshape(gamma, [1, 1, 1, channels]), mean, inverse)
            return (dx, tf.reduce_sum(tf.reshape(dgamma, [-1, channels]), 0),
                    tf.reduce_sum(tf.reshape(dbeta, [-1, channels]), 0))

        return (outputs, tf.reshape(mean, [-1, channels]),
                tf.reshape(variance, [-1, channels])), gradient

    return normalize(view, gamma, beta)


def scale_and_offset(gamma, beta, channels):
    """γ and β as tensors, ones / zeros for `scale=False` / `center=False` (None)."""
    scale = tf.ones([channels], tf.float32) if gamma is None else gamma
    offset = tf.zeros([channels], tf.float32) if beta is None else beta
    return scale, offset


def train_forward(x, gamma, beta, epsilon, axes=None, reduction_axes=None, mask=None,
                  moments_fn=None):
    """Training-mode forward pass (channels last), `_generic.train_forward`'s numbers.

    Returns:
        `(outputs, mean, variance, None)`, the variance the biased (1/m) one.
    """
    channels = x.shape[-1]
    scale, offset = scale_and_offset(gamma, beta, channels)
    view = tf.reshape(x, [1, 1, -1, channels])
    outputs, mean, variance = _normalize_view(view, scale, offset, epsilon)
    return tf.reshape(outputs, tf.shape(x)), mean[0], variance[0], None


def ghost_train_forward(x, gamma, beta, epsilon, axes=None, mask=None, k=None, moments_fn=None,
                        correction=None, unbiased=False):
    """Ghost batch norm in training mode (channels last, no mask, no renorm), as
    `_generic.ghost_train_forward`: ghost batch g holds samples g, g + N/k, ….

    Returns:
        `(outputs, mean, variance, None)`: the statistics averaged over ghost
        batches, each ghost variance first made unbiased if `unbiased`.
    """
    channels = x.shape[-1]
    scale, offset = scale_and_offset(gamma, beta, channels)
    view = tf.reshape(x, tf.stack([k, tf.shape(x)[0] // k, -1, channels]))
    outputs, ghost_mean, ghost_variance = _normalize_view(view, scale, offset, epsilon)
    if unbiased:
        m = tf.cast(k * tf.shape(view)[2], tf.float32)
        ghost_variance = ghost_variance * (m / (m - 1.0))
    mean = tf.reduce_mean(ghost_mean, axis=0)
    variance = tf.reduce_mean(ghost_variance, axis=0)
    return tf.reshape(outputs, tf.shape(x)), mean, variance, None
