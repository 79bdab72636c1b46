"""NaN safety's count of skipped channel updates, and where each backend keeps it.

The count is bookkeeping for people (`kbn.callbacks.BatchStatsMonitor`,
`kbn.recalibrate`), not part of the model, so it is never a weight:
`get_weights`, `set_weights` and saved files stay those of Keras's layer. It
is an int32 variable that the layer's tracker never sees, updated in place by
the training step. Whether it is also in `layer.variables` depends on how the
backend's steps carry state:

- TensorFlow and PyTorch: no. Their steps are stateful (a `tf.function`
  captures the variable; PyTorch runs eagerly), so the count needs nothing
  from Keras, and the layer's `variables` are exactly Keras's. This matters
  on PyTorch, whose backend turns every entry of `variables` into a module
  parameter (`torch_params`, `state_dict`).
- JAX: yes. Its steps are pure functions that carry the model's variables and
  nothing else; an update to any other array is lost. So on JAX `variables`
  (and `non_trainable_variables`) hold one entry more than Keras's layer's.

The alternatives, measured or read in Keras 3.15 and JAX 0.10, and refused:
- A host-side counter fed by `jax.experimental.io_callback` (under a
  `lax.cond`, so only a skipping batch calls back) keeps `variables` exactly
  Keras's on JAX too, but an effect in the step costs ~150 µs a step plus
  ~50 µs a layer on CPU: `benchmarks.backends --quick` measured kbn's JAX
  training step at 2.2-2.6x Keras's, against 0.89x without it. JAX also
  refuses an I/O effect inside `jax.checkpoint` (remat) and in a `vmap` of
  the `cond`.
- A Keras metric rides along in JAX's `fit` as a metrics variable, but JAX's
  stateless forward pass drops updates to it made in `call`, and `fit`
  resets metrics every epoch and prints them in its logs.
"""

import keras


def carried_by_variables():
    """Whether the count must be in `layer.variables` for training steps to keep it."""
    return keras.backend.backend() == "jax"


class SkipCounter:
    """The count: an int32 variable, 0 at first, outside every tracker."""

    def __init__(self):
        # Under tf.distribute each replica adds its own skips; the first replica's count
        # is kept (the replicas do not all-reduce it).
        self.variable = keras.Variable(
            0, shape=(), dtype="int32", trainable=False, name="skipped_updates",
            aggregation="only_first_replica",
        )

    def add(self, count):
        self.variable.assign_add(count)

    def read(self):
        return int(keras.ops.convert_to_numpy(self.variable))
