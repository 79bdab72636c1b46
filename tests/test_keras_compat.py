"""kbn/_keras_compat.py: every private Keras name kbn reads exists on the installed Keras,
a missing one is reported by name, and the installed Keras is the release setup.cfg names.

A failure here means a Keras release moved a private name: update the function of
_keras_compat.py that reads it (and `CHECKED_ON`), then setup.cfg's range.
"""

import configparser
import os
import types

import keras
import pytest

from kbn import _keras_compat

pytestmark = [pytest.mark.all_backends, pytest.mark.lean]

SETUP_CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.cfg")


def samples():
    """{owner: an instance of it}, from a functional model with one Dense layer called once."""
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(inputs))
    return {"Layer": dense, "Functional": model, "KerasTensor": model.outputs[0],
            "Node": _keras_compat.inbound_nodes(dense)[0]}


@pytest.mark.parametrize("owner, name", _keras_compat.PRIVATE_NAMES,
                         ids=[f"{owner}.{name}" for owner, name in _keras_compat.PRIVATE_NAMES])
def test_every_private_name_exists(owner, name):
    problem = _keras_compat.missing(owner, name, samples().get(owner))
    assert problem is None, problem


def test_a_missing_name_is_reported_with_the_keras_version():
    # Guards the check itself: an object without the attribute, a module that is not there.
    problem = _keras_compat.missing("Layer", "_inbound_nodes", types.SimpleNamespace())
    assert "Layer._inbound_nodes" in problem and f"Keras {keras.__version__}" in problem
    problem = _keras_compat.missing("keras.src.no_such_module", "Functional")
    assert "keras.src.no_such_module.Functional" in problem
    with pytest.raises(AttributeError, match=r"no Layer\._flatten_layers"):
        _keras_compat.sublayers(types.SimpleNamespace())


def test_the_reads_see_the_graph():
    found = samples()
    dense, model, node = found["Layer"], found["Functional"], found["Node"]
    assert isinstance(model, _keras_compat.functional_class())
    assert _keras_compat.operation_of(node) is dense
    assert _keras_compat.producer(found["KerasTensor"]) is dense
    assert _keras_compat.parent_operations(node) == [model.layers[0]]  # the InputLayer
    assert _keras_compat.called_operations(model) == [dense]
    assert _keras_compat.sublayers(model) == [model.layers[0], dense]
    assert list(_keras_compat.build_shapes(dense).values()) == [(None, 3)]


def test_installed_keras_is_in_setup_cfgs_range():
    # packaging comes with Keras (one of its requirements).
    requirements = pytest.importorskip("packaging.requirements")
    config = configparser.ConfigParser()
    config.read(SETUP_CFG, encoding="utf-8")
    lines = config["options"]["install_requires"].split()
    keras_range = next(requirement.specifier
                       for requirement in map(requirements.Requirement, lines)
                       if requirement.name == "keras")
    assert keras.__version__ in keras_range, (
        f"Keras {keras.__version__} is installed, outside setup.cfg's keras{keras_range}")
