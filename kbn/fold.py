"""Folding inference-mode batch norm into the neighbouring linear layer.

    import kbn
    fast = kbn.fold_batchnorm(model)                      # a new model, BN folded away
    fast, report = kbn.fold_batchnorm(model, return_report=True)
    print(report)                      # what was folded where, what was not and why

At inference, batch norm is a per-channel affine map:

    BN(x) = γ (x − μ) / sqrt(σ² + ε) + β = k·x + b,   k = γ / sqrt(σ² + ε),   b = β − μ·k

(μ, σ² the moving statistics), so a linear layer next to it can absorb it.

Backward, into the layer before (Dense, Conv1D/2D/3D, DepthwiseConv1D/2D,
SeparableConv1D/2D, Conv*Transpose, with a linear activation and feeding only
this BN): its output channel o, z_o = W_o·x + c_o, becomes
k_o·z_o + b_o = (k_o W_o)·x + (k_o c_o + b_o): scale the kernel's output
channel by k_o, and the bias becomes k_o c_o + b_o.

Forward, into the layer after (Dense, or Conv1D/2D/3D with padding="valid"
and groups=1), for BN after a non-linearity, where backward folding is
impossible: the next layer's input channel i, y_i = k_i x_i + b_i, gives
Σ_i W_io (k_i x_i + b_i) + c_o, so the kernel's input channel i is scaled by
k_i and the bias gains Σ_{i, kernel positions} W_io b_i. With zero ("same")
padding the border positions would see 0 instead of b_i, so only "valid"
convolutions take a forward fold.

The folded weights are computed in float64 and stored as float32: each output
is the same sum of products as before, reassociated, so folded and original
predictions differ by float32 rounding: measured up to 3e-7 of the largest
output on the test models (TensorFlow and JAX), 1.3e-6 on ResNet-50 at
128×128 and 2.2e-6 at 32×32 (`benchmarks/models.py`); the tests allow 1e-5.
"""

import dataclasses

import keras
import numpy as np

from kbn import _bn_layers, _cloning, _keras_compat
from kbn.batch_normalization import BatchNormalization
from kbn.convert import config_for

L = keras.layers
# Layers that can take a backward fold, with the axis of their kernel that
# indexes output channels (None: depthwise, whose output channel is in·multiplier).
_BACKWARD = (
    (L.Conv1DTranspose, -2), (L.Conv2DTranspose, -2), (L.Conv3DTranspose, -2),
    (L.SeparableConv1D, -1), (L.SeparableConv2D, -1),
    (L.DepthwiseConv1D, None), (L.DepthwiseConv2D, None),
    (L.Dense, -1), (L.Conv1D, -1), (L.Conv2D, -1), (L.Conv3D, -1),
)
# Layers that can take a forward fold (depthwise, separable and transposed
# convolutions subclass these in some Keras versions, hence the exact types).
_FORWARD = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)


@dataclasses.dataclass
class FoldReport:
    """What `fold_batchnorm` did.

    Attributes:
        folded: {BN layer name: "backward into <layer>" or "forward into <layer>"}.
        kept: {BN layer name: why it was not folded}.
    """

    folded: dict
    kept: dict

    def __str__(self):
        lines = [f"folded {len(self.folded)} batch-norm layers, kept {len(self.kept)}"]
        lines += [f"  {name}: {where}" for name, where in self.folded.items()]
        lines += [f"  {name}: kept: {reason}" for name, reason in self.kept.items()]
        return "\n".join(lines)


def affine_form(layer):
    """BN at inference as `k·x + b` per channel: `k = γ / sqrt(σ² + ε)`, `b = β − μ·k` (float64).

    Args:
        layer: A built batch-norm layer with moving statistics.

    Returns:
        `(k, b)`, each of shape `(channels,)`.
    """
    def value(variable, default):
        return default if variable is None else np.asarray(
            keras.ops.convert_to_numpy(variable), "float64")

    mean = value(layer.moving_mean, None)
    variance = value(layer.moving_variance, None)
    gamma = value(layer.gamma, 1.0)
    beta = value(layer.beta, 0.0)
    k = gamma / np.sqrt(variance + layer.epsilon)
    return k, beta - mean * k


def fold_backward(kernel, bias, k, b, channel_axis):
    """Weights of `k·(linear(x)) + b`: kernel scaled by k on its output-channel axis.

    Args:
        kernel: The linear layer's kernel (float64).
        bias: Its bias, or None.
        k, b: `affine_form` of the BN after it.
        channel_axis: The kernel's output-channel axis, or None for a
            depthwise kernel `(..., in, multiplier)`, whose output channel
            `i·multiplier + j` is kernel entry `[..., i, j]`.

    Returns:
        `(kernel, bias)`: `k·kernel` and `k·bias + b`.
    """
    if channel_axis is None:
        scale = k.reshape(kernel.shape[-2:])
    else:
        shape = [1] * kernel.ndim
        shape[channel_axis] = k.size
        scale = k.reshape(shape)
    new_bias = b if bias is None else k * bias + b
    return kernel * scale, new_bias


