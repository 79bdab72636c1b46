"""Copying a Sequential or functional model with some layers swapped (shared by fold and convert)."""

import keras
from keras.src.models.functional import Functional


def check_graph_model(model, tool):
    """Raises ValueError unless `model` is Sequential or functional (its layer graph can be rebuilt)."""
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(
            f"{tool} needs a Sequential or functional model, whose layer graph it can rebuild; "
            f"received a {type(model).__name__} (a subclassed model has no layer graph)."
        )


def clone_with(model, replace, drop=()):
    """A copy of `model` with its weights, nested Sequential/functional models copied too.

    Args:
        model: A Sequential or functional model.
        replace: `replace(layer)` returns the new layer to put in the place of
            `layer` (it then sets that layer's weights itself, after the copy
            is built, from the returned pairs), or None to copy `layer` as it is.
        drop: ids of layers to take out: their input goes straight on. In a
            functional graph they disappear; in a Sequential one an
            `Identity` layer of the same name holds their place.

    Returns:
        `(copy, pairs)`: the new model and `[(original layer, new layer)]` for
        every leaf layer, in cloning order.
    """
    pairs, replaced, dropped = [], set(), set()

    def clone(layer):
        if id(layer) in drop:
            new = keras.layers.Identity(name=layer.name)
            dropped.add(id(new))
        else:
            new = replace(layer)
        if new is None:
            new = layer.__class__.from_config(layer.get_config())
        else:
            replaced.add(id(new))
        pairs.append((layer, new))
        return new

    def call(layer, *args, **kwargs):
        return args[0] if id(layer) in dropped else layer(*args, **kwargs)

    options = {"call_function": call} if isinstance(model, Functional) else {}
    copy = keras.models.clone_model(model, clone_function=clone, recursive=True, **options)
    for layer, new in pairs:
        if id(new) not in replaced:
            new.set_weights(layer.get_weights())
    return copy, pairs


def compile_like(copy, model):
    """Compiles `copy` as `model` was compiled (a fresh optimizer with the same settings)."""
    if getattr(model, "compiled", False):
        config = model.get_compile_config()
        if config is not None:
            copy.compile_from_config(config)
