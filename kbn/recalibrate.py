"""Precise inference statistics: the paper's Algorithm 2 for a trained model.

    import kbn
    report = kbn.recalibrate(model, x_train, batch_size=60)
    print(report)                      # per layer: how far the moving statistics moved
    model.evaluate(x_val, y_val)       # now with statistics of the trained network

The moving averages a batch-norm layer keeps during training lag the network
(with momentum 0.99 they average roughly the last few hundred steps, taken
while the weights were still changing). Ioffe & Szegedy's Algorithm 2 instead
computes the inference statistics with the trained network over the training
data; PyTorch offers it as `torch.optim.swa_utils.update_bn`, fvcore as
PreciseBN. `recalibrate` does it for Keras models built with
`kbn.BatchNormalization` or `keras.layers.BatchNormalization`, on every
backend.
"""

import dataclasses
import math

import keras
import numpy as np

from kbn import _bn_layers, _cloning, _drift, _keras_compat
from kbn._variables import restored_variables
from kbn.batch_normalization import BatchNormalization

DEFAULT_BATCH_SIZE = 32  # Keras's default for arrays


@dataclasses.dataclass
class LayerRecalibration:
    """How far one layer's moving statistics moved.

    Attributes:
        name: The layer's name.
        mean_shift: Mean over channels of |new mean − old mean| / sqrt(old variance + ε).
        variance_ratio: Mean over channels of new variance / (old variance + ε).
    """

    name: str
    mean_shift: float
    variance_ratio: float


@dataclasses.dataclass
class RecalibrationReport:
    """What `recalibrate` did.

    Attributes:
        layers: One `LayerRecalibration` per recalibrated layer, in layer order.
        skipped: {layer name: why it was left as it was}.
        batches: Batches run through the model (after `steps`).
        samples: Samples in those batches.
    """

    layers: list
    skipped: dict
    batches: int
    samples: int

    def __str__(self):
        lines = [f"recalibrated {len(self.layers)} batch-norm layers over {self.samples} samples"
                 f" ({self.batches} batches)"]
        width = max([len(change.name) for change in self.layers] + [5])
        lines.append(f"{'layer'.ljust(width)}  mean shift  variance ratio")
        for change in self.layers:
            lines.append(f"{change.name.ljust(width)}  {change.mean_shift:10.4g}"
                         f"  {change.variance_ratio:14.4g}")
        lines += [f"left as is: {name}: {reason}" for name, reason in self.skipped.items()]
        return "\n".join(lines)


def recalibrate(model, data, batch_size=None, steps=None, unbiased=True, verbose=0):
    """Recomputes every batch-norm layer's moving mean and variance (Algorithm 2).

    The model runs in training mode over `data`, so every layer normalizes with
    batch statistics and each batch-norm layer sees the inputs it sees in
    training; all layers are therefore recalibrated in the same passes. For a
    layer whose input batch b has n_b samples and m_b entries per channel
    (n_b × the spatial positions), with batch mean μ_b and biased variance σ²_b:

        E[x]   = Σ_b n_b μ_b / Σ_b n_b
        Var[x] = Σ_b n_b c_b σ²_b / Σ_b n_b,   c_b = m_b / (m_b − 1) if unbiased else 1

    With equal batches this is the paper's Algorithm 2 (step 10) for
    `unbiased=True`, and fvcore's PreciseBN for `unbiased=False`. Batches with
    m_b < 2 carry no variance and are left out.

    Nothing else changes: every other variable (weights, γ, β, renorm
    averages, random-seed states, kbn's skip counters), the optimizer, the
    `trainable` flags and the momenta are exactly as before; if anything fails
    midway, every variable is restored and no layer is left half-updated.
    Layers that cannot be recalibrated (frozen, `trainable=False`; without
    moving statistics, `track_moving_statistics=False`; shared, called more
    than once in one forward pass, whose moving statistics would hold the last
    call's batch only) are left as they are and listed in the report.
    Dropout is active in these passes, as in training. kbn's options: several
    axes and `momentum=None` are served alike; with `virtual_batch_size=k` the
    statistics are those of ghost batches, so m_b counts k samples;
    `unbiased_moving_variance` is replaced by `unbiased`
    here (the correction is applied once).

    Args:
        model: A Keras model with `kbn.BatchNormalization` and/or
            `keras.layers.BatchNormalization` layers (nested models included).
        data: The training inputs: a NumPy array or tensor (or a list/dict of
            them for a multi-input model), cut into batches of `batch_size`;
            or an iterable of batches (`tf.data.Dataset`, generator, list)
            yielding `x` or `(x, y)` / `(x, y, sample_weight)`.
        batch_size: Batch size for array data (default 32); use the training
            batch size. Must be >= 2. Not allowed with an iterable (already batched).
        steps: Use at most this many batches (default: all of `data`).
        unbiased: Multiply each batch's variance by m/(m − 1) first (Algorithm 2).
        verbose: 1 shows a Keras progress bar.

    Returns:
        A `RecalibrationReport`; `print(report)` gives a table.

    Raises:
        ValueError: the model has no batch-norm layer (or none that can be
            recalibrated), `data` is empty or does not fit the model's inputs,
            `batch_size` < 2, `steps` < 1, or a batch gives non-finite
            statistics.
    """
    layers = _bn_layers.batch_norm_layers(model)
    if not layers:
        raise ValueError(f"recalibrate needs a model with batch-norm layers; model "
                         f"{model.name!r} has none.")
    _check_arguments(batch_size, steps)
    calls = _cloning.calls_per_pass(model)
    skipped = {layer.name: _bn_layers.not_recalibratable(layer, calls.get(id(layer), 1))
               for layer in layers}
    skipped = {name: reason for name, reason in skipped.items() if reason}
    layers = [layer for layer in layers if layer.name not in skipped]
    if not layers:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        raise ValueError(f"no batch-norm layer of model {model.name!r} can be recalibrated "
                         f"({reasons}).")
    entries = [_entries_per_sample(layer, unbiased) for layer in layers]
    batches = _input_batches(model, data, batch_size)
    progress = None
    if verbose:
        progress = keras.utils.Progbar(_batch_count(model, data, batch_size, steps))

    old = [(_numpy(layer.moving_mean), _numpy(layer.moving_variance)) for layer in layers]
    totals = [_Totals() for _ in layers]
    count = samples = 0
    with restored_variables(model):
        with _momentum_zero(layers):
            for x in batches:
                if steps is not None and count == steps:
                    break
                samples_in_batch = _leading_size(x)
                _run_batch(model, layers, x, totals, entries, samples_in_batch, count, unbiased)
                count += 1
                samples += samples_in_batch
                if progress:
                    progress.update(count)
        if count == 0:
            raise ValueError("data is empty: it gave no batch to recalibrate over.")
        statistics = [total.result(layer.name) for layer, total in zip(layers, totals)]

    changes = []
    for layer, (mean, variance), (old_mean, old_variance) in zip(layers, statistics, old):
        _assign_moving_statistics(layer, mean, variance)
        changes.append(LayerRecalibration(
            layer.name,
            _drift.mean_shift(mean, old_mean, old_variance, layer.epsilon),
            _drift.variance_ratio(variance, old_variance, layer.epsilon),
        ))
    return RecalibrationReport(changes, skipped, count, samples)


