"""train.data.models: the builders, BN placement, and same seed ⇒ same initial weights."""

import keras
import numpy as np
import pytest

import kbn
from train.data.models import build_model, hidden_activation_names

SHAPES = {"mlp": (8, 8, 1), "cnn": (8, 8, 1)}


def _build(model, bn, position="before", seed=3):
    return build_model(
        model,
        input_shape=SHAPES[model],
        num_classes=10,
        bn=bn,
        seed=seed,
        hidden=(6, 5) if model == "cnn" else (12, 7, 5),
        bn_position=position,
    )


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("position", ["before", "after"])
def test_keras_and_kbn_variants_start_from_identical_weights(model, position):
    keras_model, kbn_model = _build(model, "keras", position), _build(model, "kbn", position)
    keras_weights, kbn_weights = keras_model.get_weights(), kbn_model.get_weights()
    assert len(keras_weights) == len(kbn_weights)
    for a, b in zip(keras_weights, kbn_weights):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((4, *SHAPES[model]), dtype=np.float32)
    np.testing.assert_allclose(
        keras_model(x, training=True), kbn_model(x, training=True), atol=1e-6
    )


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_seed_changes_the_weights_and_plain_variant_shares_kernels(model):
    plain = _build(model, "none")
    with_bn = _build(model, "kbn")
    other_seed = _build(model, "none", seed=4)
    kernels = [layer.kernel.numpy() for layer in plain.layers if hasattr(layer, "kernel")]
    bn_kernels = [layer.kernel.numpy() for layer in with_bn.layers if hasattr(layer, "kernel")]
    for a, b in zip(kernels, bn_kernels):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(
        kernels[0], other_seed.layers[1 if model == "mlp" else 0].kernel.numpy()
    )


@pytest.mark.parametrize(
    "bn, bn_class", [("keras", keras.layers.BatchNormalization), ("kbn", kbn.BatchNormalization)]
)
@pytest.mark.parametrize(
    "position, order", [("before", ["dense", "bn", "act"]), ("after", ["dense", "act", "bn"])]
)
def test_bn_position_and_bias(bn, bn_class, position, order):
    model = _build("mlp", bn, position)
    kinds = [layer.name.split("_")[0] for layer in model.layers if layer.name.endswith("_1")]
    assert kinds == order
    dense = model.get_layer("dense_1")
    # Before the non-linearity BN's beta replaces the bias; after it the bias stays.
    assert dense.use_bias == (position == "after")
    bns = [layer for layer in model.layers if isinstance(layer, bn_class)]
    assert len(bns) == 3 and all(type(layer) is bn_class for layer in bns)


def test_plain_model_has_no_bn_and_biases():
    model = _build("mlp", "none")
    assert not any("bn" in layer.name for layer in model.layers)
    assert model.get_layer("dense_1").use_bias


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_output_is_a_distribution_and_activation_names(model):
    net = _build(model, "kbn")
    probabilities = net(np.zeros((2, *SHAPES[model]), np.float32)).numpy()
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert hidden_activation_names(net) == [
        f"act_{i}" for i in range(1, 4 if model == "mlp" else 3)
    ]


def test_bn_momentum_and_epsilon_reach_the_layers():
    net = build_model(
        "mlp",
        input_shape=(4,),
        num_classes=2,
        bn="kbn",
        hidden=(3,),
        bn_momentum=0.9,
        bn_epsilon=1e-5,
    )
    layer = net.get_layer("bn_1")
    assert layer.momentum == pytest.approx(0.9) and layer.epsilon == pytest.approx(1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bn": "torch"}, "bn must be"),
        ({"bn_position": "middle"}, "bn_position"),
        ({"model": "rnn"}, "model must be"),
    ],
)
def test_bad_choices_raise(kwargs, message):
    arguments = {"model": "mlp", "input_shape": (4,), "num_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_model(arguments.pop("model"), **arguments)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("scale", [0.1, 3.0, 10.0])
def test_init_scale_multiplies_every_kernels_default_draws(model, scale):
    """Guards --init-scale (E9): the same Glorot draws times `scale`, and ×1 the default."""
    default = _build(model, "kbn")
    scaled = build_model(model, input_shape=SHAPES[model], num_classes=10, bn="kbn", seed=3,
                         hidden=(6, 5) if model == "cnn" else (12, 7, 5), init_scale=scale)
    kernels = [(a.name, a.kernel.numpy()) for a in default.layers if hasattr(a, "kernel")]
    scaled_kernels = [b.kernel.numpy() for b in scaled.layers if hasattr(b, "kernel")]
    assert len(kernels) == len(scaled_kernels) == (4 if model == "mlp" else 3)
    for (name, a), b in zip(kernels, scaled_kernels):
        # U(−limit, limit) is −limit + 2·limit·u in float32: draws near 0 carry an absolute
        # rounding of about limit·2⁻²³ (limit ≤ 1.3·scale here), not a relative one.
        np.testing.assert_allclose(b, scale * a, rtol=1e-6, atol=1e-6 * scale, err_msg=name)
        assert not np.allclose(a, b)


def test_dropout_follows_each_hidden_block_and_is_absent_by_default():
    plain = _build("mlp", "none")
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in plain.layers)
    for position, order in (("before", ["dense", "bn", "act", "dropout"]),
                            ("after", ["dense", "act", "bn", "dropout"])):
        net = build_model("mlp", input_shape=SHAPES["mlp"], num_classes=10, bn="kbn",
                          hidden=(12, 7, 5), bn_position=position, dropout=0.3)
        assert [layer.name.split("_")[0] for layer in net.layers
                if layer.name.endswith("_2")] == order
        dropouts = [layer for layer in net.layers if isinstance(layer, keras.layers.Dropout)]
        assert [layer.rate for layer in dropouts] == [0.3] * 3
    x = np.ones((64, *SHAPES["mlp"]), np.float32)
    np.testing.assert_array_equal(net(x, training=False), net(x, training=False))
    assert not np.allclose(net(x, training=True), net(x, training=False))  # dropout is on
