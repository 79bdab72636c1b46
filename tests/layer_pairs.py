"""Builds a kbn layer and a Keras layer with the same random weights, and steps them.

Parity tests drive both through the same inputs and compare every output,
gradient and weight element by element.
"""

import keras

import kbn
from train.lesson.autodiff import call_with_gradients


def random_weights(layer, rng):
    """Non-trivial values for every weight of a built BN layer, keyed by name.

    γ has both signs, β and the means are offset from 0 and the variances from 1,
    so a bug that ignores any of them shows.
    """
    values = {}
    for weight in layer.weights:
        shape = weight.shape
        if weight.name == "gamma":
            values[weight.name] = rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)
        elif weight.name in ("beta", "moving_mean", "renorm_mean"):
            values[weight.name] = rng.normal(0.0, 1.0, shape)
        else:  # moving_variance, moving_stddev, renorm_stddev
            values[weight.name] = rng.uniform(0.5, 2.0, shape)
    if "moving_stddev" in values:  # keep Keras's invariant: variance = stddev² − ε
        eps = layer.epsilon
        values["moving_variance"] = values["moving_stddev"] ** 2 - eps
    return {name: v.astype("float32") for name, v in values.items()}


def make_pair(input_shape, rng, **config):
    """(kbn layer, Keras layer), built for `input_shape`, with the same random weights."""
    layers = (kbn.BatchNormalization(**config), keras.layers.BatchNormalization(**config))
    for layer in layers:
        layer.build(input_shape)
    weights = random_weights(layers[1], rng)
    for layer in layers:
        layer.set_weights([weights[w.name] for w in layer.weights])
    return layers


def weights_by_name(layer):
    return {w.name: keras.ops.convert_to_numpy(w.value) for w in layer.weights}


def step(layer, x, upstream, training, mask=None, learning_rate=0.1):
    """One forward/backward pass of Σ upstream · y; then SGD on γ and β if training.

    Gradients come from the backend's own autodiff (`train/lesson/autodiff.py`).

    Returns:
        dict with `y` and the gradients `dx` and `d<name>` of every trainable weight.
    """
    y, dx, grads = call_with_gradients(layer, x, upstream, training, mask)
    result = {"y": y, "dx": dx}
    for variable, grad in zip(layer.trainable_variables, grads):
        result["d" + variable.name] = grad
        if training:
            variable.assign(keras.ops.convert_to_numpy(variable.value) - learning_rate * grad)
    return result
