"""Finding the batch-norm layers of a model, and what a tool may do with each.

The tools (`recalibrate`, `fold_batchnorm`, `convert`, `BatchStatsMonitor`)
work on `kbn.BatchNormalization` and `keras.layers.BatchNormalization` alike,
in nested models too; this module is where they agree on which layers those
are and which of them they can serve.
"""

import keras

from kbn import _keras_compat
from kbn.batch_normalization import BatchNormalization

BATCH_NORM_CLASSES = (BatchNormalization, keras.layers.BatchNormalization)


def is_batch_norm(layer):
    return isinstance(layer, BATCH_NORM_CLASSES)


def batch_norm_layers(model):
    """Every batch-norm layer of `model` (nested models included), each once, in layer order."""
    seen, found = set(), []
    for layer in _keras_compat.sublayers(model):
        if is_batch_norm(layer) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def channel_axes(layer):
    """The layer's normalized axes as a tuple (one entry unless `axis` is a list)."""
    axis = layer.axis
    return tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)


def has_moving_statistics(layer):
    return getattr(layer, "moving_mean", None) is not None


def momentum_of(layer):
    """The moving averages' momentum, or None (a cumulative average, or none at all)."""
    return getattr(layer, "momentum", None)


def not_recalibratable(layer, calls_per_pass=1):
    """Why the moving statistics of `layer` cannot be recomputed, or None if they can.

    `calls_per_pass`: how many times one forward pass of the model calls the
    layer (`_cloning.calls_per_pass`); a shared layer's moving statistics move
    once per call, so a pass with momentum 0 would keep its last call's only.
    """
    if calls_per_pass > 1:
        return (f"shared: called {calls_per_pass} times in one forward pass, so momentum-0 "
                "passes would keep the statistics of its last call only")
    if not layer.built:
        return "not built (call the model once first)"
    if not has_moving_statistics(layer):
        return "keeps no moving statistics (track_moving_statistics=False)"
    if not layer.trainable:
        return "frozen (trainable=False): it normalizes with its moving statistics in training too"
    return None
