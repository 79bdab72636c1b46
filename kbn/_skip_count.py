"""NaN safety's count of skipped channel updates, kept outside the layer's Keras state.

The count is bookkeeping for people (`kbn.callbacks.BatchStatsMonitor`,
`kbn.recalibrate`), not part of the model, so a kbn layer must hold exactly
the state of `keras.layers.BatchNormalization`: the same weights and the same
`variables`. That rules out a variable that Keras can see: PyTorch's backend
turns every entry of `layer.variables` into a module parameter (`torch_params`,
`state_dict`), and a non-trainable weight would change `get_weights` and saved
files. A Keras metric would ride along in JAX's `fit`, but `fit` resets
metrics every epoch and prints them in its logs, and JAX's stateless forward
pass drops a metric's updates made in `call` anyway. So each backend keeps the
count where its training steps can update it without Keras knowing:

- TensorFlow and PyTorch: an int32 variable that no tracker sees. Their steps
  are stateful (a `tf.function` captures the variable; PyTorch runs eagerly),
  so it is updated in place on the device, with no host round trip.
- JAX: steps are pure functions that carry only the model's variables, so an
  update to any other array is lost. The count is a host-side integer, fed by
  `jax.experimental.io_callback` under a `lax.cond`, so that only a batch
  that skipped something pays the trip to the host.

Either way nothing of it is saved: a loaded model counts from 0.
"""

import threading

import keras


def new_counter():
    """A counter starting at 0, of the kind the current backend can update in a step."""
    if keras.backend.backend() == "jax":
        return _HostCounter()
    return _DeviceCounter()


class _DeviceCounter:
    """An int32 variable outside every tracker (TensorFlow, PyTorch)."""

    def __init__(self):
        # Under tf.distribute each replica adds its own skips; the first replica's count
        # is kept (the replicas do not all-reduce it).
        self._variable = keras.Variable(
            0, shape=(), dtype="int32", trainable=False, name="skipped_updates",
            aggregation="only_first_replica",
        )

    def add(self, count):
        self._variable.assign_add(count)

    def read(self):
        return int(keras.ops.convert_to_numpy(self._variable))


class _HostCounter:
    """A Python integer on the host, which JAX steps add to through `io_callback`."""

    def __init__(self):
        self._total = 0
        # Several layers' callbacks of one step may run on different threads at once.
        self._lock = threading.Lock()

    def add(self, count):
        import jax
        from jax.experimental import io_callback

        # Unordered: an ordered effect would refuse to run on several devices.
        jax.lax.cond(count > 0, lambda: io_callback(self._add_on_host, None, count),
                     lambda: None)

    def _add_on_host(self, count):
        with self._lock:
            self._total += int(count)

    def read(self):
        import jax

        jax.effects_barrier()  # the steps dispatched so far have run their callbacks
        return self._total
