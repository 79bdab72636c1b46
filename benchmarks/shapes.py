"""The input shapes the benchmarks time, in one place for every backend.

Pure Python (no TensorFlow), so the per-backend subprocesses of
`benchmarks.backends` import it without starting TensorFlow.
"""

import math

# ~100 K to ~30 M elements; rank 2 (Dense activations) and rank 4 (NHWC conv activations).
FULL_SHAPES = [
    (1024, 100), (512, 512), (4096, 512), (8192, 2048),
    (32, 14, 14, 16), (40, 12, 12, 160), (96, 24, 24, 48), (128, 32, 32, 64), (64, 56, 56, 128),
]
QUICK_SHAPES = [(1024, 100), (16, 8, 8, 32)]


def elements(shape):
    """How many entries a tensor of `shape` holds."""
    return math.prod(shape)


def shape_text(shape):
    """`(64, 56, 56, 128)` -> "64×56×56×128", as the tables write shapes."""
    return "×".join(map(str, shape))
