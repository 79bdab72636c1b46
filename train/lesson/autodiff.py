"""One layer call with its gradients, taken by the backend's own autodiff.

`train.explain` checks its arithmetic through real layers with it, and the
parity suites (tests/) run on every Keras backend (`KERAS_BACKEND`); gradients
come from `tf.GradientTape` on TensorFlow, `jax.value_and_grad` over
`layer.stateless_call` on JAX (how Keras's JAX trainer differentiates a layer)
and `torch.autograd.grad` on PyTorch, never from one backend for all three.
"""

import keras
import numpy as np
from keras import ops


def call_with_gradients(layer, x, upstream, training, mask=None):
    """`layer(x)` and the gradients of Σ upstream · y.

    Args:
        layer: a built layer; its non-trainable state (moving statistics) is
            updated as a normal call updates it.
        x: the input (NumPy array or backend tensor).
        upstream: float32 NumPy array of `x`'s shape, dL/dy.
        training, mask: passed to the layer.

    Returns:
        `(y, dx, grads)`: NumPy arrays; `grads` lists dL/dw for each of
        `layer.trainable_variables`, in order.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax(layer, x, upstream, training, mask)
    if backend == "torch":
        return _torch(layer, x, upstream, training, mask)
    return _tensorflow(layer, x, upstream, training, mask)


def _loss(y, upstream):
    return ops.sum(ops.cast(y, "float32") * upstream)


def _tensorflow(layer, x, upstream, training, mask):
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training, mask=mask)
        loss = _loss(y, upstream)
    grads = tape.gradient(loss, [x] + list(layer.trainable_variables))
    return np.asarray(y), np.asarray(grads[0]), [np.asarray(g) for g in grads[1:]]


def _jax(layer, x, upstream, training, mask):
    import jax

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss_fn(x, trainable):
        y, state = layer.stateless_call(trainable, non_trainable, x, training=training, mask=mask)
        return _loss(y, upstream), (y, state)

    (_, (y, state)), (dx, grads) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        ops.convert_to_tensor(x), trainable
    )
    for variable, value in zip(layer.non_trainable_variables, state):
        variable.assign(value)
    return np.asarray(y), np.asarray(dx), [np.asarray(g) for g in grads]


def _torch(layer, x, upstream, training, mask):
    import torch

    x = ops.convert_to_tensor(x).detach().requires_grad_(True)
    y = layer(x, training=training, mask=mask)
    variables = [v.value for v in layer.trainable_variables]
    grads = torch.autograd.grad(_loss(y, ops.convert_to_tensor(upstream)), [x] + variables)

    def numpy(t):
        return ops.convert_to_numpy(t.detach())

    return numpy(y), numpy(grads[0]), [numpy(g) for g in grads[1:]]
