"""Parity: kbn.BatchNormalization against a float64 NumPy reference and against
keras.layers.BatchNormalization with the same weights, element by element.

Tolerances (np.testing.assert_allclose, |a − b| <= ATOL + RTOL·|b|):
- against Keras, RTOL = ATOL = 1e-5: both compute in float32, and float32's
  relative precision is 1.2e-7, so 1e-5 leaves room for a different order of
  summation and nothing else;
- against the float64 reference the same 1e-5 holds for outputs, gradients and
  statistics: the float32 layer's rounding stays below that on these sizes.
Each case runs three training (or inference) steps in a row, with SGD on γ and
β between steps, so errors in the moving update or the gradients would compound.
"""

import numpy as np
import pytest
from keras import ops

import numpy_reference as ref
from layer_pairs import make_pair, step, weights_by_name

pytestmark = [pytest.mark.all_backends, pytest.mark.usefixtures("each_kernel_path")]

RTOL = ATOL = 1e-5
STEPS = 3
MOMENTUM = 0.9  # further from 1 than the default, so the moving update is visible

# (input shape, axis): ranks 2 to 5, axis last, 1 and a middle one.
SHAPES_AND_AXES = [
    ((64, 7), -1),
    ((16, 6, 5), -1),
    ((16, 6, 5), 1),
    ((6, 5, 4, 3), -1),
    ((6, 5, 4, 3), 1),
    ((6, 5, 4, 3), 2),
    ((3, 4, 3, 5, 2), -1),
    ((3, 4, 3, 5, 2), 1),
    ((3, 4, 3, 5, 2), 2),
]


