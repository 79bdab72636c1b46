"""`axis` as a list (tf.keras 2 semantics): statistics per entry of all the listed
axes together, against tf.keras 2 and the float64 NumPy reference, on every backend."""

import re

import numpy as np
import pytest
from keras import ops

import kbn
import numpy_reference as ref
import tf_keras_reference as tfk
from layer_pairs import random_weights, step, weights_by_name

pytestmark = pytest.mark.all_backends

TOL = dict(rtol=1e-5, atol=1e-5)
MOMENTUM = 0.9


def close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, err_msg=what, **TOL)


CASES = [
    ((6, 3, 4, 5), [1, 3]),
    ((6, 3, 4, 5), [3, 1]),
    ((6, 3, 4, 5), [1, -1]),
    ((6, 3, 4, 5), [2, 3]),  # trailing axes: the statistics broadcast as they are
    ((8, 4, 5), [1]),
    ((4, 3, 2, 5, 2), [1, 2, 4]),
]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,axis", CASES)
def test_matches_tf_keras_and_reference(shape, axis, training):
    rng = np.random.default_rng(sum(shape) + len(axis))
    layer = kbn.BatchNormalization(axis=axis, momentum=MOMENTUM)
    layer.build(shape)
    values = random_weights(layer, rng)
    layer.set_weights([values[w.name] for w in layer.weights])
    channels = ref.channel_shape(shape, axis)
    assert all(w.shape == channels for w in layer.weights)  # sizes in input order
    reference = tfk.twin(layer, shape)
    state = {n: v.astype(np.float64) for n, v in weights_by_name(layer).items()}
    for i in range(3):
        x = rng.normal(1.0, 2.0, size=shape).astype("float32")
        upstream = rng.normal(size=shape).astype("float32")
        got = step(layer, x, upstream, training)
        want = tfk.step(reference, x, upstream, training)
        for name in got:
            close(got[name], np.reshape(want[name], got[name].shape),
                  f"step {i}: {name} vs tf_keras")
        mine = weights_by_name(layer)
        for name, value in tfk.weights(reference, channels).items():
            close(mine[name], value, f"step {i}: weight {name} vs tf_keras")
        if training:
            mean, variance = ref.batch_moments(x, axis)
            dx, dgamma, dbeta = ref.backward(x, upstream, state["gamma"], 1e-3, axis)
        else:
            mean, variance = state["moving_mean"], state["moving_variance"]
        close(got["y"], ref.normalize(x, mean, variance, state["gamma"], state["beta"], 1e-3, axis),
              f"step {i}: y vs reference")
        if training:
            close(got["dx"], dx, f"step {i}: dx vs reference")
            close(got["dgamma"], dgamma, f"step {i}: dgamma vs reference")
            state["gamma"] = state["gamma"] - 0.1 * dgamma
            state["beta"] = state["beta"] - 0.1 * dbeta
            for name, batch in (("moving_mean", mean), ("moving_variance", variance)):
                state[name] = ref.moving_update(state[name], batch, MOMENTUM)
                close(mine[name], state[name], f"step {i}: {name} vs reference")


def test_with_a_mask_matches_reference():
    rng = np.random.default_rng(3)
    shape = (5, 6, 4, 3)
    layer = kbn.BatchNormalization(axis=[2, 3], momentum=MOMENTUM)
    x = rng.normal(size=shape).astype("float32")
    mask = rng.random(shape[:-1]) < 0.7
    y = ops.convert_to_numpy(layer(x, training=True, mask=ops.convert_to_tensor(mask)))
    mean, variance = ref.batch_moments(x, [2, 3], mask)
    close(y, ref.normalize(x, mean, variance, None, None, 1e-3, [2, 3]), "y")
    close(weights_by_name(layer)["moving_mean"], ref.moving_update(0.0, mean, MOMENTUM), "mean")


def test_config_keeps_the_list():
    layer = kbn.BatchNormalization(axis=(3, 1))
    assert layer.get_config()["axis"] == [3, 1]
    assert kbn.BatchNormalization.from_config(layer.get_config()).axis == [3, 1]


@pytest.mark.parametrize(
    "axis,shape,message",
    [
        ([1, -3], (2, 3, 4, 5), "names the same axis twice"),
        ([1, 1], (2, 3, 4, 5), "names the same axis twice"),
        ([1, 4], (2, 3, 4, 5), "out of range for inputs of rank 4"),
        ([-5], (2, 3, 4, 5), "out of range for inputs of rank 4"),
    ],
)
def test_bad_axis_lists_at_build(axis, shape, message):
    with pytest.raises(ValueError, match=re.escape(f"axis={axis}") + ".*" + message):
        kbn.BatchNormalization(axis=axis).build(shape)


@pytest.mark.parametrize("axis", [[], (), [1, 2.0], [None], "1", [True]])
def test_bad_axis_values_at_construction(axis):
    with pytest.raises(ValueError, match=r"axis.*" + re.escape(repr(axis))):
        kbn.BatchNormalization(axis=axis)
