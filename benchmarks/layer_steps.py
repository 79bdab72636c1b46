"""kbn vs Keras on the TensorFlow backend: one layer's training step and
inference forward, per input shape and with or without XLA.

- Training step: forward + backward + moving update of one layer, loss Σy², in
  one `tf.function` (`jit_compile` False or True); returns dx, dγ, dβ.
- Inference: the forward pass with the moving statistics.
- Floor: the fewest bytes a batch-norm pass over a tensor too big for the
  cache must move. Training: forward reads x twice (the statistics must be
  known before any y is written) and writes y; backward reads dy and x twice
  (Σdy and Σdy·x̂ are needed before any dx) and writes dx: 8 tensor-sized
  transfers. Inference: read x, write y: 2. "× floor" is the time over
  floor bytes / copy bandwidth (`benchmarks.machine`). The timed training
  step also holds the loss (read y, write dy), which the floor does not count.

Every case times kbn, Keras and the A/A control (a second Keras layer) in
interleaved rounds (`benchmarks.timing`), with paired intervals
(`benchmarks.intervals`).
"""

import keras
import tensorflow as tf

import kbn
from benchmarks.comparisons import TIE_OR_BETTER, Target, verdict
from benchmarks.intervals import CONTROL, paired_ci
from benchmarks.shapes import elements, shape_text
from benchmarks.timing import time_interleaved

LAYERS = {"kbn": kbn.BatchNormalization, "Keras": keras.layers.BatchNormalization}
FLOOR_PASSES = {"train": 8, "infer": 2}
BYTES_PER_ELEMENT = 4  # float32


def layer_step(make_layer, x, mode, jit):
    """A `tf.function` running one step of a fresh layer on inputs like `x`.

    `make_layer` builds the layer with no arguments (a layer class, or a
    `functools.partial` of one). `mode` "train": forward + backward + moving
    update with the loss Σy², returning dx, dγ, dβ; "infer": the inference
    forward pass.
    """
    layer = make_layer()
    layer.build(x.shape)
    if mode == "train":
        @tf.function(jit_compile=jit)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.square(layer(x, training=True)))
            return tape.gradient(loss, [x] + layer.trainable_weights)
    else:
        step = tf.function(lambda x: layer(x, training=False), jit_compile=jit)
    return step


def time_steps(steps, x, rounds):
    """`time_interleaved` of each `tf.function` in `steps` (name -> step) called on `x`."""
    return time_interleaved({name: (lambda step=step: step(x)) for name, step in steps.items()},
                            rounds)


def kbn_path(step, x):
    """What kbn's traced step computes with: "fused" (the fused kernel),
    "compiled" (`kbn._tf_compiled`'s XLA passes), "matmul" (statistics by
    matrix products, under XLA) or "generic"."""
    types = {op.type for op in step.get_concrete_function(x).graph.get_operations()}
    if "FusedBatchNormV3" in types:
        return "fused"
    if {"PartitionedCall", "StatefulPartitionedCall"} & types:
        return "compiled"
    return "matmul" if "MatMul" in types else "generic"


def target_for(shape, mode, jit):
    """Issue 14's goal for kbn/Keras in each CPU configuration: a training step
    without XLA at most 0.6 on rank-4 tensors of ≥ 2 M elements and 0.75 on
    rank-2 ones of ≥ 100 K; everywhere else a tie with Keras or better."""
    if mode == "train" and not jit:
        if len(shape) == 4 and elements(shape) >= 2_000_000:
            return Target(at_most=0.6)
        if len(shape) == 2 and elements(shape) >= 100_000:
            return Target(at_most=0.75)
    return TIE_OR_BETTER


def bench_layers(shapes, copy_gbps, rounds, log):
    """Times every (shape, mode, XLA) case; returns one row dict per case."""
    rows = []
    for shape in shapes:
        x = tf.random.normal(shape, seed=1)
        count = elements(shape)
        for mode in ("train", "infer"):
            for jit in (False, True):
                steps = {name: layer_step(cls, x, mode, jit) for name, cls in LAYERS.items()}
                steps[CONTROL] = layer_step(LAYERS["Keras"], x, mode, jit)
                medians, spreads, times = time_steps(steps, x, rounds)
                ci, aa_ci = paired_ci(times, "kbn"), paired_ci(times, CONTROL)
                ratio = medians["kbn"] / medians["Keras"]
                target, judged = target_for(shape, mode, jit), verdict(ci, aa_ci)
                floor_bytes = FLOOR_PASSES[mode] * BYTES_PER_ELEMENT * count
                floor_s = floor_bytes / (copy_gbps * 1e9)
                row = {
                    "shape": shape_text(shape),
                    "elements": count,
                    "mode": mode,
                    "xla": jit,
                    "path": kbn_path(steps["kbn"], x),
                    "keras_ms": medians["Keras"] * 1e3,
                    "kbn_ms": medians["kbn"] * 1e3,
                    "ratio": ratio,
                    "ci": ci,
                    "aa_ci": aa_ci,
                    "verdict": judged,
                    "target": target.text(),
                    "met": target.met(ratio, judged),
                    "kbn_gbps": floor_bytes / medians["kbn"] / 1e9,
                    "kbn_x_floor": medians["kbn"] / floor_s,
                    "keras_x_floor": medians["Keras"] / floor_s,
                    "reps": len(times["kbn"]),
                    "spread": max(spreads.values()),
                }
                rows.append(row)
                log(f"{row['shape']:>16} {mode:5} xla={jit!s:5} Keras {row['keras_ms']:9.2f} ms"
                    f"  kbn {row['kbn_ms']:9.2f} ms  ratio {row['ratio']:.2f}"
                    " [{:.2f}, {:.2f}]  A/A [{:.2f}, {:.2f}]".format(*ci, *aa_ci))
    return rows
