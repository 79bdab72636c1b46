"""kbn installed without TensorFlow (kbn[jax]): the layer imports, trains
with `fit` on JAX and never imports TensorFlow; the callbacks say what to install
(the `tensorboard` package, which kbn[jax] does not bring).

`make test-lean` runs these in `.venv-lean` with KBN_LEAN=1, where an installed
TensorFlow fails them. The usual environments have TensorFlow: there, without
KBN_LEAN, the module is skipped.
"""

import importlib.util
import os
import sys

import keras
import numpy as np
import pytest

import kbn
import kbn.callbacks
import numpy_reference as ref

if os.environ.get("KBN_LEAN") != "1" and importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed here; `make test-lean` runs these in .venv-lean",
                allow_module_level=True)

pytestmark = pytest.mark.lean

# float32 against float64, inputs of scale ~3, 8 moving updates: measured up to 8.1e-7
# on the moving variance (≈ 5) and 4.7e-7 on the outputs. Allowed: 1e-5 (rtol = atol);
# one update fewer moves the mean by 0.16 and the variance by 0.58.
TOLERANCE = 1e-5
MOMENTUM = 0.9


def test_the_environment_has_no_tensorflow():
    assert importlib.util.find_spec("tensorflow") is None, "TensorFlow is installed"
    assert keras.backend.backend() == "jax"


def test_fit_on_jax_then_inference_matches_numpy_and_tensorflow_stays_unimported():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 2)).astype("float32")
    # A seeded initializer, not keras.utils.set_random_seed: that one imports TensorFlow
    # to seed it too wherever it is installed, which would hide kbn's own imports.
    bn = kbn.BatchNormalization(momentum=MOMENTUM)
    dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(seed=0))
    model = keras.Sequential([keras.Input((4,)), bn, dense])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    # BN comes first, so its batches are slices of x whatever the training did:
    # the moving statistics follow from x alone, one update per step (8 steps).
    mean, variance = np.zeros(4), np.ones(4)
    for _ in range(2):
        for batch in np.split(x, 4):
            batch_mean, batch_variance = ref.batch_moments(batch)
            mean = ref.moving_update(mean, batch_mean, MOMENTUM)
            variance = ref.moving_update(variance, batch_variance, MOMENTUM)
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance,
                               rtol=TOLERANCE, atol=TOLERANCE)
    gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
    assert not np.allclose(gamma, 1.0) and not np.allclose(beta, 0.0)  # fit trained them
    expected = ref.normalize(x, mean, variance, gamma, beta, bn.epsilon)
    outputs = keras.ops.convert_to_numpy(bn(x, training=False))
    np.testing.assert_allclose(outputs, expected, rtol=TOLERANCE, atol=TOLERANCE)
    assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("construct", [
    lambda: kbn.callbacks.BatchStatsMonitor("unused"),
    lambda: kbn.callbacks.ActivationInputMonitor(np.zeros((1, 4)), "unused"),
], ids=["BatchStatsMonitor", "ActivationInputMonitor"])
def test_the_callbacks_say_they_need_tensorboard(construct):
    with pytest.raises(ImportError, match=r"tensorboard package.*pip install tensorboard"):
        construct()
