"""Closed-form checks of one training step, and the reference checked against itself."""

import numpy as np
import pytest

import kbn
import numpy_reference as ref

pytestmark = [pytest.mark.all_backends, pytest.mark.usefixtures("each_kernel_path")]


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.99, 1.0])
def test_one_step_from_initial_statistics(momentum):
    """From moving (0, 1): mean = (1−m)·mean(x), variance = m + (1−m)·var(x)."""
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4)).astype("float32")
    layer = kbn.BatchNormalization(momentum=momentum)
    layer(x, training=True)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(layer.moving_mean.numpy(), (1 - momentum) * x64.mean(0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               momentum + (1 - momentum) * x64.var(0), rtol=1e-5, atol=1e-6)


def test_training_output_is_standardized():
    """With γ = 1, β = 0 a training batch comes out with mean 0 and variance var/(var+ε)."""
    x = np.random.default_rng(1).normal(-5.0, 4.0, size=(200, 3)).astype("float32")
    y = np.asarray(kbn.BatchNormalization(epsilon=1e-3)(x, training=True), np.float64)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    var = x.astype(np.float64).var(0)
    np.testing.assert_allclose(y.var(0), var / (var + 1e-3), rtol=1e-5)


def test_inference_uses_moving_statistics():
    layer = kbn.BatchNormalization(epsilon=1e-3)
    layer.build((None, 2))
    layer.set_weights([np.array([2.0, 1.0]), np.array([0.5, -1.0]),
                       np.array([1.0, -3.0]), np.array([4.0, 0.25])])
    x = np.array([[3.0, -2.0]], "float32")
    want = np.array([2.0 * (3 - 1) / np.sqrt(4.001) + 0.5, 1.0 * (-2 + 3) / np.sqrt(0.251) - 1.0])
    np.testing.assert_allclose(np.asarray(layer(x, training=False))[0], want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(layer(x))[0], want, rtol=1e-6)  # training=None


def test_reference_backward_matches_finite_differences():
    """The reference's hand-written gradients, checked numerically in float64."""
    rng = np.random.default_rng(2)
    x, dy = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    gamma, beta, eps = rng.normal(size=3), rng.normal(size=3), 1e-3

    def loss(x, gamma, beta):
        mean, var = ref.batch_moments(x)
        return np.sum(dy * ref.normalize(x, mean, var, gamma, beta, eps))

    dx, dgamma, dbeta = ref.backward(x, dy, gamma, eps)
    h = 1e-6
    for array, grad in ((x, dx), (gamma, dgamma), (beta, dbeta)):
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            saved = array[i]
            array[i] = saved + h
            up = loss(x, gamma, beta)
            array[i] = saved - h
            down = loss(x, gamma, beta)
            array[i] = saved
            numeric[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)
