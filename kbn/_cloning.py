"""Keras's layer graph, read and copied (its private graph API through `_keras_compat`).

Copying a Sequential or functional model with some layers swapped serves fold
and convert; reading who feeds whom (`producers`, `consumers`) serves fold's
analysis; counting the calls of a layer in one forward pass (`calls_per_pass`)
tells recalibrate and the monitor which layers are shared. A functional graph
holds layers, nested models, layers called more than once, and operation
nodes that are not layers (`x + 3.0` or `keras.ops.multiply(x, y)` on Keras
tensors put a `keras.ops` Operation into the graph): every function here takes
all four.
"""

import collections
import warnings

import keras

from kbn import _keras_compat


def check_graph_model(model, tool):
    """Raises ValueError unless `model` is Sequential or functional (a graph to rebuild)."""
    if not isinstance(model, (keras.Sequential, _keras_compat.functional_class())):
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
        every leaf layer, in cloning order. Operation nodes that are not layers
        (`keras.ops` on Keras tensors) are copied from their config, hold no
        weights and appear in no pair; `replace` never sees them.
    """
    pairs, replaced, dropped = [], set(), set()

    def clone(layer):
        if not isinstance(layer, keras.layers.Layer):
            return _copy_operation(layer)
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

    functional = isinstance(model, _keras_compat.functional_class())
    options = {"call_function": call} if functional else {}
    copy = keras.models.clone_model(model, clone_function=clone, recursive=True, **options)
    for layer, new in pairs:
        if id(new) not in replaced:
            new.set_weights(layer.get_weights())
    return copy, pairs


def _copy_operation(operation):
    """A fresh copy of a `keras.ops` operation node, or the node itself if its config
    does not serialize (an operation holds no state, only its constructor's arguments,
    so the copy may share it)."""
    try:
        return operation.__class__.from_config(operation.get_config())
    except (NotImplementedError, TypeError):
        return operation


def producers(layer):
    """The operations (layers, nested models, `keras.ops` nodes) whose outputs feed
    `layer`'s first call; an `InputLayer` for a model input."""
    return _keras_compat.parent_operations(_keras_compat.inbound_nodes(layer)[0])


def consumers(layer):
    """The operations that take an output of `layer`, one per call of theirs."""
    return [_keras_compat.operation_of(node) for node in _keras_compat.outbound_nodes(layer)]


def call_count(layer):
    """How many times `layer` has been called on Keras tensors (in any graph): 1 unless shared."""
    return len(_keras_compat.inbound_nodes(layer))


def calls_per_pass(model):
    """{id(layer): how many times one forward pass of `model` calls it}.

    A layer called twice in the graph (shared) counts 2; a nested model called
    twice doubles the counts of its layers. The layers of a subclassed model or
    of a custom layer, whose call is code and not a graph, count once per call
    of their owner.
    """
    counts = collections.Counter()

    def walk(owner, times):
        if isinstance(owner, _keras_compat.functional_class()):
            called = _keras_compat.called_operations(owner)
        elif isinstance(owner, keras.Sequential):
            called = owner.layers
        else:
            called = _keras_compat.sublayers(owner, recursive=False)
        for operation in called:
            counts[id(operation)] += times
            if isinstance(operation, keras.layers.Layer):
                walk(operation, times)

    walk(model, 1)
    return dict(counts)


def compile_like(copy, model):
    """Compiles `copy` as `model` was compiled (a fresh optimizer with the same settings).

    A compile config that does not deserialize (e.g. an unregistered custom
    loss) leaves the copy uncompiled, with a warning.
    """
    if not getattr(model, "compiled", False):
        return
    config = model.get_compile_config()
    if config is None:
        return
    try:
        copy.compile_from_config(config)
    except (ValueError, TypeError) as error:
        warnings.warn(f"the copy of {model.name!r} could not be compiled like the original "
                      f"({error}); compile it yourself.", stacklevel=3)