class _Totals:
    """Running sums of Algorithm 2 for one layer, in float64."""

    def __init__(self):
        self.weight = 0.0
        self.mean = 0.0
        self.variance = 0.0

    def add(self, mean, variance, samples, entries, unbiased):
        if entries < 2:  # a single entry per channel has no variance
            return
        correction = entries / (entries - 1) if unbiased else 1.0
        self.weight += samples
        self.mean = self.mean + samples * mean
        self.variance = self.variance + samples * correction * variance

    def result(self, name):
        if self.weight == 0:
            raise ValueError(f"no batch gave layer {name!r} at least 2 entries per channel; "
                             "use batches of at least 2 samples.")
        return self.mean / self.weight, self.variance / self.weight


def _run_batch(model, layers, x, totals, entries, samples, index, unbiased):
    """One training-mode pass; with momentum 0 the moving statistics are the batch's."""
    skips = [_skip_count(layer) for layer in layers]
    model(x, training=True)
    for layer, total, per_sample, skips_before in zip(layers, totals, entries, skips):
        mean, variance = _numpy(layer.moving_mean), _numpy(layer.moving_variance)
        skipped = _skip_count(layer) != skips_before
        if skipped or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(variance))):
            raise ValueError(
                f"batch {index} gives non-finite statistics in layer {layer.name!r} (a NaN or "
                "inf in the data or the activations); recalibrating over it would poison the "
                "moving statistics."
            )
        # Ghost batches (virtual_batch_size=k) take statistics over k samples at a time.
        group = getattr(layer, "virtual_batch_size", None) or samples
        batch_entries = math.inf if per_sample is None else group * per_sample
        total.add(mean, variance, samples, batch_entries, unbiased)


class _momentum_zero:
    """Momentum 0 (the moving statistics become the batch's), renorm averages held,
    and kbn's `unbiased_moving_variance` off (the m/(m − 1) correction is applied here).

    The moving statistics start from (0, 1): `moving · 0` is NaN when a moving
    value is already NaN or inf (a Keras layer poisoned by one bad batch).
    """

    _SETTINGS = ("momentum", "renorm_momentum", "unbiased_moving_variance")

    def __init__(self, layers):
        self.layers = layers
        self.saved = []

    def __enter__(self):
        for layer in self.layers:
            self.saved.append({name: getattr(layer, name) for name in self._SETTINGS
                               if hasattr(layer, name)})
            layer.momentum = 0.0
            if getattr(layer, "renorm", False):
                layer.renorm_momentum = 1.0
            if getattr(layer, "unbiased_moving_variance", False):
                layer.unbiased_moving_variance = False
            layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, layer.moving_mean.dtype))
            layer.moving_variance.assign(
                np.ones(layer.moving_variance.shape, layer.moving_variance.dtype))
        return self

    def __exit__(self, *exc_info):
        for layer, saved in zip(self.layers, self.saved):
            for name, value in saved.items():
                setattr(layer, name, value)
        return False


