"""Sequential model builders with no BN, Keras's BN or kbn's BN.

    from train.data.models import build_model
    model = build_model("mlp", input_shape=(8, 8, 1), num_classes=10, bn="kbn", seed=1)
    model = build_model("cnn", input_shape=(28, 28, 1), num_classes=10, bn="keras", seed=1)

`bn_position="before"` puts BN between each hidden layer's linear part and its
non-linearity, z → BN(z) → g(BN(z)) (the paper's choice; the linear layer then
has no bias, since BN's β replaces it); `"after"` normalizes the activation,
z → g(z) → BN(g(z)). Those are the two approaches of the lecture notes.

Every kernel initializer is seeded from `seed` and BN's initializers are the
same in both BN classes (γ = 1, β = 0, moving mean 0, moving variance 1), so
the same seed gives the same initial weights whatever the `bn` choice.
The activation layers are named `act_1`, `act_2`, …; `hidden_activation_names`
lists them, e.g. for `kbn.callbacks.ActivationInputMonitor`.
"""

import keras

import kbn
from train.data.variants import BN_POSITIONS, MODELS, VARIANTS


def build_model(
    model,
    *,
    input_shape,
    num_classes,
    bn="none",
    seed=1,
    hidden=(100, 100, 100),
    activation="sigmoid",
    bn_position="before",
    bn_momentum=0.99,
    bn_epsilon=1e-3,
    bn_synchronized=False,
    dropout=0.0,
    init_scale=1.0,
):
    """Builds an uncompiled `keras.Sequential` classifier with a softmax output.

    Args:
        model: "mlp" (Dense layers of widths `hidden`) or "cnn" (one 3×3 conv
            block per entry of `hidden`, max pooling between blocks, then
            global average pooling).
        input_shape: Shape of one sample.
        num_classes: Width of the softmax output.
        bn: A name of `train.data.variants.VARIANTS`: "none", "keras"
            (keras.layers.BatchNormalization), "kbn", or kbn's layer with options.
        seed: Seeds every kernel initializer.
        hidden: mlp: hidden widths; cnn: filters of the conv blocks.
        activation: Hidden non-linearity (a Keras activation name).
        bn_position: "before" or "after" the non-linearity.
        bn_momentum, bn_epsilon: Passed to the BN layers.
        bn_synchronized: BN's `synchronized`: under a `tf.distribute` strategy,
            batch statistics over the global batch instead of each replica's slice.
        dropout: Rate of a `Dropout` layer at the end of each hidden block
            (after the activation, and after BN when it follows the
            activation); 0 adds none.
        init_scale: Every kernel's initial draws (Glorot uniform) times this.

    Returns:
        The built model.
    """
    if bn not in VARIANTS:
        raise ValueError(f"bn must be one of {tuple(VARIANTS)}, got {bn!r}")
    if bn_position not in BN_POSITIONS:
        raise ValueError(f"bn_position must be one of {BN_POSITIONS}, got {bn_position!r}")
    variant = VARIANTS[bn]
    use_bn = variant.layer is not None
    # Before the non-linearity BN's β takes over the bias.
    use_bias = not (use_bn and bn_position == "before")

    def normalization(index):
        layer_class = {"keras": keras.layers.BatchNormalization,
                       "kbn": kbn.BatchNormalization}[variant.layer]
        return layer_class(momentum=bn_momentum, epsilon=bn_epsilon,
                           synchronized=bn_synchronized, name=f"bn_{index}", **variant.options)

    layers = [keras.Input(shape=tuple(input_shape))]
    if model == "mlp":
        layers.append(keras.layers.Flatten(name="flatten"))
    elif model != "cnn":
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    for index, width in enumerate(hidden, start=1):
        initializer = _kernel_initializer(seed * 1000 + index, init_scale)
        if model == "mlp":
            linear = keras.layers.Dense(
                width, use_bias=use_bias, kernel_initializer=initializer, name=f"dense_{index}"
            )
        else:
            linear = keras.layers.Conv2D(
                width,
                3,
                padding="same",
                use_bias=use_bias,
                kernel_initializer=initializer,
                name=f"conv_{index}",
            )
        layers.append(linear)
        if use_bn and bn_position == "before":
            layers.append(normalization(index))
        layers.append(keras.layers.Activation(activation, name=f"act_{index}"))
        if use_bn and bn_position == "after":
            layers.append(normalization(index))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout, seed=seed * 1000 + index,
                                               name=f"dropout_{index}"))
        if model == "cnn" and index < len(hidden):
            layers.append(keras.layers.MaxPooling2D(name=f"pool_{index}"))
    if model == "cnn":
        layers.append(keras.layers.GlobalAveragePooling2D(name="pool"))
    layers.append(
        keras.layers.Dense(
            num_classes,
            activation="softmax",
            kernel_initializer=_kernel_initializer(seed * 1000, init_scale),
            name="output",
        )
    )
    return keras.Sequential(layers, name=f"{model}_{bn}")


def _kernel_initializer(seed, scale):
    """Glorot uniform, its draws times `scale`.

    Glorot uniform is `VarianceScaling(1, "fan_avg", "uniform")`, which draws
    U(−limit, limit) with limit = sqrt(3·scale/fan_avg); scale² gives the same
    draws times `scale`, with a built-in (savable) initializer.
    """
    if scale == 1:
        return keras.initializers.GlorotUniform(seed=seed)
    return keras.initializers.VarianceScaling(scale=scale**2, mode="fan_avg",
                                              distribution="uniform", seed=seed)


def hidden_activation_names(model):
    """Names of the hidden activation layers, first to last."""
    return [layer.name for layer in model.layers if layer.name.startswith("act_")]