def fold_forward(kernel, bias, k, b):
    """Weights of `linear(k·x + b)` for a Dense or convolution kernel `(..., in, out)`.

    Returns:
        `(kernel, bias)`: the kernel scaled by k on its input-channel axis, and
        `bias + Σ_{positions, i} kernel[..., i, o] · b_i`.
    """
    new_kernel = kernel * k[:, None]
    shift = np.tensordot(kernel, b, axes=([kernel.ndim - 2], [0]))  # (..., out)
    shift = shift.reshape(-1, kernel.shape[-1]).sum(axis=0)
    return new_kernel, shift if bias is None else bias + shift


def fold_batchnorm(model, return_report=False):
    """A new model in which each inference-mode batch norm is folded into a neighbour.

    Each batch-norm layer (kbn's or Keras's) is folded backward into the
    linear layer before it when it can be, else forward into the layer after
    it (see the module docstring for which layers and why). A folded BN
    leaves the graph (in a Sequential model an `Identity` layer of the same
    name holds its place), and the layer it went into gains a bias. BN
    layers that cannot be folded exactly stay (the report says why); kbn's
    among them become `keras.layers.BatchNormalization` (same numbers at
    inference), so the folded model, saved as `.keras`, loads with plain
    Keras. The original model is untouched.

    The folded model is for inference: in training mode it has no batch
    normalization left. Its predictions equal the original's to float32
    rounding (see the module docstring).

    Args:
        model: A Sequential or functional model (nested ones included).
        return_report: Also return a `FoldReport`.

    Returns:
        The folded model, or `(model, report)` with `return_report=True`.

    Raises:
        ValueError: the model is subclassed, or has no batch-norm layer.
    """
    _cloning.check_graph_model(model, "fold_batchnorm")
    layers = _bn_layers.batch_norm_layers(model)
    if not layers:
        raise ValueError(f"fold_batchnorm needs a model with batch-norm layers; model "
                         f"{model.name!r} has none.")
    outputs = _model_outputs(model)
    plan, kept = {}, {}
    for layer in layers:
        if not _bn_layers.has_moving_statistics(layer):
            kept[layer.name] = ("it keeps no moving statistics, so it normalizes with batch "
                                "statistics at inference too")
            continue
        if _cloning.call_count(layer) != 1:
            kept[layer.name] = "it is called more than once (shared)"
            continue
        where = _backward_target(layer, outputs)
        direction = "backward"
        if isinstance(where, str):
            reason_backward = where
            where = _forward_target(layer, outputs)
            direction = "forward"
            if isinstance(where, str):
                kept[layer.name] = f"{reason_backward}; {where}"
                continue
        plan[id(layer)] = (layer, direction, where)

    new_weights = _folded_weights(plan.values())
    targets = {id(target) for _, _, target in plan.values()}
    kept_classes = {}

    def replace(layer):
        if id(layer) in targets:
            return layer.__class__.from_config({**layer.get_config(), "use_bias": True})
        if isinstance(layer, BatchNormalization):
            try:
                config = config_for(layer, L.BatchNormalization)
            except ValueError as error:
                kept_classes[layer.name] = f" (kept as kbn.BatchNormalization: {error})"
                return None
            return L.BatchNormalization.from_config(config)
        return None

    copy, pairs = _cloning.clone_with(model, replace, drop=plan)
    for layer, new in pairs:
        if id(layer) in targets:
            for name, value in new_weights[id(layer)].items():
                variable = getattr(new, name)
                variable.assign(value.astype(variable.dtype))
        elif isinstance(layer, _bn_layers.BATCH_NORM_CLASSES) and id(layer) not in plan:
            new.set_weights(layer.get_weights())
    for name, suffix in kept_classes.items():
        kept[name] += suffix
    report = FoldReport(
        {layer.name: f"{direction} into {target.name}" for layer, direction, target
         in plan.values()},
        kept,
    )
    return (copy, report) if return_report else copy


