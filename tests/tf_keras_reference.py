"""tf.keras 2 (the `tf_keras` package) as a reference for what Keras 3 dropped:
ghost batch norm (`virtual_batch_size`) and `axis=[...]`.

tf_keras runs on TensorFlow whatever `KERAS_BACKEND` says, so it checks kbn
on every backend. Its weights have other shapes than kbn's (full rank with
several axes, one axis more with ghost batches); they copy across with a
reshape.
"""

import numpy as np
import tensorflow as tf
import tf_keras

CONFIG_KEYS = ("axis", "momentum", "epsilon", "center", "scale", "renorm", "renorm_clipping",
               "renorm_momentum", "virtual_batch_size")


def twin(layer, input_shape):
    """A built tf_keras BatchNormalization with `layer`'s config and weights."""
    config = {key: getattr(layer, key) for key in CONFIG_KEYS}
    config["axis"] = list(layer.axis) if isinstance(layer.axis, list) else layer.axis
    reference = tf_keras.layers.BatchNormalization(**config)
    reference.build(input_shape)
    copy_weights(layer, reference)
    return reference


def copy_weights(source, target):
    """Copies weights by name, reshaped to the target's shapes (either direction)."""
    values = {w.name.split("/")[-1].split(":")[0]: np.asarray(w.numpy()) for w in source.weights}
    for weight in target.weights:
        name = weight.name.split("/")[-1].split(":")[0]
        weight.assign(np.reshape(values[name], weight.shape))


def weights(layer, shape):
    """tf_keras's weights by name, reshaped to kbn's `shape`."""
    return {w.name.split("/")[-1].split(":")[0]: np.reshape(w.numpy(), shape)
            for w in layer.weights}


def step(layer, x, upstream, training, learning_rate=0.1):
    """One forward/backward pass of Σ upstream · y, then SGD on γ and β if training;
    as `layer_pairs.step`, gradients reshaped to γ's shape in kbn."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * upstream)
    variables = list(layer.trainable_variables)
    grads = tape.gradient(loss, [x] + variables)
    result = {"y": y.numpy(), "dx": grads[0].numpy()}
    for variable, grad in zip(variables, grads[1:]):
        result["d" + variable.name.split("/")[-1].split(":")[0]] = grad.numpy()
        if training:
            variable.assign_sub(learning_rate * grad)
    return result
