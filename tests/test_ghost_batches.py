"""Ghost batch normalization (`virtual_batch_size=k`) against tf.keras 2's and a
float64 NumPy reference, on every backend.

Tolerances as in test_parity.py: 1e-5 (float32 against float32 or float64,
the same math in another order of summation).
"""

import re

import keras
import numpy as np
import pytest
from keras import ops

import kbn
import numpy_reference as ref
import tf_keras_reference as tfk
from layer_pairs import random_weights, step, weights_by_name

pytestmark = [pytest.mark.all_backends, pytest.mark.usefixtures("each_kernel_path")]

TOL = dict(rtol=1e-5, atol=1e-5)
MOMENTUM = 0.9


def build(shape, rng, **config):
    layer = kbn.BatchNormalization(momentum=MOMENTUM, **config)
    layer.build(shape)
    values = random_weights(layer, rng)
    layer.set_weights([values[w.name] for w in layer.weights])
    return layer


def close(actual, expected, what, **tol):
    np.testing.assert_allclose(actual, expected, err_msg=what, **{**TOL, **tol})


CASES = [
    ((32, 5), 8, -1),
    ((16, 4, 3, 6), 4, -1),
    ((12, 5, 4), 3, 1),
    ((16, 3, 4, 5), 2, [1, 3]),
]


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("shape,k,axis", CASES)
def test_matches_tf_keras_and_reference(shape, k, axis, center, scale):
    rng = np.random.default_rng(len(shape) * 10 + k)
    layer = build(shape, rng, axis=axis, virtual_batch_size=k, center=center, scale=scale)
    reference = tfk.twin(layer, shape)
    state = {n: v.astype(np.float64) for n, v in weights_by_name(layer).items()}
    for i in range(3):
        x = rng.normal(1.0 + i, 2.0, size=shape).astype("float32")
        upstream = rng.normal(size=shape).astype("float32")
        got = step(layer, x, upstream, training=True)
        want = tfk.step(reference, x, upstream, training=True)
        for name in got:
            close(got[name], np.reshape(want[name], got[name].shape),
                  f"step {i}: {name} vs tf_keras")
        mine = weights_by_name(layer)
        for name, value in tfk.weights(reference, mine["moving_mean"].shape).items():
            close(mine[name], value, f"step {i}: weight {name} vs tf_keras")
        y, dx, dgamma, dbeta, mean, variance = ref.ghost_step(
            x, upstream, k, state.get("gamma"), state.get("beta"), 1e-3, axis)
        close(got["y"], y, f"step {i}: y vs reference")
        close(got["dx"], dx, f"step {i}: dx vs reference")
        if scale:
            close(got["dgamma"], dgamma, f"step {i}: dgamma vs reference")
            state["gamma"] = state["gamma"] - 0.1 * dgamma
        if center:
            close(got["dbeta"], dbeta, f"step {i}: dbeta vs reference")
            state["beta"] = state["beta"] - 0.1 * dbeta
        for name, batch in (("moving_mean", mean), ("moving_variance", variance)):
            state[name] = ref.moving_update(state[name], batch, MOMENTUM)
            close(mine[name], state[name], f"step {i}: {name} vs reference")


