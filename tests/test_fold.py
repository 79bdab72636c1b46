"""kbn.fold_batchnorm: folded predictions match the original's (Sequential, functional,
nested, channels-first), the report says what stayed and why, and the folded file loads
with plain Keras."""

import keras
import numpy as np
import pytest

import cpu_config
import kbn
from kbn import _bn_layers, _keras_compat
from plain_keras import PlainKeras

pytestmark = pytest.mark.all_backends

L = keras.layers
# Folded outputs are the same sums of products, reassociated in float32; measured
# up to 3e-7 of the output's scale on these models (TF, JAX), 2.2e-6 on ResNet-50.
# Allowed: 1e-5 of it.
TOLERANCE = 1e-5


def randomize(model, seed=0):
    """Non-trivial γ (both signs), β and moving statistics in every BN layer."""
    rng = np.random.default_rng(seed)
    for layer in _bn_layers.batch_norm_layers(model):
        shape = tuple(layer.gamma.shape)
        values = {"gamma": rng.uniform(0.5, 2, shape) * rng.choice([-1, 1], shape),
                  "beta": rng.normal(size=shape), "moving_mean": rng.normal(size=shape),
                  "moving_variance": rng.uniform(0.2, 3, shape)}
        for weight in layer.weights:
            if weight.name in values:
                weight.assign(values[weight.name].astype("float32"))
    return model


def assert_same_predictions(model, folded, x):
    expected = model.predict(x, verbose=0)
    actual = folded.predict(x, verbose=0)
    assert np.max(np.abs(actual - expected)) <= TOLERANCE * np.max(np.abs(expected))


def every_kind():
    """Each foldable neighbour once, BN of both classes, and one BN that cannot fold."""
    return keras.Sequential([
        keras.Input((9, 9, 3)),
        L.Conv2D(4, 3, name="conv"), kbn.BatchNormalization(name="bn_conv"), L.ReLU(),
        L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="depthwise"),
        L.BatchNormalization(name="bn_depthwise"), L.Activation("tanh"),
        kbn.BatchNormalization(name="bn_forward_conv"), L.Conv2D(5, 2, name="valid_conv"),
        kbn.BatchNormalization(name="bn_valid_conv"),
        L.SeparableConv2D(6, 3, padding="same", name="separable"),
        L.BatchNormalization(name="bn_separable"),
        L.Conv2DTranspose(3, 3, name="transpose"), kbn.BatchNormalization(name="bn_transpose"),
        L.Activation("relu"), kbn.BatchNormalization(name="bn_kept"),
        L.Conv2D(2, 3, padding="same", name="same_conv"),
        L.Flatten(), kbn.BatchNormalization(name="bn_forward_dense"), L.Dense(3, name="dense"),
    ])


def test_sequential_every_kind_of_neighbour():
    model = randomize(every_kind())
    before = [w.copy() for w in model.get_weights()]
    folded, report = kbn.fold_batchnorm(model, return_report=True)
    assert report.folded == {
        "bn_conv": "backward into conv", "bn_depthwise": "backward into depthwise",
        "bn_forward_conv": "forward into valid_conv", "bn_valid_conv": "backward into valid_conv",
        "bn_separable": "backward into separable", "bn_transpose": "backward into transpose",
        "bn_forward_dense": "forward into dense",
    }
    assert list(report.kept) == ["bn_kept"]
    assert "not linear" in report.kept["bn_kept"] and "padding='same'" in report.kept["bn_kept"]
    x = np.random.default_rng(1).normal(size=(6, 9, 9, 3)).astype("float32")
    assert_same_predictions(model, folded, x)
    # What is left: one Keras BN (the kept kbn layer, converted), no kbn layer.
    kinds = [type(layer) for layer in _keras_compat.sublayers(folded)]
    assert kinds.count(L.BatchNormalization) == 1 and kbn.BatchNormalization not in kinds
    # The original is untouched.
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(_bn_layers.batch_norm_layers(model)) == 8


