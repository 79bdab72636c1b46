"""Keras's private API, read in one place: a release that moves a name breaks this file.

Keras 3 makes public neither a layer's graph (the nodes of its calls, who feeds
whom), nor the list of a layer's sublayers, nor the input shapes a layer was
built with; kbn's tools need all three. Every read of them is a function here,
whose docstring names the private name and the Keras release it was checked on.
`PRIVATE_NAMES` lists them all; tests/test_keras_compat.py checks each on the
installed Keras (`missing`), and every function raises a message naming the
attribute and the installed Keras when a release dropped it.
"""

import importlib

import keras

CHECKED_ON = "3.15.1"
# (owner, name): a module's dotted name and the class it holds, or a Keras class and
# the attribute kbn reads on its instances. Node is keras.src.ops.node.Node, KerasTensor
# keras.KerasTensor; node_inputs and producer serve the tests only.
PRIVATE_NAMES = (
    ("keras.src.models.functional", "Functional"),
    ("Functional", "_nodes_by_depth"),
    ("Layer", "_inbound_nodes"),
    ("Layer", "_outbound_nodes"),
    ("Layer", "_flatten_layers"),
    ("Layer", "_build_shapes_dict"),
    ("Node", "operation"),
    ("Node", "parent_nodes"),
    ("Node", "is_input"),
    ("Node", "input_tensors"),
    ("KerasTensor", "_keras_history"),
)


def _gone(owner, name):
    return (f"Keras {keras.__version__} has no {owner}.{name}, a private name kbn reads "
            f"(kbn/_keras_compat.py, checked on Keras {CHECKED_ON}); install the Keras "
            "release that setup.cfg names.")


def _read(owner, obj, name):
    """`obj.name`, or an AttributeError naming `owner.name` and the installed Keras."""
    try:
        return getattr(obj, name)
    except AttributeError:
        raise AttributeError(_gone(owner, name)) from None


def missing(owner, name, sample=None):
    """Why the installed Keras lacks `owner.name`, or None if it has it.

    Args:
        owner: An owner of `PRIVATE_NAMES`: a module's dotted name (imported
            here) or a class name.
        name: The name kbn reads.
        sample: An instance of the class `owner` (instance attributes exist on
            instances only); unused for a module.
    """
    if "." in owner:
        try:
            sample = importlib.import_module(owner)
        except ImportError:
            return _gone(owner, name)
    return None if hasattr(sample, name) else _gone(owner, name)


def functional_class():
    """The class of functional models, `keras.src.models.functional.Functional`
    (private module; checked on Keras 3.15.1). `keras.Model(inputs, outputs)` is one."""
    try:
        module = importlib.import_module("keras.src.models.functional")
    except ImportError:
        raise ImportError(_gone("keras.src.models.functional", "Functional")) from None
    return _read("keras.src.models.functional", module, "Functional")


def called_operations(model):
    """The operations a functional model's graph calls, one entry per call (a shared
    layer as often as it is called), input layers left out. Reads
    `Functional._nodes_by_depth` and `Node.operation` / `Node.is_input` (checked on
    Keras 3.15.1)."""
    nodes = _read("Functional", model, "_nodes_by_depth").values()
    return [operation_of(node) for depth in nodes for node in depth
            if operation_of(node) is not None and not _read("Node", node, "is_input")]


def inbound_nodes(layer):
    """The nodes of `layer`'s calls on Keras tensors, one per call: `Layer._inbound_nodes`
    (checked on Keras 3.15.1)."""
    return list(_read("Layer", layer, "_inbound_nodes"))


def outbound_nodes(layer):
    """The nodes of the calls that take an output of `layer`: `Layer._outbound_nodes`
    (checked on Keras 3.15.1)."""
    return list(_read("Layer", layer, "_outbound_nodes"))


def operation_of(node):
    """The layer or `keras.ops` operation a node calls: `Node.operation` (checked on
    Keras 3.15.1)."""
    return _read("Node", node, "operation")


def parent_operations(node):
    """The operations whose outputs feed `node`'s call: `Node.parent_nodes` (checked on
    Keras 3.15.1)."""
    return [operation_of(parent) for parent in _read("Node", node, "parent_nodes")]


def node_inputs(node):
    """The Keras tensors a node's call takes: `Node.input_tensors` (checked on
    Keras 3.15.1)."""
    return list(_read("Node", node, "input_tensors"))


def producer(tensor):
    """The operation whose call made the Keras tensor `tensor`:
    `KerasTensor._keras_history.operation` (checked on Keras 3.15.1)."""
    return _read("KerasTensor", tensor, "_keras_history").operation


def sublayers(layer, recursive=True):
    """The layers tracked inside `layer` (itself left out), those of nested layers and
    models too unless `recursive=False`: `Layer._flatten_layers` (checked on Keras
    3.15.1)."""
    flatten = _read("Layer", layer, "_flatten_layers")
    return list(flatten(include_self=False, recursive=recursive))


def build_shapes(layer):
    """{argument name: input shape} that `layer` was built with ({} if none recorded):
    `Layer._build_shapes_dict` (checked on Keras 3.15.1)."""
    return dict(_read("Layer", layer, "_build_shapes_dict") or {})