def test_ghost_batches_are_strided_not_contiguous():
    """Ghost batch g holds samples g, g + N/k, …: with the halves of the batch on
    different scales, strided groups mix them and contiguous groups would not."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (8, 3)), rng.normal(50, 10, (8, 3))]).astype("float32")
    layer = kbn.BatchNormalization(virtual_batch_size=8, center=False, scale=False)
    y = ops.convert_to_numpy(layer(x, training=True))
    strided = ref.ghost_step(x, None, 8, None, None, 1e-3)[0]
    contiguous = np.concatenate([ref.normalize(x[:8], *ref.batch_moments(x[:8]), None, None, 1e-3),
                                 ref.normalize(x[8:], *ref.batch_moments(x[8:]), None, None, 1e-3)])
    close(y, strided, "strided grouping")
    assert np.max(np.abs(y - contiguous)) > 0.5


def test_inference_uses_moving_statistics_at_any_batch_size():
    rng = np.random.default_rng(1)
    ghost = build((8, 4), rng, virtual_batch_size=4)
    plain = kbn.BatchNormalization(momentum=MOMENTUM)
    plain.build((8, 4))
    plain.set_weights(ghost.get_weights())
    x = rng.normal(size=(7, 4)).astype("float32")  # 7: no multiple of 4
    close(ops.convert_to_numpy(ghost(x, training=False)),
          ops.convert_to_numpy(plain(x, training=False)), "inference")


@pytest.mark.parametrize("batch", [6, 10])
def test_batch_not_a_multiple_of_k_is_refused_and_changes_nothing(batch):
    layer = build((8, 4), np.random.default_rng(2), virtual_batch_size=4)
    before = weights_by_name(layer)
    x = np.ones((batch, 4), "float32")
    with pytest.raises(ValueError, match=rf"virtual_batch_size=4.*batch of {batch} samples"):
        layer(x, training=True)
    for name, value in weights_by_name(layer).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_batch_not_a_multiple_of_k_inside_fit_changes_nothing():
    """In fit() the batch size may be unknown while tracing (TensorFlow): the error
    then comes at run time, still before any weight of the model changes."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              kbn.BatchNormalization(virtual_batch_size=4), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    before = [np.array(w) for w in model.get_weights()]
    x = np.random.default_rng(3).normal(size=(10, 4)).astype("float32")
    with pytest.raises(Exception, match=r"virtual_batch_size=4 must divide"):
        model.fit(x, x[:, :1], batch_size=10, epochs=1, verbose=0)
    if keras.backend.backend() == "jax":
        # Keras's JAX trainer hands the variables' buffers to the compiled step
        # and does not give them back when fit() raises (whatever raised), so
        # there is nothing to read here; JAX traces with the concrete batch
        # size, so the ValueError came while tracing, before any step ran.
        return
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_fit_with_ghost_batches_trains_and_reloads(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(2.0, 3.0, size=(64, 6)).astype("float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                              kbn.BatchNormalization(virtual_batch_size=8, name="bn"),
                              keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(x, x[:, :1], batch_size=16, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "ghost.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("bn").virtual_batch_size == 8
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("unbiased", [False, True])
def test_with_a_mask_matches_reference(unbiased):
    """tf_keras cannot split a mask into ghost batches; kbn does, and each ghost
    batch then counts for the moving statistics by its unmasked entries."""
    rng = np.random.default_rng(5)
    shape = (8, 6, 3)
    layer = build(shape, rng, virtual_batch_size=4, unbiased_moving_variance=unbiased)
    state = weights_by_name(layer)
    x = rng.normal(1.0, 2.0, size=shape).astype("float32")
    mask = rng.random(shape[:-1]) < 0.7
    y = ops.convert_to_numpy(layer(x, training=True, mask=ops.convert_to_tensor(mask)))
    want_y, _, _, _, mean, variance = ref.ghost_step(x, None, 4, state["gamma"], state["beta"],
                                                     1e-3, mask=mask, unbiased=unbiased)
    close(y, want_y, "y")
    after = weights_by_name(layer)
    close(after["moving_mean"], ref.moving_update(state["moving_mean"], mean, MOMENTUM), "mean")
    close(after["moving_variance"],
          ref.moving_update(state["moving_variance"], variance, MOMENTUM), "variance")


def test_unbiased_moving_variance_per_ghost_batch():
    rng = np.random.default_rng(6)
    shape = (12, 2, 3)
    layer = build(shape, rng, virtual_batch_size=3, unbiased_moving_variance=True)
    state = weights_by_name(layer)
    x = rng.normal(size=shape).astype("float32")
    layer(x, training=True)
    *_, mean, variance = ref.ghost_step(x, None, 3, None, None, 1e-3, unbiased=True)
    close(weights_by_name(layer)["moving_variance"],
          ref.moving_update(state["moving_variance"], variance, MOMENTUM), "variance")


def test_with_renorm_matches_tf_keras():
    """tf.keras computes renorm's r and d from the ghost-averaged statistics; so does kbn."""
    rng = np.random.default_rng(7)
    shape = (16, 5)
    config = dict(virtual_batch_size=4, renorm=True, renorm_momentum=0.8,
                  renorm_clipping={"rmax": 1.5, "rmin": 0.7, "dmax": 0.5})
    layer = build(shape, rng, **config)
    reference = tfk.twin(layer, shape)
    for i in range(3):
        x = rng.normal(2.0 * i, 1.0 + i, size=shape).astype("float32")
        upstream = rng.normal(size=shape).astype("float32")
        got = step(layer, x, upstream, training=True)
        want = tfk.step(reference, x, upstream, training=True)
        for name in got:
            close(got[name], np.reshape(want[name], got[name].shape), f"step {i}: {name}")
        mine = weights_by_name(layer)
        for name, value in tfk.weights(reference, (5,)).items():
            close(mine[name], value, f"step {i}: weight {name}")


@pytest.mark.parametrize("value", [0, -2, 2.5, "4", True])
def test_bad_virtual_batch_size(value):
    with pytest.raises(ValueError, match=rf"virtual_batch_size.*{value!r}"):
        kbn.BatchNormalization(virtual_batch_size=value)


@pytest.mark.parametrize("axis", [0, [0, -1]])
def test_batch_axis_with_ghost_batches_is_refused(axis):
    with pytest.raises(ValueError, match=rf"axis={re.escape(str(axis))}.*batch axis 0"):
        kbn.BatchNormalization(axis=axis, virtual_batch_size=2)


def test_negative_batch_axis_with_ghost_batches_is_refused_at_build():
    with pytest.raises(ValueError, match=r"axis=-2.*batch axis 0"):
        kbn.BatchNormalization(axis=-2, virtual_batch_size=2).build((4, 3))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="synchronized is TF-only")
def test_synchronized_with_ghost_batches_is_refused():
    with pytest.raises(ValueError, match=r"virtual_batch_size=4, synchronized=True"):
        kbn.BatchNormalization(virtual_batch_size=4, synchronized=True)
