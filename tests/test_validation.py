"""Bad input gets a ValueError that names the argument and the value."""

import keras
import numpy as np
import pytest
from keras import ops

import kbn

pytestmark = pytest.mark.all_backends


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"momentum": 1.5}, r"momentum.*1\.5"),
        ({"momentum": -0.1}, r"momentum.*-0\.1"),
        ({"momentum": float("nan")}, r"momentum.*nan"),
        ({"momentum": "0.9"}, r"momentum.*'0\.9'"),
        ({"epsilon": 0.0}, r"epsilon.*0\.0"),
        ({"epsilon": -1e-3}, r"epsilon.*-0\.001"),
        ({"epsilon": float("inf")}, r"epsilon.*inf"),
        ({"axis": 1.5}, r"axis.*1\.5"),
        ({"axis": None}, r"axis.*None"),
        ({"center": "yes"}, r"center.*'yes'"),
        ({"renorm_momentum": 2.0}, r"renorm_momentum.*2\.0"),
        ({"renorm": True, "renorm_clipping": {"rmax": 2, "r_min": 0.5}}, r"r_min"),
        ({"renorm": True, "renorm_clipping": {"rmax": 0.5, "rmin": 2.0}}, r"rmax >= rmin.*0\.5"),
        ({"renorm": True, "renorm_clipping": {"dmax": -1.0}}, r"dmax >= 0.*-1\.0"),
        ({"renorm": True, "renorm_clipping": {"dmax": "big"}}, r"dmax.*'big'"),
        ({"renorm": True, "renorm_clipping": [3.0]}, r"renorm_clipping.*\[3\.0\]"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kbn.BatchNormalization(**kwargs)


@pytest.mark.parametrize("momentum", [0, 1, 0.0, 1.0, np.float32(0.9)])
def test_boundary_values_are_accepted(momentum):
    assert kbn.BatchNormalization(momentum=momentum).momentum == float(momentum)


@pytest.mark.parametrize("axis,shape", [(2, (None, 4)), (-3, (None, 4)), (4, (2, 3, 4, 5))])
def test_axis_out_of_range_at_build(axis, shape):
    with pytest.raises(ValueError, match=rf"axis={axis}.*rank {len(shape)}"):
        kbn.BatchNormalization(axis=axis).build(shape)


def test_unknown_channel_size_at_build():
    with pytest.raises(ValueError, match=r"axis=-1.*\(None, None\)"):
        kbn.BatchNormalization().build((None, None))


@pytest.mark.parametrize("mask_shape", [(4, 6, 3), (4,)])
def test_mask_of_wrong_rank(mask_shape):
    x = ops.zeros((4, 6, 3))
    with pytest.raises(ValueError, match=rf"mask.*{mask_shape[0]}"):
        kbn.BatchNormalization()(x, training=True, mask=ops.ones(mask_shape, "bool"))


@pytest.mark.parametrize("backend", ["jax", "torch", "numpy"])
def test_synchronized_on_a_backend_other_than_tensorflow(monkeypatch, backend):
    """Other backends are not installed here, so the backend's name is what is faked:
    the layer reads it through Keras's public `keras.backend.backend()`."""
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    with pytest.raises(ValueError, match=rf"synchronized=True needs the TensorFlow.*'{backend}'"):
        kbn.BatchNormalization(synchronized=True)
    kbn.BatchNormalization(synchronized=False)  # the generic path serves every backend
