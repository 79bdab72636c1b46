"""Run by test_synchronized.py in a subprocess: splits the CPU into two logical devices
(which cannot be undone in-process) and prints, as JSON, how far the layer's results
under MirroredStrategy are from one device on the whole batch."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kbn  # noqa: E402

SHAPE = (16, 4, 4, 3)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def train_step(x, upstream, layer_class, synchronized, distributed):
    """One training step (forward, input gradient, moving update); returns numpy results."""
    scope = strategy.scope() if distributed else tf.init_scope()
    with scope:
        layer = layer_class(synchronized=synchronized, momentum=0.5)
        layer.build((None,) + SHAPE[1:])

    def step(inputs, cotangent):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs, training=True)
            loss = tf.reduce_sum(y * cotangent)
        return y, tape.gradient(loss, inputs)

    if distributed:
        data = tf.data.Dataset.from_tensor_slices((x, upstream)).batch(SHAPE[0])
        batch = next(iter(strategy.experimental_distribute_dataset(data)))
        y, dx = strategy.run(tf.function(step), args=batch)
        y, dx = (np.concatenate([np.asarray(t) for t in strategy.experimental_local_results(v)])
                 for v in (y, dx))
    else:
        y, dx = (np.asarray(t) for t in tf.function(step)(tf.constant(x), tf.constant(upstream)))
    return {"y": y, "dx": dx, "moving_mean": layer.moving_mean.numpy(),
            "moving_variance": layer.moving_variance.numpy()}


def max_errors(a, b):
    return {k: float(np.max(np.abs(a[k] - b[k]))) for k in a}


def report(offset):
    rng = np.random.default_rng(0)
    x = (offset + rng.normal(size=SHAPE)).astype("float32")
    x[SHAPE[0] // 2:] += 3.0  # the replicas' halves differ, so local ≠ global statistics
    upstream = rng.normal(size=SHAPE).astype("float32")
    run = lambda *args: train_step(x, upstream, *args)  # noqa: E731
    whole = run(kbn.BatchNormalization, False, False)
    return {
        "kbn_synchronized": max_errors(run(kbn.BatchNormalization, True, True), whole),
        "kbn_local": max_errors(run(kbn.BatchNormalization, False, True), whole),
        "keras_synchronized": max_errors(run(keras.layers.BatchNormalization, True, True), whole),
    }


offsets = [float(a) for a in sys.argv[1:]]
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "by_offset": {str(o): report(o) for o in offsets}}))
