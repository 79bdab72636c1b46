"""Smoke test of `benchmarks/models.py` on the digits CNN: the rows it reports and the
fold it times. No timing is asserted (that is the benchmark's output, not a test's)."""

import numpy as np

from benchmarks import models
from benchmarks.timing import Rounds
from kbn import _bn_layers


def test_predict_rows_and_fold_summary():
    x = np.random.default_rng(0).uniform(size=(60, 8, 8, 1)).astype("float32")
    lines = []
    rows, summary = models.bench_predict("digits", models.digits_cnn(), x,
                                         Rounds(min_reps=1, max_reps=1, budget_s=0.0),
                                         lines.append)
    assert [row[1] for row in rows] == [models.BASE, models.BASE_AGAIN, "folded", "BN removed"]
    assert all(float(row[2]) > 0 for row in rows)
    name, folded, error = summary[:3]
    assert (name, folded) == ("digits", "3/3")
    assert float(error) < 1e-5
    assert lines[0].startswith("digits: 3 BN layers folded, 0 kept")


def test_without_batch_norm_takes_every_bn_layer_out():
    stripped = models.without_batch_norm(models.digits_cnn())
    assert _bn_layers.batch_norm_layers(stripped) == []
    # A Sequential model keeps an Identity in each BN layer's place.
    assert [type(layer).__name__ for layer in stripped.layers
            if layer.name.startswith("bn_")] == ["Identity"] * 3
