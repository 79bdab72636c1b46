"""kbn's batch-normalization layer: a drop-in for `keras.layers.BatchNormalization`."""

import functools
import importlib
import math
import numbers
import os

import keras
from keras import constraints, initializers, ops, regularizers

from kbn import _generic

_RENORM_CLIPPING_KEYS = ("rmax", "rmin", "dmax")
_KERNEL_PATHS = ("auto", "fast", "generic")
# The fast path of each backend that has one (module names, imported on first use).
_FAST_MODULES = {"tensorflow": "kbn._tf_fast", "torch": "kbn._torch_fast"}


@keras.saving.register_keras_serializable(package="kbn")
class BatchNormalization(keras.layers.Layer):
    """Normalizes each channel with batch statistics, then scales and shifts it.

    For a mini-batch B = {x_1 … x_m} of one channel (every axis but `axis` is
    reduced), training mode computes (Ioffe & Szegedy 2015, Algorithm 1):

        μ_B  = (1/m) Σ x_i                     batch mean
        σ²_B = (1/m) Σ (x_i − μ_B)²            biased batch variance
        x̂_i  = (x_i − μ_B) / sqrt(σ²_B + ε)    normalize
        y_i  = γ · x̂_i + β                     scale and shift (learned)

    and moves the inference statistics towards the batch ones:

        moving_mean     ← moving_mean · momentum     + μ_B  · (1 − momentum)
        moving_variance ← moving_variance · momentum + σ²_B · (1 − momentum)

    Inference mode uses `moving_mean` and `moving_variance` in place of μ_B and
    σ²_B, so a sample's output no longer depends on the rest of its batch.

    The constructor, the weights (names, order, shapes, float32) and the numbers
    are those of `keras.layers.BatchNormalization`: weights copy across with
    `get_weights` / `set_weights`, configs load in either class.

    Args:
        axis: Integer, the channel axis (usually -1, or 1 for
            `channels_first`); statistics are per entry of this axis.
        momentum: Float in [0, 1], the moving averages' momentum.
        epsilon: Float > 0 added to the variance before the square root.
        center: If True, learn an offset β; if False, β is 0.
        scale: If True, learn a scale γ; if False, γ is 1 (fine when the next
            layer is linear, e.g. `relu`, since it can absorb the scale).
        beta_initializer, gamma_initializer: Initializers of β and γ.
        moving_mean_initializer, moving_variance_initializer: Initializers of
            the moving statistics.
        beta_regularizer, gamma_regularizer: Optional regularizers.
        beta_constraint, gamma_constraint: Optional constraints.
        renorm: If True, use Batch Renormalization (Ioffe 2017): training
            outputs are corrected by `(r, d)` towards the moving statistics.
            Adds the weights `moving_stddev`, `renorm_mean`, `renorm_stddev`.
        renorm_clipping: With `renorm`, a dict with optional keys `"rmax"`,
            `"rmin"`, `"dmax"` bounding `r` to [rmin, rmax] and `d` to
            [−dmax, dmax]; a missing key leaves that side unbounded.
        renorm_momentum: Momentum of the renorm averages used in training.
        synchronized: If True, under a `tf.distribute` strategy the batch
            statistics are taken over the global batch of all replicas.
            TensorFlow backend only.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments:
        inputs: Float (or integer, cast to float32) tensor of any rank >= 2.
        training: True for training mode; False or None for inference mode.
        mask: Optional boolean tensor of rank `inputs` − 1, covering every
            axis but the last (Keras's convention): False entries are left out
            of the batch statistics.

    Reference:
        - Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network
          Training by Reducing Internal Covariate Shift", 2015,
          arXiv:1502.03167.
        - Ioffe, "Batch Renormalization", 2017, arXiv:1702.03275.

    Training vs inference: training mode needs `training=True` *and* a
    trainable layer; `fit()` passes `training=True`, `predict()` and
    `evaluate()` pass False. Float16/bfloat16 inputs (mixed precision) have
    their statistics computed in float32; the output comes back in the
    layer's compute dtype and the weights stay float32.

    `trainable = False` freezes the layer *and* puts it in inference mode,
    even inside `fit()`: γ and β stop learning and the moving statistics stop
    moving. This is what fine-tuning a pretrained model needs, and Keras's
    documented behaviour. Recompile after changing `trainable`.

    The one intended difference from Keras — NaN safety: a training batch
    whose statistics are not finite (a NaN or inf in the inputs) leaves the
    moving statistics of the affected channels unchanged. The output of that
    batch still shows the NaN, so the problem stays visible, but inference is
    not broken for good, as it is in Keras, where one such batch poisons the
    moving mean and variance forever. Channels that a mask leaves without any
    entry are skipped the same way. `layer.skipped_updates` (an int32
    variable, 0 after build; read it with `keras.ops.convert_to_numpy`) counts
    the channel updates skipped so far: one per channel per skipping batch.
    It is in `layer.variables` but not in `layer.weights`, so `get_weights`,
    `set_weights` and saved files are those of Keras's layer (a loaded model
    counts from 0).
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = _check_int("axis", axis)
        self.momentum = _check_fraction("momentum", momentum)
        self.epsilon = _check_positive("epsilon", epsilon)
        self.center = _check_bool("center", center)
        self.scale = _check_bool("scale", scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.renorm = _check_bool("renorm", renorm)
        self.renorm_clipping = _check_renorm_clipping(renorm_clipping, self.renorm)
        self.renorm_momentum = _check_fraction("renorm_momentum", renorm_momentum)
        self.synchronized = _check_bool("synchronized", synchronized)
        if self.synchronized and keras.backend.backend() != "tensorflow":
            raise ValueError(
                "synchronized=True needs the TensorFlow backend (cross-replica "
                f"statistics use tf.distribute); the backend is "
                f"{keras.backend.backend()!r}. Received: synchronized=True"
            )
        self.supports_masking = True
        self.gamma = None
        self.beta = None
        self.moving_mean = None
        self.moving_variance = None
        self._reduction_axes = None
        self.skipped_updates = None

    def build(self, input_shape):
        rank = len(input_shape)
        if not -rank <= self.axis < rank:
            raise ValueError(
                f"axis={self.axis} is out of range for inputs of rank {rank} "
                f"(shape {tuple(input_shape)}); use an axis in [{-rank}, {rank - 1}]."
            )
        channels = input_shape[self.axis]
        if channels is None:
            raise ValueError(
                f"The normalized axis (axis={self.axis}) of the inputs must have a "
                f"known size; received input shape {tuple(input_shape)}."
            )
        # The config keeps `axis` as given (like Keras); the math uses it non-negative.
        self._channel_axis = self.axis % rank
        shape = (channels,)
        if self.scale:
            self.gamma = self._add_float32_weight(
                "gamma", shape, self.gamma_initializer, True,
                self.gamma_regularizer, self.gamma_constraint,
            )
        if self.center:
            self.beta = self._add_float32_weight(
                "beta", shape, self.beta_initializer, True,
                self.beta_regularizer, self.beta_constraint,
            )
        self.moving_mean = self._add_float32_weight(
            "moving_mean", shape, self.moving_mean_initializer, False
        )
        self.moving_variance = self._add_float32_weight(
            "moving_variance", shape, self.moving_variance_initializer, False
        )
        if self.renorm:
            # Renorm tracks standard deviations, started at sqrt(initial variance).
            stddev_initializer = _sqrt_of(self.moving_variance_initializer)
            self.moving_stddev = self._add_float32_weight(
                "moving_stddev", shape, stddev_initializer, False
            )
            self.renorm_mean = self._add_float32_weight(
                "renorm_mean", shape, _fresh(self.moving_mean_initializer), False
            )
            self.renorm_stddev = self._add_float32_weight(
                "renorm_stddev", shape, stddev_initializer, False
            )
        self.input_spec = keras.layers.InputSpec(ndim=rank, axes={self.axis: channels})
        self._reduction_axes = [i for i in range(rank) if i != self._channel_axis]
        moments_fn = _generic.moments
        if self.synchronized:
            from kbn import _distributed

            moments_fn = functools.partial(moments_fn, all_reduce_sum=_distributed.replica_sum)
        self._moments_fn = moments_fn
        # NaN safety's tally of skipped channel updates. Not a weight (get_weights
        # stays Keras's list, files stay loadable both ways): set past the tracker,
        # and handed out by `variables`, so JAX's stateless steps carry it too.
        object.__setattr__(self, "skipped_updates", keras.Variable(
            0, shape=(), dtype="int32", trainable=False, name="skipped_updates",
            aggregation="only_first_replica",
        ))

    @property
    def variables(self):
        counter = [] if self.skipped_updates is None else [self.skipped_updates]
        return super().variables + counter

    def _add_float32_weight(self, name, shape, initializer, trainable, regularizer=None,
                            constraint=None):
        # autocast=False: the weights stay float32 under mixed-precision policies.
        return self.add_weight(
            shape=shape, name=name, initializer=initializer, trainable=trainable,
            regularizer=regularizer, constraint=constraint, autocast=False,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, inputs, training=None, mask=None):
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError(
                "mask must have one axis fewer than the inputs (it covers every "
                f"axis but the last); received mask shape {tuple(mask.shape)} for "
                f"inputs of shape {tuple(inputs.shape)}."
            )
        # float16/bfloat16 overflow when squaring and lose the variance's low
        # bits: statistics are computed in float32 (float64 stays float64).
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        gamma = None if self.gamma is None else ops.cast(self.gamma, dtype)
        beta = None if self.beta is None else ops.cast(self.beta, dtype)

        if training and self.trainable:
            if mask is not None:
                mask = ops.expand_dims(ops.cast(mask, "bool"), -1)
            outputs = self._train(x, gamma, beta, mask)
        else:
            outputs = self._kernel(x, training=False, mask=None).infer_forward(
                x, ops.cast(self.moving_mean, dtype), ops.cast(self.moving_variance, dtype),
                gamma, beta, self.epsilon, self._channel_axis,
            )
        return ops.cast(outputs, self.compute_dtype)

    def _train(self, x, gamma, beta, mask):
        """Training mode: normalize with batch statistics, update the moving ones."""
        if self.renorm:
            mean, variance, count = self._moments_fn(x, self._reduction_axes, mask)
            valid = _generic.is_valid(variance, count=count)
            self._count_skipped(valid)
            r, d = _generic.renorm_correction(
                mean, variance, ops.cast(self.renorm_mean, x.dtype),
                ops.cast(self.renorm_stddev, x.dtype), self.epsilon, self.renorm_clipping,
            )
            # (x̂·r + d)·γ + β = x̂·(r·γ) + (d·γ + β)
            renorm_scale = r if gamma is None else r * gamma
            renorm_offset = d if gamma is None else d * gamma
            if beta is not None:
                renorm_offset = renorm_offset + beta
            outputs = _generic.normalize(
                x, mean, variance, renorm_scale, renorm_offset, self.epsilon, self._channel_axis
            )
            self._update_renorm_statistics(mean, variance, valid)
            return outputs
        kernel = self._kernel(x, training=True, mask=mask)
        outputs, mean, variance, count = kernel.train_forward(
            x, gamma, beta, self.epsilon, self._channel_axis, self._reduction_axes, mask,
            moments_fn=self._moments_fn,
        )
        valid = _generic.is_valid(variance, count=count)
        self._count_skipped(valid)
        self._move(self.moving_mean, mean, self.momentum, valid)
        self._move(self.moving_variance, variance, self.momentum, valid)
        return outputs

    def _kernel(self, x, training, mask):
        """The one place that picks the module doing the forward math.

        Every kernel module offers `train_forward` and `infer_forward` with
        `_generic`'s signatures and numbers. On TensorFlow, `_tf_fast` (the
        fused kernel) takes every call it can serve and `_generic` the rest;
        renorm always takes the generic functions (its output needs the
        statistics before normalizing). `_tf_fast` itself sends tensors too
        small to gain from the fused kernel to the generic functions.

        The environment variable `KBN_PATH` overrides this, for tests and
        benchmarks: `generic` uses the generic path everywhere, `fast` the
        fused kernel wherever it can serve, at any size; `auto` is the default.
        """
        path = os.environ.get("KBN_PATH", "auto")
        if path not in _KERNEL_PATHS:
            raise ValueError(
                f"KBN_PATH must be one of {_KERNEL_PATHS}. Received: KBN_PATH={path!r}"
            )
        fast_module = _FAST_MODULES.get(keras.backend.backend())
        if path == "generic" or fast_module is None:
            return _generic
        # Imported here: each fast module needs its backend's library, which
        # other backends may lack.
        fast = importlib.import_module(fast_module)
        if not fast.supports(x, training, mask, self._channel_axis, self.epsilon,
                             synchronized=self.synchronized, renorm=self.renorm):
            return _generic
        return fast.always_fused if path == "fast" else fast

    def _count_skipped(self, valid):
        self.skipped_updates.assign_add(ops.sum(ops.cast(ops.logical_not(valid), "int32")))

    def _move(self, variable, batch_value, momentum, valid):
        moving = ops.convert_to_tensor(variable)  # one read of the variable, used twice
        batch_value = ops.cast(batch_value, variable.dtype)
        variable.assign(_generic.moving_update(moving, batch_value, momentum, valid))

    def _update_renorm_statistics(self, mean, variance, valid):
        stddev = ops.sqrt(variance + self.epsilon)
        self._move(self.renorm_mean, mean, self.renorm_momentum, valid)
        self._move(self.renorm_stddev, stddev, self.renorm_momentum, valid)
        self._move(self.moving_mean, mean, self.momentum, valid)
        self._move(self.moving_stddev, stddev, self.momentum, valid)
        # Inference reads moving_variance: derive it from the moving stddev
        # (relu: rounding may take σ² − ε a hair below zero).
        derived = ops.relu(ops.square(self.moving_stddev) - self.epsilon)
        # convert_to_tensor: jnp.where refuses a Variable (JAX renorm training failed).
        kept = ops.convert_to_tensor(self.moving_variance)
        self.moving_variance.assign(ops.where(valid, derived, kept))

    def get_config(self):
        config = {
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(
                self.moving_variance_initializer
            ),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
            "synchronized": self.synchronized,
            "renorm": self.renorm,
            "renorm_clipping": self.renorm_clipping,
            "renorm_momentum": self.renorm_momentum,
        }
        return {**super().get_config(), **config}


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False. Received: {name}={value!r}")
    return value


def _check_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer. Received: {name}={value!r}")
    return int(value)


def _check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a number. Received: {name}={value!r}")
    return float(value)


def _check_fraction(name, value):
    if not 0.0 <= _check_number(name, value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]. Received: {name}={value!r}")
    return float(value)


def _check_positive(name, value):
    if not 0.0 < _check_number(name, value) < math.inf:
        raise ValueError(f"{name} must be a finite number > 0. Received: {name}={value!r}")
    return float(value)


def _check_renorm_clipping(clipping, renorm):
    """Validates `renorm_clipping`; like Keras, `{}` when renorm is on and it is None."""
    if clipping is None:
        return {} if renorm else None
    if not isinstance(clipping, dict):
        raise ValueError(
            f"renorm_clipping must be a dict with keys among {_RENORM_CLIPPING_KEYS}. "
            f"Received: renorm_clipping={clipping!r}"
        )
    unknown = sorted(set(clipping) - set(_RENORM_CLIPPING_KEYS))
    if unknown:
        raise ValueError(
            f"renorm_clipping has unknown key(s) {unknown}; the keys are "
            f"{_RENORM_CLIPPING_KEYS}. Received: renorm_clipping={clipping!r}"
        )
    for key, value in clipping.items():
        _check_number(f"renorm_clipping[{key!r}]", value)
    rmax, rmin, dmax = (clipping.get(k) for k in _RENORM_CLIPPING_KEYS)
    if rmax is not None and rmin is not None and rmax < rmin:
        raise ValueError(
            f"renorm_clipping needs rmax >= rmin. Received: renorm_clipping={clipping!r}"
        )
    if dmax is not None and dmax < 0:
        raise ValueError(
            f"renorm_clipping needs dmax >= 0. Received: renorm_clipping={clipping!r}"
        )
    return dict(clipping)


def _fresh(initializer):
    """A new instance of `initializer`, so seeded initializers don't share state."""
    return initializer.__class__.from_config(initializer.get_config())


def _sqrt_of(initializer):
    """An initializer giving sqrt of what `initializer` gives."""
    def initialize(shape, dtype=None):
        return ops.sqrt(_fresh(initializer)(shape, dtype=dtype))

    return initialize
