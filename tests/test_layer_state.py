"""The state a kbn layer owns is Keras's: the same weights, variables and, on PyTorch,
module parameters and `state_dict` keys, for every option; and NaN safety's count
(`skipped_updates`), never a weight, counts on every backend, inside `fit` too."""

import keras
import numpy as np
import pytest

import kbn
from conftest import BACKEND

pytestmark = pytest.mark.all_backends

# (N, H, W, C): a NaN at [0, 0, 0, 0] makes one statistic entry non-finite, whatever the axes.
SHAPE = (4, 3, 5, 6)
TF_ONLY = pytest.mark.skipif(BACKEND != "tensorflow", reason="synchronized is TensorFlow's")
UNTRACKED = ("moving_mean", "moving_variance")

# (kbn's options, the options of the Keras layer to compare with, the weights kbn's docs
# add to that layer's, the weights they remove). Options Keras has are compared with
# Keras's layer as it is; kbn's own options with the Keras layer of the rest of the options,
# changed as docs/layer.md says: momentum=None adds the non-trainable `num_batches_tracked`,
# track_moving_statistics=False has no moving statistics; the others add nothing.
CASES = [
    pytest.param({}, {}, (), (), id="plain"),
    pytest.param({"center": False}, {"center": False}, (), (), id="center off"),
    pytest.param({"scale": False}, {"scale": False}, (), (), id="scale off"),
    pytest.param({"center": False, "scale": False}, {"center": False, "scale": False},
                 (), (), id="center and scale off"),
    pytest.param({"axis": 1}, {"axis": 1}, (), (), id="axis 1"),
    pytest.param({"renorm": True, "renorm_clipping": {"rmax": 2.0}},
                 {"renorm": True, "renorm_clipping": {"rmax": 2.0}}, (), (), id="renorm"),
    pytest.param({"renorm": True, "center": False, "scale": False},
                 {"renorm": True, "center": False, "scale": False}, (), (),
                 id="renorm, center and scale off"),
    pytest.param({"synchronized": True}, {"synchronized": True}, (), (), id="synchronized",
                 marks=TF_ONLY),
    pytest.param({"virtual_batch_size": 2}, {}, (), (), id="virtual_batch_size"),
    pytest.param({"virtual_batch_size": 2, "renorm": True}, {"renorm": True}, (), (),
                 id="virtual_batch_size, renorm"),
    pytest.param({"axis": [1, 3]}, {}, (), (), id="axis list"),
    pytest.param({"axis": [3, 1], "renorm": True}, {"renorm": True}, (), (),
                 id="axis list, renorm"),
    pytest.param({"momentum": None}, {}, ("num_batches_tracked",), (), id="momentum None"),
    pytest.param({"momentum": None, "center": False, "scale": False},
                 {"center": False, "scale": False}, ("num_batches_tracked",), (),
                 id="momentum None, center and scale off"),
    pytest.param({"unbiased_moving_variance": True}, {}, (), (),
                 id="unbiased_moving_variance"),
    pytest.param({"track_moving_statistics": False}, {}, (), UNTRACKED,
                 id="track_moving_statistics off"),
    pytest.param({"track_moving_statistics": False, "momentum": None}, {}, (), UNTRACKED,
                 id="track_moving_statistics off, momentum None"),
    pytest.param({"track_moving_statistics": False, "center": False, "scale": False},
                 {"center": False, "scale": False}, (), UNTRACKED,
                 id="track_moving_statistics off, center and scale off"),
]

# Each list of state Keras offers; kbn's added weights are all non-trainable.
STATE_LISTS = {"weights": True, "trainable_weights": False, "non_trainable_weights": True,
               "variables": True, "trainable_variables": False,
               "non_trainable_variables": True}
# JAX's steps carry nothing but variables, so there the count is one (kbn/_skip_count.py).
COUNTER_VARIABLES = ["bn/skipped_updates"] if BACKEND == "jax" else []


def paths(variables):
    return [variable.path for variable in variables]


def batch_with_a_nan():
    x = np.random.default_rng(0).normal(size=SHAPE).astype("float32")
    x[0, 0, 0, 0] = np.nan
    return x


@pytest.mark.parametrize("kbn_options, keras_options, added, removed", CASES)
def test_the_state_is_that_of_kerass_layer(kbn_options, keras_options, added, removed):
    kbn_layer = kbn.BatchNormalization(name="bn", **kbn_options)
    keras_layer = keras.layers.BatchNormalization(name="bn", **keras_options)
    x = batch_with_a_nan()  # a skipped update too: counting it must add no state
    kbn_layer(x, training=True)
    keras_layer(x, training=True)
    for state_list, gets_added in STATE_LISTS.items():
        expected = [path for path in paths(getattr(keras_layer, state_list))
                    if path.split("/")[-1] not in removed]
        expected += [f"bn/{name}" for name in added if gets_added]
        if state_list in ("variables", "non_trainable_variables"):
            expected += COUNTER_VARIABLES
        assert paths(getattr(kbn_layer, state_list)) == expected, state_list
    if kbn_options == keras_options:
        assert ([tuple(v.shape) for v in kbn_layer.weights]
                == [tuple(v.shape) for v in keras_layer.weights])
    if BACKEND == "torch":
        expected_keys = [key for key in keras_layer.state_dict()
                         if key.split("/")[-1] not in removed]
        expected_keys += [f"_torch_params.bn/{name}" for name in added]
        assert sorted(kbn_layer.state_dict()) == sorted(expected_keys)
        assert len(kbn_layer.torch_params) == len(kbn_layer.weights)
    tracking = kbn_options.get("track_moving_statistics", True)
    assert kbn_layer.skipped_updates == (1 if tracking else 0)


def test_skipped_updates_counts_channel_updates_of_training_batches():
    layer = kbn.BatchNormalization(momentum=0.9)
    assert layer.skipped_updates is None  # not built
    x = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")
    layer(x, training=True)
    assert layer.skipped_updates == 0
    bad = x.copy()
    bad[2, 1], bad[5, 3] = np.nan, np.inf
    layer(bad, training=True)
    assert layer.skipped_updates == 2  # one per channel skipped
    layer(bad, training=False)  # inference updates nothing, so skips nothing
    layer(x, training=True)
    assert layer.skipped_updates == 2
    layer(x, training=True, mask=np.zeros((8,), "bool"))  # every channel left empty
    assert layer.skipped_updates == 6
    assert isinstance(layer.skipped_updates, int)


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
@pytest.mark.parametrize("run_eagerly", [False, True])
def test_skipped_updates_counts_inside_fit(run_eagerly):
    """JAX's fit runs stateless steps that carry only the model's variables; the count
    must still reach the layer, and stay out of fit's logs."""
    x = np.random.default_rng(2).normal(size=(32, 3)).astype("float32")
    x[3, 2] = np.nan  # first batch of each epoch, channel 2
    bn = kbn.BatchNormalization(center=False, scale=False, name="bn")
    model = keras.Sequential([keras.Input((3,)), bn])
    model.compile(optimizer="sgd", loss="mse", run_eagerly=run_eagerly)
    history = model.fit(x, np.zeros_like(x), batch_size=8, epochs=3, verbose=0, shuffle=False)
    assert bn.skipped_updates == 3  # not reset between epochs
    assert list(history.history) == ["loss"]
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(bn.moving_variance)))
