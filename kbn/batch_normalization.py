"""kbn's batch-normalization layer: a drop-in for `keras.layers.BatchNormalization`."""

import functools
import importlib
import os

import keras
from keras import constraints, initializers, ops, regularizers

from kbn import _arguments as args
from kbn import _generic, _skip_count

_KERNEL_PATHS = ("auto", "fast", "generic", "fused", "compiled")
# kbn's options beyond Keras 3's, with their defaults (see `get_config`).
_KBN_OPTIONS = {
    "virtual_batch_size": None,
    "unbiased_moving_variance": False,
    "track_moving_statistics": True,
}
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
    `get_weights` / `set_weights`, configs load in either class. The options
    Keras 3 lacks (`virtual_batch_size`, `axis` lists, `momentum=None`,
    `unbiased_moving_variance`, `track_moving_statistics=False`) appear in the
    config only when set, so a config without them is exactly Keras's.

    Args:
        axis: Integer, the channel axis (usually -1, or 1 for
            `channels_first`); statistics are per entry of this axis. A list
            or tuple of integers (tf.keras 2's semantics) takes statistics per
            entry of all those axes together: `axis=[1, 3]` (or `[3, 1]`, or
            `[1, -1]`) on (N, H, W, C) inputs gives γ, β and the moving
            statistics the shape (H, C), the axes in input order.
        momentum: Float in [0, 1], the moving averages' momentum; or None
            for a cumulative average (PyTorch's `momentum=None`): after n
            training batches the moving statistics are the plain mean of the
            n batches' statistics. The weight `num_batches_tracked` (float32,
            one count per entry, non-trainable) holds n; a batch that NaN
            safety skips for an entry is not counted for it.
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
        virtual_batch_size: None, or an integer k >= 1 for ghost batch
            normalization (Hoffer et al. 2017), with tf.keras 2's numbers: in
            training the batch of N samples is split into N/k ghost batches
            of k samples, grouped as tf.keras groups them (ghost batch g holds
            samples g, g + N/k, g + 2N/k, …), each normalized with its own
            statistics; the moving statistics take one update per batch, from
            the mean over ghost batches of their statistics. Inference uses
            the moving statistics at any batch size. A training batch that k
            does not divide is an error, and nothing is updated. Works with
            masks (each ghost batch then weighs by its unmasked entries) and
            renorm (r and d from the averaged statistics, as tf.keras);
            not with `synchronized`.
        unbiased_moving_variance: If True, the batch variance that enters the
            moving variance is multiplied by m/(m − 1), m the number of
            entries behind each statistic (per ghost batch with
            `virtual_batch_size`; a mask's count with a mask), as PyTorch's
            `running_var` and the paper's Algorithm 2 do. Training still
            normalizes with the biased variance. m = 1 is an error (a masked
            entry with one value is skipped). Not with `renorm`.
        track_moving_statistics: If False (PyTorch's
            `track_running_stats=False`), no moving statistics are created,
            and inference normalizes with the batch's own statistics too
            (over the whole batch, even with `virtual_batch_size`). Not with
            `renorm`.
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
        - Hoffer, Hubara & Soudry, "Train longer, generalize better: closing
          the generalization gap in large batch training of neural
          networks", 2017, arXiv:1705.08741 (ghost batch normalization).

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
    entry are skipped the same way. `layer.skipped_updates` (an int, 0 after
    build, None before) counts the channel updates skipped so far: one per
    channel per skipping batch, inside `fit` on every backend too. It is not
    a weight, so `get_weights`, `set_weights` and saved files are those of
    Keras's layer (a loaded model counts from 0); on TensorFlow and PyTorch
    `variables`, `torch_params` and `state_dict` are Keras's too, while on
    JAX, whose steps carry only variables, `variables` holds the count's
    variable as well (why: `kbn._skip_count`).
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
        virtual_batch_size=None,
        unbiased_moving_variance=False,
        track_moving_statistics=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = args.check_axis(axis)
        self.momentum = args.check_momentum(momentum)
        self.epsilon = args.check_positive("epsilon", epsilon)
        self.center = args.check_bool("center", center)
        self.scale = args.check_bool("scale", scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.renorm = args.check_bool("renorm", renorm)
        self.renorm_clipping = args.check_renorm_clipping(renorm_clipping, self.renorm)
        self.renorm_momentum = args.check_fraction("renorm_momentum", renorm_momentum)
        self.synchronized = args.check_bool("synchronized", synchronized)
        self.virtual_batch_size = args.check_virtual_batch_size(virtual_batch_size)
        self.unbiased_moving_variance = args.check_bool(
            "unbiased_moving_variance", unbiased_moving_variance
        )
        self.track_moving_statistics = args.check_bool(
            "track_moving_statistics", track_moving_statistics
        )
        if self.synchronized and keras.backend.backend() != "tensorflow":
            raise ValueError(
                "synchronized=True needs the TensorFlow backend (cross-replica "
                f"statistics use tf.distribute); the backend is "
                f"{keras.backend.backend()!r}. Received: synchronized=True"
            )
        args.check_combinations(self)
        self.supports_masking = True
        self.gamma = None
        self.beta = None
        self.moving_mean = None
        self.moving_variance = None
        self.num_batches_tracked = None
        self._axes = None
        self._reduction_axes = None
        self._skipped_updates = None

    def build(self, input_shape):
        rank = len(input_shape)
        # The config keeps `axis` as given (like Keras); the math uses the
        # non-negative axes in input order.
        self._axes = args.resolve_axes(self.axis, rank, self.virtual_batch_size)
        shape = tuple(input_shape[axis] for axis in self._axes)
        if None in shape:
            raise ValueError(
                f"The normalized axis (axis={self.axis}) of the inputs must have a "
                f"known size; received input shape {tuple(input_shape)}."
            )
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
        if self.track_moving_statistics:
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
        if self.momentum is None and self.track_moving_statistics:
            # The cumulative average's n, per entry: a batch that NaN safety
            # skips for an entry is not counted for it.
            self.num_batches_tracked = self._add_float32_weight(
                "num_batches_tracked", shape, "zeros", False
            )
        self.input_spec = keras.layers.InputSpec(ndim=rank, axes=dict(zip(self._axes, shape)))
        self._reduction_axes = [i for i in range(rank) if i not in self._axes]
        moments_fn = _generic.moments
        if self.synchronized:
            from kbn import _distributed

            moments_fn = functools.partial(moments_fn, all_reduce_sum=_distributed.replica_sum)
        self._moments_fn = moments_fn
        # NaN safety's tally: never a weight (the tracker does not look inside the
        # counter), and in `variables` only on JAX, whose steps carry nothing else
        # (why: `_skip_count`).
        self._skipped_updates = _skip_count.SkipCounter()

    @property
    def variables(self):
        variables = super().variables
        if self._skipped_updates is not None and _skip_count.carried_by_variables():
            variables.append(self._skipped_updates.variable)
        return variables

    @property
    def skipped_updates(self):
        """The channel updates NaN safety has skipped so far (an int; None before build)."""
        return None if self._skipped_updates is None else self._skipped_updates.read()

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
        if mask is not None:
            mask = ops.expand_dims(ops.cast(mask, "bool"), -1)

        if training and self.trainable:
            outputs = self._train(x, gamma, beta, mask)
        elif not self.track_moving_statistics:
            # No moving statistics to use: inference normalizes with the batch's own.
            outputs, _, _, _ = self._kernel(x, training=True, mask=mask).train_forward(
                x, gamma, beta, self.epsilon, self._axes, self._reduction_axes, mask,
                moments_fn=self._moments_fn,
            )
        else:
            outputs = self._kernel(x, training=False, mask=None).infer_forward(
                x, ops.cast(self.moving_mean, dtype), ops.cast(self.moving_variance, dtype),
                gamma, beta, self.epsilon, self._axes,
            )
        return ops.cast(outputs, self.compute_dtype)

    def _train(self, x, gamma, beta, mask):
        """Training mode: normalize with batch statistics, update the moving ones."""
        x = self._check_training_batch(x)
        outputs, mean, variance, count = self._train_forward(x, gamma, beta, mask)
        if self.track_moving_statistics:
            self._update_moving_statistics(x, mean, variance, count)
        return outputs

    def _train_forward(self, x, gamma, beta, mask):
        """`(outputs, mean, variance, count)` of a training step, from the function
        that holds the math of the layer's options (see `_generic`)."""
        correction = self._renorm_scale_and_offset if self.renorm else None
        if self.virtual_batch_size is not None:
            # Masks and renorm need the statistics before normalizing: generic.
            simple = mask is None and correction is None
            kernel = self._kernel(x, training=True, mask=mask) if simple else _generic
            return kernel.ghost_train_forward(
                x, gamma, beta, self.epsilon, self._axes, mask, self.virtual_batch_size,
                moments_fn=self._moments_fn, correction=correction,
                unbiased=self.unbiased_moving_variance,
            )
        if correction is not None:  # renorm's output needs the statistics first: generic
            return _generic.train_forward(
                x, gamma, beta, self.epsilon, self._axes, self._reduction_axes, mask,
                moments_fn=self._moments_fn, correction=correction,
            )
        return self._kernel(x, training=True, mask=mask).train_forward(
            x, gamma, beta, self.epsilon, self._axes, self._reduction_axes, mask,
            moments_fn=self._moments_fn,
        )

    def _check_training_batch(self, x):
        """Refuses, before anything is computed or updated, a training batch that
        ghost batches cannot split, or too small for an unbiased variance.

        A size known while tracing gets a `ValueError`; one known only at run
        time (TensorFlow graphs with an unknown batch size) a run-time assertion
        that every later op of the step depends on.
        """
        k = self.virtual_batch_size
        batch = x.shape[0]
        if k is not None:
            message = (f"virtual_batch_size={k} must divide the training batch size; "
                       "received a batch of {} samples.")
            if batch is None:
                x = _at_run_time(x, ops.shape(x)[0] % k == 0,
                                 message.format("a size it does not divide:"))
            elif batch % k:
                raise ValueError(message.format(batch))
        if self.unbiased_moving_variance and self.track_moving_statistics:
            per_sample = 1
            for axis in self._reduction_axes:
                per_sample *= x.shape[axis] if axis != 0 else 1
            # Samples per statistic: a ghost batch's k, the batch, or 1 when
            # the batch axis is itself normalized (`axis` holding 0).
            samples = k if k is not None else (batch if 0 in self._reduction_axes else 1)
            message = ("unbiased_moving_variance=True multiplies the batch variance by "
                       "m/(m - 1), which needs m >= 2 entries per statistic; inputs of "
                       f"shape {tuple(x.shape)} give m = {{}}.")
            if samples is None:
                x = _at_run_time(x, ops.shape(x)[0] * per_sample > 1, message.format(1))
            elif samples * per_sample < 2:
                raise ValueError(message.format(samples * per_sample))
        return x

    def _update_moving_statistics(self, x, mean, variance, count):
        if self.renorm:
            valid = _generic.is_valid(variance, count)
            self._count_skipped(valid)
            self._update_renorm_statistics(mean, variance, valid)
            return
        if self.unbiased_moving_variance and self.virtual_batch_size is None:
            # (ghost batches apply the correction per ghost batch themselves)
            variance = _generic.bessel(
                variance, _generic.entries(x, self._reduction_axes, count)
            )
        valid = _generic.is_valid(variance, count)
        self._count_skipped(valid)
        momentum = self.momentum
        if momentum is None:  # cumulative average: the (n+1)-th batch has weight 1/(n+1)
            n = ops.convert_to_tensor(self.num_batches_tracked)
            momentum = n / (n + 1.0)
            self.num_batches_tracked.assign(ops.where(valid, n + 1.0, n))
        self._move(self.moving_mean, mean, momentum, valid)
        self._move(self.moving_variance, variance, momentum, valid)

    def _renorm_scale_and_offset(self, mean, variance, gamma, beta):
        return _generic.renorm_scale_and_offset(
            mean, variance, gamma, beta, ops.cast(self.renorm_mean, mean.dtype),
            ops.cast(self.renorm_stddev, mean.dtype), self.epsilon, self.renorm_clipping,
        )

    def _kernel(self, x, training, mask):
        """The one place that picks the module doing the forward math.

        Every kernel module offers `train_forward`, `ghost_train_forward` and
        `infer_forward` with `_generic`'s signatures and numbers. On
        TensorFlow, `_tf_fast` takes every call it can serve (with its two
        kernels: the fused kernel where TensorFlow runs oneDNN, the compiled
        passes of `_tf_compiled` where it does not) and `_generic` the rest;
        on PyTorch `_torch_fast` (ATen's native batch norm) likewise; JAX has
        no fast module (XLA fuses the generic ops). Renorm and masked ghost
        batches never come here: their output needs the statistics before
        normalizing. A fast module itself sends tensors too small to gain from
        its kernel to the generic functions.

        The environment variable `KBN_PATH` overrides this, for tests and
        benchmarks: `generic` uses the generic path everywhere; `fast` the
        kernel `auto` would take for large tensors, wherever it can serve, at
        any size; `fused` / `compiled` (TensorFlow) one kernel by name, at any
        size; `auto` is the default.
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
        if not fast.supports(x, training, mask, self._axes, self.epsilon,
                             synchronized=self.synchronized):
            return _generic
        if path == "auto":
            return fast
        if path not in fast.FORCED:
            raise ValueError(f"KBN_PATH={path!r} has no kernel on the "
                             f"{keras.backend.backend()} backend; it has {sorted(fast.FORCED)}.")
        return fast.FORCED[path]

    def _count_skipped(self, valid):
        self._skipped_updates.add(ops.sum(ops.cast(ops.logical_not(valid), "int32")))

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
        derived = ops.relu(ops.square(ops.convert_to_tensor(self.moving_stddev)) - self.epsilon)
        moving_variance = ops.convert_to_tensor(self.moving_variance)
        self.moving_variance.assign(ops.where(valid, derived, moving_variance))

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
        # kbn's own options appear only when set, so a config that uses none
        # of them stays exactly Keras's (and loads in keras.layers.BatchNormalization).
        for name, default in _KBN_OPTIONS.items():
            if getattr(self, name) != default:
                config[name] = getattr(self, name)
        return {**super().get_config(), **config}


def _at_run_time(x, condition, message):
    """`x`, made to depend on a run-time assertion of `condition`.

    Only TensorFlow graphs trace with unknown sizes (JAX and PyTorch always
    see concrete shapes), so this is TensorFlow's assertion op; everything the
    step computes from `x` runs after it, so a failed check updates nothing.
    """
    import tensorflow as tf

    with tf.control_dependencies([tf.debugging.Assert(condition, [message])]):
        return tf.identity(x)


def _fresh(initializer):
    """A new instance of `initializer`, so seeded initializers don't share state."""
    return initializer.__class__.from_config(initializer.get_config())


def _sqrt_of(initializer):
    """An initializer giving sqrt of what `initializer` gives."""
    def initialize(shape, dtype=None):
        return ops.sqrt(_fresh(initializer)(shape, dtype=dtype))

    return initialize
