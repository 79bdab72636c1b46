"""Ghost batch norm on the TensorFlow backend: kbn's `virtual_batch_size`
training step against kbn's plain step and against tf.keras 2's ghost batch norm.

Issue 8 §3 sets two targets for a rank-4 input of ≥ 2 M elements with
k = 16 and 32: at most 1.25× kbn's own plain training step (splitting the
batch into ghost batches should cost little), and at most 0.5×
`tf_keras.layers.BatchNormalization(virtual_batch_size=k)` (tf-keras's ghost
batch norm is reported to be more than 2× slower than its plain one:
TensorFlow issue 23049).

Each case times five layers in the same rounds: kbn's ghost layer, kbn's plain
layer and a second plain one (the A/A control of the first ratio), tf_keras's
ghost layer and a second one (the A/A control of the second ratio). The step
is `benchmarks.layer_steps.layer_step`'s training step (loss Σy², returns
dx, dγ, dβ), with and without XLA.
"""

import functools

import tensorflow as tf
import tf_keras

import kbn
from benchmarks.comparisons import Comparison, Target, comparison_rows, log_line
from benchmarks.layer_steps import kbn_path, layer_step, time_steps
from benchmarks.shapes import shape_text

# Rank 4, ≥ 2 M elements (2.7 M and 8.4 M), batches divisible by both k.
FULL_GHOST_SHAPES = [(96, 24, 24, 48), (128, 32, 32, 64)]
QUICK_GHOST_SHAPES = [(64, 8, 8, 16)]
GHOST_SIZES = (16, 32)

COMPARISONS = [
    Comparison("kbn ghost", "kbn", "kbn again", Target(at_most=1.25)),
    Comparison("kbn ghost", "tf_keras ghost", "tf_keras ghost again", Target(at_most=0.5)),
]


def ghost_layers(k):
    """The five layers of a case (name -> constructor with no arguments)."""
    kbn_ghost = functools.partial(kbn.BatchNormalization, virtual_batch_size=k)
    tf_keras_ghost = functools.partial(tf_keras.layers.BatchNormalization, virtual_batch_size=k)
    return {
        "kbn ghost": kbn_ghost,
        "kbn": kbn.BatchNormalization,
        "kbn again": kbn.BatchNormalization,
        "tf_keras ghost": tf_keras_ghost,
        "tf_keras ghost again": tf_keras_ghost,
    }


def bench_ghost(shapes, rounds, log):
    """Times every (shape, k, XLA) training-step case; one row per comparison."""
    rows = []
    for shape in shapes:
        x = tf.random.normal(shape, seed=1)
        for k in GHOST_SIZES:
            for jit in (False, True):
                steps = {name: layer_step(make, x, "train", jit)
                         for name, make in ghost_layers(k).items()}
                case = {"shape": shape_text(shape), "k": k, "XLA": "yes" if jit else "no",
                        "kbn path": kbn_path(steps["kbn ghost"], x)}
                for row in comparison_rows(case, COMPARISONS, time_steps(steps, x, rounds)):
                    rows.append(row)
                    log(log_line(row))
    return rows