def _folded_weights(folds):
    """{id(target layer): {weight attribute: new value}}: forward folds first, then backward."""
    weights = {}

    def current(target):
        if id(target) not in weights:
            names = _kernel_names(target)
            weights[id(target)] = {
                name: np.asarray(keras.ops.convert_to_numpy(getattr(target, name)), "float64")
                for name in names
            }
            weights[id(target)]["bias"] = (
                np.asarray(keras.ops.convert_to_numpy(target.bias), "float64")
                if target.use_bias else None
            )
        return weights[id(target)]

    ordered = sorted(folds, key=lambda fold: fold[1] != "forward")
    for layer, direction, target in ordered:
        k, b = affine_form(layer)
        values = current(target)
        kernel_name = _kernel_names(target)[-1]
        if direction == "forward":
            values[kernel_name], values["bias"] = fold_forward(values[kernel_name],
                                                               values["bias"], k, b)
        else:
            values[kernel_name], values["bias"] = fold_backward(
                values[kernel_name], values["bias"], k, b, _output_axis(target))
    return weights


def _kernel_names(layer):
    """The kernel attributes of a linear layer; the last one maps to the output channels."""
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        return ["depthwise_kernel", "pointwise_kernel"]
    return ["kernel"]


def _output_axis(layer):
    for cls, axis in _BACKWARD:
        if isinstance(layer, cls):
            return axis
    raise AssertionError(layer)


def _backward_target(bn, outputs):
    """The layer `bn` can fold backward into, or a string saying why there is none."""
    producer = _single_neighbour(bn, "inbound")
    if isinstance(producer, str):
        return producer
    if not isinstance(producer, keras.layers.Layer):
        return (f"the operation before it ({producer.name}, keras.ops {type(producer).__name__}) "
                "is not a layer with a kernel")
    if not isinstance(producer, tuple(cls for cls, _ in _BACKWARD)):
        return f"the layer before it ({producer.name}, {type(producer).__name__}) is not linear"
    if producer.activation not in (None, keras.activations.linear):
        return f"the layer before it ({producer.name}) has a non-linear activation"
    if getattr(producer, "quantization_mode", None):
        return f"the layer before it ({producer.name}) is quantized"
    if _cloning.call_count(producer) != 1 or len(_cloning.consumers(producer)) != 1:
        return f"the layer before it ({producer.name}) is shared or feeds other layers too"
    if id(producer.output) in outputs:
        return f"the output of the layer before it ({producer.name}) is a model output"
    reason = _axis_mismatch(bn, producer, output_side=True)
    return reason or producer


def _forward_target(bn, outputs):
    """The layer `bn` can fold forward into, or a string saying why there is none."""
    if id(bn.output) in outputs:
        return "its output is a model output"
    consumer = _single_neighbour(bn, "outbound")
    if isinstance(consumer, str):
        return consumer
    if not isinstance(consumer, keras.layers.Layer):
        return (f"the operation after it ({consumer.name}, keras.ops {type(consumer).__name__}) "
                "is not a layer with a kernel")
    if type(consumer) not in _FORWARD:
        return (f"the layer after it ({consumer.name}, {type(consumer).__name__}) is not a "
                "Dense or convolution")
    if type(consumer) is not L.Dense:
        if consumer.padding != "valid":
            return (f"the convolution after it ({consumer.name}) pads with zeros "
                    f"(padding={consumer.padding!r}), which would see BN's shift")
        if consumer.groups != 1:
            return f"the convolution after it ({consumer.name}) has groups={consumer.groups}"
    if getattr(consumer, "quantization_mode", None):
        return f"the layer after it ({consumer.name}) is quantized"
    if _cloning.call_count(consumer) != 1:
        return f"the layer after it ({consumer.name}) is shared"
    reason = _axis_mismatch(bn, consumer, output_side=False)
    return reason or consumer


def _single_neighbour(bn, side):
    """The one operation before (side="inbound") or after `bn`, or a string saying why none."""
    if side == "inbound":
        parents = _cloning.producers(bn)
        if len(parents) != 1:
            return "it has no single layer before it"
        return parents[0]
    consumers = _cloning.consumers(bn)
    if len(consumers) != 1:
        return f"its output feeds {len(consumers)} layers"
    return consumers[0]


def _axis_mismatch(bn, neighbour, output_side):
    """None if `bn` normalizes the channel axis the neighbour's kernel maps; else why not."""
    axes = _bn_layers.channel_axes(bn)
    if len(axes) != 1:
        return f"it normalizes several axes {list(axes)}; only one channel axis folds"
    rank = len(bn.output.shape)
    axis = axes[0] % rank
    if isinstance(neighbour, L.Dense):
        expected = rank - 1
    else:
        expected = 1 if neighbour.data_format == "channels_first" else rank - 1
    if axis != expected:
        where = "output" if output_side else "input"
        return (f"it normalizes axis {axis}, not the {where} channel axis {expected} of "
                f"{neighbour.name}")
    return None


def _model_outputs(model):
    """ids of every model output tensor, nested models included."""
    found = set()
    for layer in [model, *_keras_compat.sublayers(model)]:
        for tensor in keras.tree.flatten(getattr(layer, "outputs", None) or []):
            found.add(id(tensor))
    return found