def _assign_moving_statistics(layer, mean, variance):
    layer.moving_mean.assign(np.asarray(mean, dtype=layer.moving_mean.dtype))
    layer.moving_variance.assign(np.asarray(variance, dtype=layer.moving_variance.dtype))
    if getattr(layer, "renorm", False):
        # Renorm layers carry the moving standard deviation and derive the variance from it.
        stddev = np.sqrt(np.asarray(variance, "float64") + layer.epsilon)
        layer.moving_stddev.assign(stddev.astype(layer.moving_stddev.dtype))


def _entries_per_sample(layer, unbiased):
    """Entries per channel in one sample of the layer's input (e.g. H·W), or None if unknown."""
    shape = next(iter(_keras_compat.build_shapes(layer).values()), None)
    if shape is None:
        if unbiased:
            raise ValueError(f"layer {layer.name!r} does not record its input shape, so the "
                             "m/(m − 1) correction of unbiased=True is unknown; use "
                             "unbiased=False.")
        return None
    rank = len(shape)
    channels = {axis % rank for axis in _bn_layers.channel_axes(layer)}
    sizes = [shape[axis] for axis in range(1, rank) if axis not in channels]
    if any(size is None for size in sizes):
        if unbiased:
            raise ValueError(
                f"layer {layer.name!r} has inputs of shape {tuple(shape)}: with unknown sizes "
                "the m/(m − 1) correction of unbiased=True is unknown; use unbiased=False."
            )
        return None
    return math.prod(sizes)


def _skip_count(layer):
    if isinstance(layer, BatchNormalization) and layer.skipped_updates is not None:
        return int(keras.ops.convert_to_numpy(layer.skipped_updates))
    return 0


def _check_arguments(batch_size, steps):
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 2):
        raise ValueError("batch_size must be an integer >= 2 (the variance of fewer samples "
                         f"is undefined). Received: batch_size={batch_size!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1 or None. Received: steps={steps!r}")


def _is_array(value):
    return isinstance(value, np.ndarray) or keras.ops.is_tensor(value)


def _is_array_data(model, data):
    if _is_array(data):
        return True
    if isinstance(data, dict):
        return bool(data) and all(_is_array(value) for value in data.values())
    inputs = getattr(model, "inputs", None) or []
    return (isinstance(data, (list, tuple)) and len(inputs) > 1 and len(data) == len(inputs)
            and all(_is_array(value) for value in data))


def _input_batches(model, data, batch_size):
    """The input batches of `data`, each checked against the model's inputs."""
    if _is_array_data(model, data):
        size = _leading_size(data)
        if size == 0:
            raise ValueError("data is empty: it has 0 samples.")
        batch_size = batch_size or DEFAULT_BATCH_SIZE

        def slices():
            for start in range(0, size, batch_size):
                end = start + batch_size
                yield keras.tree.map_structure(lambda a, s=start, e=end: a[s:e], data)

        batches = slices()
    else:
        if batch_size is not None:
            raise ValueError(f"batch_size={batch_size} applies to array data; "
                             f"{type(data).__name__} data is already batched.")
        try:
            batches = iter(data)
        except TypeError:
            raise ValueError("data must be an array, a tensor or an iterable of batches. "
                             f"Received: data of type {type(data).__name__}") from None
    for batch in batches:
        if isinstance(batch, tuple) and len(batch) in (2, 3) and not _is_array_data(model, batch):
            batch = batch[0]  # (x, y) or (x, y, sample_weight)
        batch = _to_backend_inputs(batch)
        _check_fits(model, batch)
        yield batch


def _to_backend_inputs(batch):
    """tf.data gives TensorFlow tensors; other backends take them as NumPy arrays."""
    if keras.backend.backend() == "tensorflow":
        return batch
    return keras.tree.map_structure(
        lambda t: np.asarray(t) if type(t).__module__.startswith("tensorflow") else t, batch
    )


def _check_fits(model, batch):
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return
    arrays = list(batch.values()) if isinstance(batch, dict) else keras.tree.flatten(batch)
    if len(arrays) != len(inputs):
        raise ValueError(f"data gives {len(arrays)} input arrays per batch; model "
                         f"{model.name!r} has {len(inputs)} inputs.")
    for array, expected in zip(arrays, inputs):
        shape = tuple(array.shape)
        wanted = tuple(expected.shape)
        fits = len(shape) == len(wanted) and all(
            w is None or s == w for s, w in zip(shape[1:], wanted[1:]))
        if not fits:
            raise ValueError(f"data of shape {shape} does not fit model {model.name!r}, whose "
                             f"input shape is {wanted}.")


def _leading_size(x):
    return int(keras.tree.flatten(x)[0].shape[0])


def _batch_count(model, data, batch_size, steps):
    """The number of batches, for the progress bar (None if unknown)."""
    if _is_array_data(model, data):
        count = math.ceil(_leading_size(data) / (batch_size or DEFAULT_BATCH_SIZE))
    else:
        try:
            count = len(data)
        except TypeError:
            return steps
    return count if steps is None else min(count, steps)


def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype="float64")