def close(actual, expected, what, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def expected_step(weights, x, upstream, training, epsilon, axis, learning_rate=0.1):
    """What one `layer_pairs.step` must give, from the float64 reference."""
    gamma, beta = weights.get("gamma"), weights.get("beta")
    if training:
        mean, variance = ref.batch_moments(x, axis)
        dx, dgamma, dbeta = ref.backward(x, upstream, gamma, epsilon, axis)
    else:
        mean, variance = weights["moving_mean"], weights["moving_variance"]
        scale = (1.0 if gamma is None else gamma) / np.sqrt(variance + epsilon)
        dx = upstream * scale.reshape(_channel_shape(x.ndim, axis))
        x_hat = ref.normalize(x, mean, variance, None, None, epsilon, axis)
        reduce = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
        dgamma, dbeta = (upstream * x_hat).sum(axis=reduce), upstream.sum(axis=reduce)
    expected = {"y": ref.normalize(x, mean, variance, gamma, beta, epsilon, axis), "dx": dx}
    new_weights = dict(weights)
    if gamma is not None:
        expected["dgamma"] = dgamma
        new_weights["gamma"] = gamma - learning_rate * dgamma if training else gamma
    if beta is not None:
        expected["dbeta"] = dbeta
        new_weights["beta"] = beta - learning_rate * dbeta if training else beta
    if training:
        new_weights["moving_mean"] = ref.moving_update(weights["moving_mean"], mean, MOMENTUM)
        new_weights["moving_variance"] = ref.moving_update(
            weights["moving_variance"], variance, MOMENTUM
        )
    return expected, new_weights


def _channel_shape(rank, axis):
    shape = [1] * rank
    shape[axis] = -1
    return shape


def run_and_compare(shape, config, training, rng, make_input, mask=None, reference=True,
                    tolerances=None):
    """Steps a kbn/Keras pair STEPS times; compares both with each other and the reference."""
    tol = tolerances or {}
    kbn_layer, keras_layer = make_pair(shape, rng, momentum=MOMENTUM, **config)
    weights = {k: v.astype(np.float64) for k, v in weights_by_name(keras_layer).items()}
    for i in range(STEPS):
        x = make_input(rng, shape)
        upstream = rng.normal(size=shape).astype("float32")
        got = step(kbn_layer, x, upstream, training, mask)
        want = step(keras_layer, x, upstream, training, mask)
        assert got.keys() == want.keys()
        for name in got:
            close(got[name], want[name], f"step {i}: {name} vs Keras", **tol.get(name, {}))
        kbn_weights, keras_weights = weights_by_name(kbn_layer), weights_by_name(keras_layer)
        for name in keras_weights:
            close(kbn_weights[name], keras_weights[name], f"step {i}: weight {name} vs Keras")
        if reference:
            expected, weights = expected_step(
                weights, x.astype(np.float64), upstream, training, config.get("epsilon", 1e-3),
                config.get("axis", -1),
            )
            for name, value in expected.items():
                close(got[name], value, f"step {i}: {name} vs reference", **tol.get(name, {}))
            for name, value in weights.items():
                close(kbn_weights[name], value, f"step {i}: weight {name} vs reference")
    return kbn_layer, keras_layer


def normal_input(rng, shape):
    return rng.normal(2.0, 3.0, size=shape).astype("float32")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("center,scale",
                         [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("shape,axis", SHAPES_AND_AXES)
def test_matches_keras_and_reference(shape, axis, center, scale, training):
    rng = np.random.default_rng(abs(hash((shape, axis, center, scale, training))) % 2**32)
    run_and_compare(shape, dict(axis=axis, center=center, scale=scale), training, rng, normal_input)


@pytest.mark.parametrize("epsilon", [1e-5, 0.1])
def test_epsilon_placement_matches(epsilon):
    """ε is added to the variance inside the square root, not to the stddev."""
    run_and_compare((32, 4), dict(epsilon=epsilon), True, np.random.default_rng(1),
                    lambda rng, s: rng.normal(0, 0.05, s).astype("float32"))


@pytest.mark.parametrize("shape,axis", [((256, 6), -1), ((16, 4, 4, 3), -1), ((16, 3, 4, 4), 1)])
def test_large_offset_inputs(shape, axis):
    """1e4 + noise: the variance must come from deviations, not E[x²] − E[x]²."""
    rng = np.random.default_rng(7)
    kbn_layer, keras_layer = make_pair(shape, rng, axis=axis, momentum=MOMENTUM)
    before = weights_by_name(kbn_layer)
    x = (1e4 + rng.normal(size=shape)).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    got = step(kbn_layer, x, upstream, training=True, learning_rate=0.0)
    want = step(keras_layer, x, upstream, training=True, learning_rate=0.0)
    # Near 1e4, float32 values are 9.8e-4 apart: x and μ each carry an error of
    # that size, and so does (x − μ)/σ with σ ≈ 1, whatever the formula (the fused
    # kernel subtracts μ first, Keras folds it into an offset: they differ by
    # ~1e-3). Outputs are held to ten such spacings; dγ = Σ dy·x̂ adds up to 256
    # of them per channel.
    loose = {"y": 1e-2, "dx": 1e-2, "dgamma": 0.25, "dbeta": ATOL}
    for name in got:
        close(got[name], want[name], f"{name} vs Keras", atol=loose[name])
    for name, value in weights_by_name(keras_layer).items():
        close(weights_by_name(kbn_layer)[name], value, f"{name} vs Keras")
    # The statistics are where the variance formula shows: 1e-5 against float64.
    mean, variance = ref.batch_moments(x, axis)
    after = weights_by_name(kbn_layer)
    close(after["moving_mean"], ref.moving_update(before["moving_mean"], mean, MOMENTUM), "mean")
    close(after["moving_variance"],
          ref.moving_update(before["moving_variance"], variance, MOMENTUM), "variance")
    y = ref.normalize(x, mean, variance, before["gamma"], before["beta"], 1e-3, axis)
    close(got["y"], y, "y vs reference", atol=1e-2)
    # The same data through the naive formula in float32 misses by far more than
    # the tolerance above: this case really does separate the two.
    flat = np.moveaxis(x, axis, -1).reshape(-1, shape[axis])
    naive = (flat**2).mean(axis=0, dtype=np.float32) - flat.mean(axis=0, dtype=np.float32) ** 2
    assert np.max(np.abs(naive - variance)) > 0.05


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(8, 10, 4), (4, 5, 6, 3)])
def test_masked_inputs(shape, training):
    """Masked positions are left out of the statistics (Keras's mask: all axes but the last)."""
    rng = np.random.default_rng(3)
    mask = rng.random(shape[:-1]) < 0.6
    kbn_layer, keras_layer = run_and_compare(
        shape, {}, training, rng, normal_input, mask=ops.convert_to_tensor(mask), reference=False
    )
    # And the moving statistics follow the masked reference statistics.
    kbn_layer2, _ = make_pair(shape, rng, momentum=MOMENTUM)
    before = weights_by_name(kbn_layer2)
    x = normal_input(rng, shape)
    kbn_layer2(x, training=True, mask=ops.convert_to_tensor(mask))
    mean, variance = ref.batch_moments(x, -1, mask)
    after = weights_by_name(kbn_layer2)
    close(after["moving_mean"], ref.moving_update(before["moving_mean"], mean, MOMENTUM), "mean")
    close(after["moving_variance"],
          ref.moving_update(before["moving_variance"], variance, MOMENTUM), "variance")
    # A mask changes the statistics: this case would catch an ignored mask.
    assert not np.allclose(mean, ref.batch_moments(x, -1)[0], atol=1e-3)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("shape,axis", [((64, 7), -1), ((6, 5, 4, 3), -1), ((6, 5, 4, 3), 1)])
def test_mixed_precision(shape, axis, policy):
    """Statistics in float32, output in the policy's compute dtype, weights stay float32."""
    rng = np.random.default_rng(11)
    low = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[policy]
    kbn_layer, keras_layer = make_pair(shape, rng, axis=axis, dtype=policy, momentum=MOMENTUM)
    # One rounding of the output to float16 (bfloat16) is 2^-11 (2^-8) relative.
    output_tol = {"mixed_float16": 2e-3, "mixed_bfloat16": 1e-2}[policy]
    for i in range(STEPS):
        x = ops.cast(normal_input(rng, shape), low)
        upstream = rng.normal(size=shape).astype("float32")
        for training in (True, False):
            got, want = (step(layer, x, upstream, training) for layer in (kbn_layer, keras_layer))
            assert str(got["y"].dtype) == str(want["y"].dtype) == low
            for name in want:  # outputs and every gradient, in the low-precision type
                close(got[name].astype("float32"), want[name].astype("float32"),
                      f"step {i}: {name}", rtol=output_tol, atol=output_tol)
            for name, value in weights_by_name(keras_layer).items():
                close(weights_by_name(kbn_layer)[name], value, f"step {i}: {name}")
    assert all(w.dtype == "float32" for w in kbn_layer.weights)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("clipping", [{}, {"rmax": 1.5, "rmin": 0.7, "dmax": 0.5}, {"rmax": 3.0}])
@pytest.mark.parametrize("shape,axis", [((64, 5), -1), ((6, 5, 4, 3), 1)])
def test_batch_renormalization(shape, axis, clipping, training):
    """Renorm: outputs, gradients and all seven weights match Keras and the reference."""
    rng = np.random.default_rng(5)
    config = dict(axis=axis, renorm=True, renorm_clipping=clipping, renorm_momentum=0.8)
    kbn_layer, keras_layer = make_pair(shape, rng, momentum=MOMENTUM, **config)
    names = {w.name for w in kbn_layer.weights}
    assert {"moving_stddev", "renorm_mean", "renorm_stddev"} <= names
    state = {k: v.astype(np.float64) for k, v in weights_by_name(kbn_layer).items()}
    clipped = False
    for i in range(STEPS):
        # Shift and widen the data each step so the clipping of r and d engages.
        x = rng.normal(2.0 * i, 1.0 + 2.0 * i, size=shape).astype("float32")
        upstream = rng.normal(size=shape).astype("float32")
        before = weights_by_name(kbn_layer)
        got, want = step(kbn_layer, x, upstream, training), step(keras_layer, x, upstream, training)
        for name in got:
            close(got[name], want[name], f"step {i}: {name} vs Keras")
        kbn_weights = weights_by_name(kbn_layer)
        for name, value in weights_by_name(keras_layer).items():
            close(kbn_weights[name], value, f"step {i}: weight {name} vs Keras")
        if training:
            r, d = ref.renorm_factors(x, state, 1e-3, axis)
            clipped |= bool(np.any(r > clipping.get("rmax", np.inf))
                            or np.any(r < clipping.get("rmin", -np.inf))
                            or np.any(np.abs(d) > clipping.get("dmax", np.inf)))
            y, new_state = ref.renorm_step(x, before["gamma"], before["beta"], state, 1e-3,
                                           MOMENTUM, 0.8, clipping, axis)
            close(got["y"], y, f"step {i}: y vs reference")
            for name, value in new_state.items():
                close(kbn_weights[name], value, f"step {i}: {name} vs reference")
            state = new_state
    # With clipping, some step must really have clipped r or d, or this case tests nothing more.
    assert clipped == (training and bool(clipping))


@pytest.mark.parametrize("training", [True, False])
def test_batch_renormalization_with_a_mask(training):
    """Renorm's statistics leave masked positions out too (checked against Keras)."""
    rng = np.random.default_rng(9)
    shape = (8, 10, 4)
    mask = ops.convert_to_tensor(rng.random(shape[:-1]) < 0.6)
    config = dict(renorm=True, renorm_clipping={"rmax": 1.5, "dmax": 0.5}, renorm_momentum=0.8)
    kbn_layer, _ = run_and_compare(shape, config, training, rng, normal_input, mask=mask,
                                   reference=False)
    if training:  # the mask really changes the output, so an ignored mask would show
        x = normal_input(rng, shape)
        weights = kbn_layer.get_weights()
        masked = np.asarray(kbn_layer(x, training=True, mask=mask))
        kbn_layer.set_weights(weights)  # the same renorm statistics for the second call
        assert not np.allclose(masked, kbn_layer(x, training=True), atol=1e-3)
