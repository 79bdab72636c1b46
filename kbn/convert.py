"""Swapping the batch-norm class of a model: Keras's layer to kbn's, and back.

    import kbn
    model = keras.applications.ResNet50(weights=None)
    kbn_model = kbn.convert(model)                  # every Keras BN → kbn.BatchNormalization
    keras_model = kbn.convert(kbn_model, to="keras")
"""

import inspect

import keras

from kbn import _bn_layers, _cloning
from kbn.batch_normalization import BatchNormalization

_CLASSES = {"kbn": BatchNormalization, "keras": keras.layers.BatchNormalization}


def convert(model, to="kbn"):
    """A copy of `model` whose batch-norm layers are all of one class.

    Every `keras.layers.BatchNormalization` becomes a `kbn.BatchNormalization`
    with the same config (name included) and weights (`to="kbn"`), or the
    reverse (`to="keras"`). Every other layer is copied with its weights, in
    nested Sequential and functional models too; the original is untouched.
    Both classes give the same outputs (to float32 rounding), so the copy
    predicts as the original did. A compiled model's copy is compiled with
    the same loss, metrics and optimizer settings (the optimizer starts
    afresh: its step count and slots are not copied).

    Args:
        model: A Sequential or functional Keras model.
        to: "kbn" or "keras".

    Returns:
        The converted copy.

    Raises:
        ValueError: `to` is unknown; the model is subclassed; a layer uses an
            option the target class lacks (to="keras": several axes,
            `momentum=None`, ...); or a batch-norm layer sits inside a custom
            layer whose contents cannot be rebuilt.
    """
    if to not in _CLASSES:
        raise ValueError(f"to must be one of {tuple(_CLASSES)}. Received: to={to!r}")
    _cloning.check_graph_model(model, "convert")
    target = _CLASSES[to]
    source = _CLASSES["keras" if to == "kbn" else "kbn"]

    def replace(layer):
        if isinstance(layer, source):
            return target.from_config(config_for(layer, target))
        return None

    copy, pairs = _cloning.clone_with(model, replace)
    for layer, new in pairs:
        if isinstance(layer, source):
            new.set_weights(layer.get_weights())
    left = [layer.name for layer in _bn_layers.batch_norm_layers(copy) if isinstance(layer, source)]
    if left:
        raise ValueError(f"convert cannot reach the batch-norm layers {left}: they sit inside "
                         "a custom layer, which is copied as it is.")
    _cloning.compile_like(copy, model)
    return copy


def config_for(layer, target):
    """`layer`'s config as `target`'s constructor takes it.

    Options `target` does not have are dropped when they hold kbn's default
    (they then change nothing) and refused otherwise.
    """
    config = layer.get_config()
    accepted = inspect.signature(target.__init__).parameters
    defaults = {name: p.default for name, p in
                inspect.signature(BatchNormalization.__init__).parameters.items()}
    if target is keras.layers.BatchNormalization:
        axis = config.get("axis")
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise ValueError(f"layer {layer.name!r} normalizes over several axes "
                                 f"{list(axis)}; keras.layers.BatchNormalization takes one.")
            config["axis"] = axis[0]
        if config.get("momentum") is None:
            raise ValueError(f"layer {layer.name!r} has momentum=None (a cumulative average), "
                             "which keras.layers.BatchNormalization does not have.")
    for key in [key for key in config if key not in accepted and key not in _BASE_KEYS]:
        if key in defaults and config[key] == defaults[key]:
            del config[key]
        else:
            raise ValueError(f"layer {layer.name!r} uses {key}={config[key]!r}, which "
                             f"{target.__module__}.{target.__name__} does not have.")
    return config


# Base-layer config keys (every layer's constructor takes them through **kwargs).
_BASE_KEYS = ("name", "trainable", "dtype")