def test_functional_nested_and_what_cannot_fold():
    inner = keras.Sequential([keras.Input((6,)), L.Dense(5, name="inner_dense"),
                              kbn.BatchNormalization(name="inner_bn")], name="inner")
    inputs = keras.Input((4,))
    shared = L.Dense(6, name="branching")(inputs)
    left = kbn.BatchNormalization(name="bn_left")(shared)   # 'branching' feeds two layers
    right = L.BatchNormalization(name="bn_right")(shared)
    hidden = inner(L.Activation("sigmoid")(L.Add()([left, right])))
    hidden = L.Dense(3, activation="relu", name="relu_dense")(hidden)
    output = kbn.BatchNormalization(name="bn_output")(hidden)  # after relu, a model output
    model = randomize(keras.Model(inputs, output))
    folded, report = kbn.fold_batchnorm(model, return_report=True)
    assert report.folded == {"inner_bn": "backward into inner_dense"}
    assert "feeds other layers" in report.kept["bn_left"]
    assert "non-linear activation" in report.kept["bn_output"]
    assert "model output" in report.kept["bn_output"]
    x = np.random.default_rng(2).normal(size=(8, 4)).astype("float32")
    assert_same_predictions(model, folded, x)
    # In a functional graph the folded BN is gone, not an Identity.
    inner_copy = folded.get_layer("inner")
    assert [type(layer) for layer in inner_copy.layers] in ([L.Dense], [L.Dense, L.Identity])


@pytest.mark.parametrize("rank", [3, 4])
def test_channels_first(rank):
    """Runs wherever channels-first convolutions do: TensorFlow without oneDNN
    has none on the CPU, so there the same test runs in a process with oneDNN
    on (JAX and PyTorch run it in place)."""
    if keras.backend.backend() == "tensorflow" and not cpu_config.has_channels_first_conv():
        passed, output = cpu_config.run_with_onednn(f"{__file__}::test_channels_first[{rank}]")
        assert passed, output[-3000:]
        return
    conv = {3: L.Conv1D, 4: L.Conv2D}[rank]
    shape = (3,) + (7,) * (rank - 2)
    inputs = keras.Input(shape)
    hidden = conv(4, 3, data_format="channels_first", name="first")(inputs)
    hidden = kbn.BatchNormalization(axis=1, name="bn_backward")(hidden)
    hidden = L.Activation("tanh")(hidden)
    hidden = L.BatchNormalization(axis=1, name="bn_forward")(hidden)
    hidden = conv(2, 2, data_format="channels_first", name="second")(hidden)
    hidden = L.BatchNormalization(axis=-1, name="bn_wrong_axis")(hidden)
    model = randomize(keras.Model(inputs, L.Flatten()(hidden)))
    folded, report = kbn.fold_batchnorm(model, return_report=True)
    assert report.folded == {"bn_backward": "backward into first",
                             "bn_forward": "forward into second"}
    assert "not the output channel axis 1 of second" in report.kept["bn_wrong_axis"]
    x = np.random.default_rng(3).normal(size=(5, *shape)).astype("float32")
    assert_same_predictions(model, folded, x)


def test_folded_file_loads_with_plain_keras(tmp_path):
    model = randomize(every_kind())
    folded = kbn.fold_batchnorm(model)
    path = str(tmp_path / "folded.keras")
    folded.save(path)
    x = np.random.default_rng(4).normal(size=(3, 9, 9, 3)).astype("float32")
    with PlainKeras() as plain:
        assert plain.relative_error(path, x, model.predict(x, verbose=0)) <= TOLERANCE


def test_refusals():
    with pytest.raises(ValueError, match="has none"):
        kbn.fold_batchnorm(keras.Sequential([keras.Input((3,)), L.Dense(2)]))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.bn = kbn.BatchNormalization()

        def call(self, x):
            return self.bn(x)

    with pytest.raises(ValueError, match="needs a Sequential or functional model"):
        kbn.fold_batchnorm(Subclassed())


def test_kbn_options():
    """Several axes and no moving statistics stay (with the reason); a cumulative average
    and ghost batches are ordinary inference-mode BN and fold."""
    inputs = keras.Input((4, 5))
    hidden = L.Dense(5, name="d1")(inputs)
    hidden = kbn.BatchNormalization(axis=[1, 2], name="bn_axes")(hidden)
    hidden = L.Dense(5, name="d2")(hidden)
    hidden = kbn.BatchNormalization(track_moving_statistics=False, name="bn_untracked")(hidden)
    hidden = L.Dense(5, name="d3")(hidden)
    hidden = kbn.BatchNormalization(momentum=None, virtual_batch_size=2, name="bn_ghost")(hidden)
    model = randomize(keras.Model(inputs, L.Dense(2, name="out")(hidden)))
    folded, report = kbn.fold_batchnorm(model, return_report=True)
    assert report.folded == {"bn_ghost": "backward into d3"}
    assert "several axes [1, 2]" in report.kept["bn_axes"]
    assert "kept as kbn.BatchNormalization" in report.kept["bn_axes"]
    assert "no moving statistics" in report.kept["bn_untracked"]
    x = np.random.default_rng(6).normal(size=(4, 4, 5)).astype("float32")
    assert_same_predictions(model, folded, x)
