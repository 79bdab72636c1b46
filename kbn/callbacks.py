"""Callbacks that make batch normalization's effect visible in TensorBoard.

from kbn.callbacks import ActivationInputMonitor
monitor = ActivationInputMonitor(x_val[:512], log_dir="logs/run/train", every_n_steps=20)
model.fit(x, y, callbacks=[monitor])
# tensorboard --logdir logs  → Scalars "activation_input/<layer>/p15|p50|p85",
#                              Histograms "activation_input/<layer>"
"""

import keras
import numpy as np


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
        import tensorflow as tf

        self._layers = self._chosen_layers()
        # A probe model whose outputs are the inputs of the chosen layers.
        inputs = self.model.inputs
        self._probe = keras.Model(
            inputs[0] if len(inputs) == 1 else inputs, [layer.input for layer in self._layers]
        )
        self._writer = tf.summary.create_file_writer(self.log_dir)
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
        saved = [variable.numpy() for variable in self.model.non_trainable_variables]
        inputs = self._probe(self.probe_x, training=True)
        if len(self._layers) == 1:
            inputs = [inputs]
        values = [_input_to_nonlinearity(layer, x) for layer, x in zip(self._layers, inputs)]
        for variable, value in zip(self.model.non_trainable_variables, saved):
            variable.assign(value)
        return values

    def _log(self):
        import tensorflow as tf

        with self._writer.as_default(step=self._step):
            for layer, values in zip(self._layers, self._pre_activations()):
                values = np.asarray(keras.ops.convert_to_numpy(values), "float64")
                if self.unit is not None:
                    values = values[..., self.unit]
                values = values.reshape(-1)
                record = {"step": self._step, "layer": layer.name}
                for q, value in zip(self.percentiles, np.percentile(values, self.percentiles)):
                    record[f"p{q}"] = float(value)
                    tf.summary.scalar(f"{self.tag}/{layer.name}/p{q}", value)
                tf.summary.histogram(f"{self.tag}/{layer.name}", values)
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
