"""Checks of the layer's constructor and build arguments.

Each check returns the coerced value or raises a `ValueError` that names the
argument and the value received, so a bad call fails where it is written.
"""

import math
import numbers

RENORM_CLIPPING_KEYS = ("rmax", "rmin", "dmax")


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False. Received: {name}={value!r}")
    return value


def check_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer. Received: {name}={value!r}")
    return int(value)


def check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a number. Received: {name}={value!r}")
    return float(value)


def check_fraction(name, value):
    if not 0.0 <= check_number(name, value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]. Received: {name}={value!r}")
    return float(value)


def check_positive(name, value):
    if not 0.0 < check_number(name, value) < math.inf:
        raise ValueError(f"{name} must be a finite number > 0. Received: {name}={value!r}")
    return float(value)


def check_momentum(momentum):
    """A float in [0, 1], or None for a cumulative average."""
    return None if momentum is None else check_fraction("momentum", momentum)


def check_axis(axis):
    """An integer, or a non-empty list/tuple of integers (kept as a list, as tf.keras does)."""
    if isinstance(axis, (list, tuple)):
        if not axis:
            raise ValueError(f"axis must name at least one axis. Received: axis={axis!r}")
        for entry in axis:
            if isinstance(entry, bool) or not isinstance(entry, numbers.Integral):
                raise ValueError(
                    f"axis must be an integer or a list of integers. Received: axis={axis!r}"
                )
        return [int(entry) for entry in axis]
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(
            f"axis must be an integer or a list of integers. Received: axis={axis!r}"
        )
    return int(axis)


def resolve_axes(axis, rank, virtual_batch_size=None):
    """The channel axes of a rank-`rank` input, non-negative and in input order.

    Raises:
        ValueError: an axis out of range, the same axis twice (also as `1` and
            `-3` on rank 4), or the batch axis 0 together with
            `virtual_batch_size` (ghost batches split axis 0).
    """
    given = axis if isinstance(axis, list) else [axis]
    for entry in given:
        if not -rank <= entry < rank:
            raise ValueError(
                f"axis={axis} is out of range for inputs of rank {rank}; "
                f"use axes in [{-rank}, {rank - 1}]."
            )
    axes = [entry % rank for entry in given]
    if len(set(axes)) != len(axes):
        raise ValueError(
            f"axis={axis} names the same axis twice for inputs of rank {rank} "
            f"(as non-negative axes: {axes})."
        )
    if virtual_batch_size is not None and 0 in axes:
        raise ValueError(
            f"axis={axis} includes the batch axis 0, which virtual_batch_size="
            f"{virtual_batch_size} splits into ghost batches; normalize other axes."
        )
    return tuple(sorted(axes))


def check_virtual_batch_size(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"virtual_batch_size must be None or an integer >= 1. "
            f"Received: virtual_batch_size={value!r}"
        )
    return int(value)


def check_renorm_clipping(clipping, renorm):
    """Validates `renorm_clipping`; like Keras, `{}` when renorm is on and it is None."""
    if clipping is None:
        return {} if renorm else None
    if not isinstance(clipping, dict):
        raise ValueError(
            f"renorm_clipping must be a dict with keys among {RENORM_CLIPPING_KEYS}. "
            f"Received: renorm_clipping={clipping!r}"
        )
    unknown = sorted(set(clipping) - set(RENORM_CLIPPING_KEYS))
    if unknown:
        raise ValueError(
            f"renorm_clipping has unknown key(s) {unknown}; the keys are "
            f"{RENORM_CLIPPING_KEYS}. Received: renorm_clipping={clipping!r}"
        )
    for key, value in clipping.items():
        check_number(f"renorm_clipping[{key!r}]", value)
    rmax, rmin, dmax = (clipping.get(k) for k in RENORM_CLIPPING_KEYS)
    if rmax is not None and rmin is not None and rmax < rmin:
        raise ValueError(
            f"renorm_clipping needs rmax >= rmin. Received: renorm_clipping={clipping!r}"
        )
    if dmax is not None and dmax < 0:
        raise ValueError(
            f"renorm_clipping needs dmax >= 0. Received: renorm_clipping={clipping!r}"
        )
    return dict(clipping)


def check_combinations(layer):
    """Options that cannot work together, refused at construction with the reason."""
    if layer.renorm and layer.momentum is None:
        raise ValueError(
            "renorm=True needs a float momentum (renorm's moving averages are "
            "exponential). Received: renorm=True, momentum=None"
        )
    if layer.renorm and not layer.track_moving_statistics:
        raise ValueError(
            "renorm=True corrects the batch statistics towards the moving ones, so it "
            "needs them. Received: renorm=True, track_moving_statistics=False"
        )
    if layer.virtual_batch_size is not None and 0 in (
        layer.axis if isinstance(layer.axis, list) else [layer.axis]
    ):
        raise ValueError(
            f"axis={layer.axis} includes the batch axis 0, which virtual_batch_size="
            f"{layer.virtual_batch_size} splits into ghost batches; normalize other axes."
        )
    if layer.renorm and layer.unbiased_moving_variance:
        raise ValueError(
            "renorm=True keeps moving standard deviations of its own, which "
            "unbiased_moving_variance does not apply to; use one. "
            "Received: renorm=True, unbiased_moving_variance=True"
        )
    if layer.synchronized and layer.virtual_batch_size is not None:
        raise ValueError(
            "virtual_batch_size splits each replica's batch into ghost batches, while "
            "synchronized=True takes statistics over all replicas together; use one. "
            f"Received: virtual_batch_size={layer.virtual_batch_size}, synchronized=True"
        )
