"""Callbacks that make batch normalization's effect visible in TensorBoard.

from kbn.callbacks import ActivationInputMonitor, BatchStatsMonitor
monitor = ActivationInputMonitor(x_val[:512], log_dir="logs/run/train", every_n_steps=20)
stats = BatchStatsMonitor(log_dir="logs/run/train", every_n_steps=20)
model.fit(x, y, callbacks=[monitor, stats])
# tensorboard --logdir logs  → Scalars "activation_input/<layer>/p15|p50|p85",
#                              Histograms "activation_input/<layer>",
#                              Scalars "batch_stats/<layer>/mean_shift|variance_ratio|skipped"

Both write their event files with the `tensorboard` package, without TensorFlow,
so they work on every Keras backend (`pip install tensorboard`, or kbn's `train`
extra: `pip install '.[train]'`).
"""

import keras
import numpy as np

from kbn._event_writer import EventWriter, require_tensorboard
from kbn._variables import restored_variables


class ActivationInputMonitor(keras.callbacks.Callback):
    """Logs the distribution of the input to chosen non-linearities on a fixed probe batch.

    Every `every_n_steps` training steps (and once before the first step) the
    probe batch goes through the model and, for each chosen layer, the values
    that enter its non-linearity are summarized: the 15th, 50th and 85th
    percentiles as TensorBoard scalars and all values as a histogram. This is
    Figure 1(b, c) of Ioffe & Szegedy (2015): without BN the input to a
    sigmoid drifts while the network trains ("internal covariate shift"); with
    BN before the sigmoid it stays steady.

    Which layers: a `keras.layers.Activation` layer is summarized by its input;
    any other layer with a non-linear `activation` attribute (a `Dense(...,
    activation="sigmoid")`, a `Conv2D(..., activation="relu")`) by its output
    with that activation switched off, i.e. the pre-activation. `layer_names`
    picks them by name; None picks every such layer except the model's last
    (the output layer). Works on any functional or Sequential model built on a
    `keras.Input`; subclassed models have no layer graph to probe.

    The probe runs in training mode, as the non-linearity sees its input while
    the network trains (batch statistics in BN layers). Whatever that forward
    pass changes in the model's non-trainable variables (BN's moving
    statistics) is restored afterwards, so monitoring does not alter training.
    Dropout layers would add their noise to the probe.

    Args:
        probe_x: A fixed batch of inputs (array-like).
        log_dir: Directory of the TensorBoard event file (e.g. a run's `train/`).
        layer_names: Names of the layers to watch, or None (see above).
        every_n_steps: Log every this many training steps.
        percentiles: Percentiles logged as scalars.
        unit: None pools every unit (channel) of a layer; an integer watches
            only that unit, as the paper's figure does.
        tag: Prefix of the TensorBoard tags.

    Attributes:
        history: One dict per logged step: {"step", "layer", "p15", "p50", ...},
            for plots outside TensorBoard.
    """

    def __init__(
        self,
        probe_x,
        log_dir,
        layer_names=None,
        every_n_steps=20,
        percentiles=(15, 50, 85),
        unit=None,
        tag="activation_input",
    ):
        super().__init__()
        require_tensorboard(type(self).__name__)
        if int(every_n_steps) < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps!r}")
        self.probe_x = np.asarray(probe_x)
        self.log_dir = log_dir
        self.layer_names = None if layer_names is None else list(layer_names)
        self.every_n_steps = int(every_n_steps)
        self.percentiles = tuple(percentiles)
        self.unit = unit
        self.tag = tag
        self.history = []
        self._step = 0
        self._probe = None
        self._layers = None
        self._writer = None

    def on_train_begin(self, logs=None):
        self._layers = self._chosen_layers()
        # A probe model whose outputs are the inputs of the chosen layers.
        inputs = self.model.inputs
        self._probe = keras.Model(
            inputs[0] if len(inputs) == 1 else inputs, [layer.input for layer in self._layers]
        )
        self._writer = EventWriter(self.log_dir)
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self._log()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every_n_steps == 0:
            self._log()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _chosen_layers(self):
        by_name = {layer.name: layer for layer in self.model.layers}
        if self.layer_names is not None:
            unknown = [name for name in self.layer_names if name not in by_name]
            if unknown:
                raise ValueError(f"no layer named {unknown} in the model; it has {list(by_name)}")
            return [by_name[name] for name in self.layer_names]
        chosen = [layer for layer in self.model.layers[:-1] if _has_nonlinearity(layer)]
        if not chosen:
            raise ValueError("the model has no hidden layer with a non-linearity to watch")
        return chosen

    def _pre_activations(self):
        # A training-mode probe moves BN's moving statistics: put them back.
        with restored_variables(self.model, self.model.non_trainable_variables):
            inputs = self._probe(self.probe_x, training=True)
            if len(self._layers) == 1:
                inputs = [inputs]
            return [_input_to_nonlinearity(layer, x) for layer, x in zip(self._layers, inputs)]

    def _log(self):
        for layer, values in zip(self._layers, self._pre_activations()):
            values = np.asarray(keras.ops.convert_to_numpy(values), "float64")
            if self.unit is not None:
                values = values[..., self.unit]
            values = values.reshape(-1)
            record = {"step": self._step, "layer": layer.name}
            for q, value in zip(self.percentiles, np.percentile(values, self.percentiles)):
                record[f"p{q}"] = float(value)
                self._writer.scalar(f"{self.tag}/{layer.name}/p{q}", value, self._step)
            self._writer.histogram(f"{self.tag}/{layer.name}", values, self._step)
            self.history.append(record)
        self._writer.flush()


