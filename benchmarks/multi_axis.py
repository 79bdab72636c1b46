"""Several normalized axes on the TensorFlow backend: kbn's `axis=[1, 3]`
training step against tf.keras 2's layer with the same axes.

With `axis=[1, 3]` on an (N, H, W, C) input, the statistics are per (h, c)
pair, over N and W; γ, β and the moving statistics have shape (H, C).
Keras 3 has no such option, so the reference is
`tf_keras.layers.BatchNormalization(axis=[1, 3])`. Issue 8 §3's target: no
slower, i.e. a tie within the A/A interval (a second tf_keras layer) or
better. The step is `benchmarks.layer_steps.layer_step`'s training step,
with and without XLA.
"""

import functools

import tensorflow as tf
import tf_keras

import kbn
from benchmarks.comparisons import TIE_OR_BETTER, Comparison, comparison_rows, log_line
from benchmarks.layer_steps import kbn_path, layer_step, time_steps
from benchmarks.shapes import shape_text

AXES = [1, 3]
# Rank 4: 100 K, 2.7 M and 8.4 M elements.
FULL_MULTI_AXIS_SHAPES = [(32, 14, 14, 16), (96, 24, 24, 48), (128, 32, 32, 64)]
QUICK_MULTI_AXIS_SHAPES = [(16, 8, 8, 32)]

LAYERS = {
    "kbn": functools.partial(kbn.BatchNormalization, axis=AXES),
    "tf_keras": functools.partial(tf_keras.layers.BatchNormalization, axis=AXES),
    "tf_keras again": functools.partial(tf_keras.layers.BatchNormalization, axis=AXES),
}
COMPARISONS = [Comparison("kbn", "tf_keras", "tf_keras again", TIE_OR_BETTER)]


def bench_multi_axis(shapes, rounds, log):
    """Times every (shape, XLA) training-step case; one row per case."""
    rows = []
    for shape in shapes:
        x = tf.random.normal(shape, seed=1)
        for jit in (False, True):
            steps = {name: layer_step(make, x, "train", jit) for name, make in LAYERS.items()}
            case = {"shape": shape_text(shape), "axis": str(AXES), "XLA": "yes" if jit else "no",
                    "kbn path": kbn_path(steps["kbn"], x)}
            for row in comparison_rows(case, COMPARISONS, time_steps(steps, x, rounds)):
                rows.append(row)
                log(log_line(row))
    return rows