def _has_nonlinearity(layer):
    if isinstance(layer, keras.layers.Activation):
        return True
    activation = getattr(layer, "activation", None)
    return activation is not None and activation not in (keras.activations.linear, None)


def _input_to_nonlinearity(layer, layer_input):
    """The values `layer`'s non-linearity receives, given the layer's input."""
    if isinstance(layer, keras.layers.Activation):
        return layer_input
    activation = layer.activation
    layer.activation = keras.activations.linear
    try:
        return layer(layer_input, training=True)
    finally:
        layer.activation = activation


class BatchStatsMonitor(keras.callbacks.Callback):
    """Logs how far each batch-norm layer's batch statistics are from its moving ones.

    Every `every_n_steps` training steps, for each batch-norm layer (kbn's or
    Keras's, nested models included), TensorBoard gets

        batch_stats/<layer>/mean_shift      mean over channels of |μ_B − moving_mean|
                                            / sqrt(moving_var + ε)
        batch_stats/<layer>/variance_ratio  mean over channels of σ²_B / (moving_var + ε)
        batch_stats/<layer>/skipped         kbn layers: channel updates NaN safety skipped so far

    where μ_B, σ²_B are the statistics of that step's training batch and the
    moving statistics are those before the step, i.e. what inference would
    have used. A mean shift near 0 and a variance ratio near 1 mean training
    and inference normalize alike; early in training, or when the data
    change, they drift apart, and `kbn.recalibrate` closes the gap.

    The batch statistics are read off the moving update itself, without a
    second forward pass: `new = m·old + (1 − m)·batch`, so
    `batch = (new − m·old) / (1 − m)` (for renorm layers the same on the
    moving standard deviation). Watching therefore changes nothing in
    training; it only reads variables. Layers whose momentum is not in
    (0, 1), frozen layers and layers without moving statistics log no
    shift or ratio, and so do shared layers (called more than once in one
    forward pass: their moving statistics move once per call, which the formula
    cannot undo). Assumes one step per batch (`steps_per_execution=1`).

    Every step it also checks each layer: a kbn layer whose skip counter
    (`layer.skipped_updates`) grew, or a Keras layer whose moving statistics
    became NaN or inf, prints one warning line naming the layer and the step,
    once per layer; `events` keeps the first step of each.

    Args:
        log_dir: Directory of the TensorBoard event file (e.g. a run's `train/`).
        every_n_steps: Log every this many training steps.
        layer_names: Names of the batch-norm layers to watch (None: all).
        tag: Prefix of the TensorBoard tags.
        verbose: False silences the warning lines (`events` still records them).

    Attributes:
        history: One dict per layer and logged step: {"step", "layer",
            "mean_shift", "variance_ratio", "skipped"}.
        events: One dict per layer and kind of trouble, the first time it
            happened: {"layer", "kind" ("skipped" or "nonfinite"), "step",
            "epoch" (1-based), "count" (skipped channel updates, for "skipped"),
            "nonfinite" ({"moving_mean" / "moving_variance": "NaN" or "inf"}, for
            "nonfinite")}.
    """

    def __init__(self, log_dir, every_n_steps=20, layer_names=None, tag="batch_stats",
                 verbose=True):
        super().__init__()
        require_tensorboard(type(self).__name__)
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) \
                or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be an integer >= 1. "
                             f"Received: every_n_steps={every_n_steps!r}")
        self.log_dir = log_dir
        self.every_n_steps = every_n_steps
        self.layer_names = None if layer_names is None else list(layer_names)
        self.tag = tag
        self.verbose = verbose
        self.history = []
        self.events = []
        self._layers = []
        self._writer = None
        self._step = 0
        self._epoch = 0
        self._before = None
        self._skips = {}
        self._reported = set()
        self._shared = set()

    def on_train_begin(self, logs=None):
        from kbn import _bn_layers, _cloning

        layers = _bn_layers.batch_norm_layers(self.model)
        if self.layer_names is not None:
            by_name = {layer.name: layer for layer in layers}
            unknown = [name for name in self.layer_names if name not in by_name]
            if unknown:
                raise ValueError(f"no batch-norm layer named {unknown} in the model; "
                                 f"it has {list(by_name)}")
            layers = [by_name[name] for name in self.layer_names]
        self._layers = layers
        calls = _cloning.calls_per_pass(self.model)
        self._shared = {layer.name for layer in layers if calls.get(id(layer), 1) > 1}
        self._writer = EventWriter(self.log_dir)
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self._skips = {layer.name: _skip_count(layer) for layer in layers}

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self._step + 1) % self.every_n_steps == 0:
            self._sync()
            self._before = {layer.name: _moving_state(layer) for layer in self._layers
                            if _readable_update(layer) and layer.name not in self._shared}

    def on_train_batch_end(self, batch, logs=None):
        self._sync()
        self._step += 1
        skips = {layer.name: _skip_count(layer) for layer in self._layers}
        self._check_trouble(skips)
        if self._before is not None:
            for layer in self._layers:
                record = self._log_layer(layer, skips)
                if record:
                    self.history.append(record)
            self._writer.flush()
            self._before = None
        self._skips = skips

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _sync(self):
        """On JAX, fit keeps the state apart until a callback reads `model`; this syncs it."""
        return self.model

    def _log_layer(self, layer, skips):
        from kbn import _drift

        record = {"step": self._step, "layer": layer.name}
        if layer.name in self._before:
            old_mean, old_variance, old_stddev = self._before[layer.name]
            new_mean, new_variance, new_stddev = _moving_state(layer)
            # A Keras layer's statistics may be inf by now: inf − m·inf is NaN, logged as such.
            with np.errstate(invalid="ignore", over="ignore"):
                momentum = layer.momentum
                mean = (new_mean - momentum * old_mean) / (1.0 - momentum)
                if new_stddev is None:
                    variance = (new_variance - momentum * old_variance) / (1.0 - momentum)
                else:
                    stddev = (new_stddev - momentum * old_stddev) / (1.0 - momentum)
                    variance = np.maximum(stddev**2 - layer.epsilon, 0.0)
                # Channels NaN safety skipped kept their moving values: leave them out.
                moved = (new_mean != old_mean) | (new_variance != old_variance)
                if np.any(moved):
                    record["mean_shift"] = _drift.mean_shift(
                        mean[moved], old_mean[moved], old_variance[moved], layer.epsilon)
                    record["variance_ratio"] = _drift.variance_ratio(
                        variance[moved], old_variance[moved], layer.epsilon)
        if layer.name in skips and _has_counter(layer):
            record["skipped"] = skips[layer.name]
        for key in ("mean_shift", "variance_ratio", "skipped"):
            if key in record:
                self._writer.scalar(f"{self.tag}/{layer.name}/{key}", record[key], self._step)
        return record if len(record) > 2 else None

    def _check_trouble(self, skips):
        for layer in self._layers:
            name = layer.name
            if skips[name] > self._skips.get(name, 0) and (name, "skipped") not in self._reported:
                count = skips[name] - self._skips.get(name, 0)
                self._report(name, "skipped", count,
                             f"NaN safety skipped {count} channel update(s) of batch-norm layer "
                             f"{name!r} (non-finite batch statistics); its moving statistics "
                             "keep their last finite values")
            if not _has_counter(layer) and (name, "nonfinite") not in self._reported \
                    and layer.moving_mean is not None:
                values = _nonfinite(layer)
                if values:
                    described = ", ".join(f"{key} {value}" for key, value in values.items())
                    self._report(name, "nonfinite", None,
                                 f"the moving statistics of batch-norm layer {name!r} are no "
                                 f"longer finite ({described}; this layer has no NaN safety)",
                                 nonfinite=values)

    def _report(self, name, kind, count, message, nonfinite=None):
        self._reported.add((name, kind))
        self.events.append({"layer": name, "kind": kind, "step": self._step,
                            "epoch": self._epoch + 1, "count": count, "nonfinite": nonfinite})
        if self.verbose:
            print(f"warning: step {self._step} (epoch {self._epoch + 1}): {message}", flush=True)


def _has_counter(layer):
    return getattr(layer, "skipped_updates", None) is not None


def _skip_count(layer):
    return layer.skipped_updates if _has_counter(layer) else 0


def _readable_update(layer):
    """Whether the batch statistics can be read back from this layer's moving update."""
    momentum = getattr(layer, "momentum", None)
    return (layer.trainable and getattr(layer, "moving_mean", None) is not None
            and isinstance(momentum, float) and 0.0 < momentum < 1.0)


def _moving_state(layer):
    def read(variable):
        return np.asarray(keras.ops.convert_to_numpy(variable), "float64")

    stddev = read(layer.moving_stddev) if getattr(layer, "renorm", False) else None
    return read(layer.moving_mean), read(layer.moving_variance), stddev


def _nonfinite(layer):
    """{"moving_mean" / "moving_variance": "NaN" or "inf"}, for the statistics not finite."""
    found = {}
    for name in ("moving_mean", "moving_variance"):
        values = keras.ops.convert_to_numpy(getattr(layer, name))
        if np.any(np.isnan(values)):
            found[name] = "NaN"
        elif np.any(np.isinf(values)):
            found[name] = "inf"
    return found
