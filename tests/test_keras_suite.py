"""Keras's own tests of `keras.layers.BatchNormalization`, run against kbn's layer.

The test file that ships with Keras (`keras/src/layers/normalization/
batch_normalization_test.py`) holds Keras's expectations of its layer: the
numbers, masking, renorm, serialization, and the state it owns (weights,
losses, and on PyTorch the module's parameters). Its test class looks the
layer up as `layers.BatchNormalization` when each test runs, so pointing that
module's `layers` at a namespace whose `BatchNormalization` is kbn's runs
the whole file, unchanged, on kbn: a drop-in passes every test of it.
"""

import re
import types

import pytest

import kbn

keras_tests = pytest.importorskip(
    "keras.src.layers.normalization.batch_normalization_test",
    reason="this Keras release moved or dropped its batch-norm test file",
)

pytestmark = pytest.mark.all_backends

KBN_LAYERS = types.SimpleNamespace(
    **{**vars(keras_tests.layers), "BatchNormalization": kbn.BatchNormalization}
)


@pytest.fixture(autouse=True)
def _keras_tests_use_kbn(monkeypatch):
    monkeypatch.setattr(keras_tests, "layers", KBN_LAYERS)


class TestKerasBatchNormalizationSuite(keras_tests.BatchNormalizationTest):
    """Every test of Keras's `BatchNormalizationTest`, with kbn's layer."""

    def test_the_suite_builds_kbn_layers(self):
        # Guards the set-up itself: were the patch lost, Keras's file would test Keras.
        layer = keras_tests.layers.BatchNormalization()
        self.assertIsInstance(layer, kbn.BatchNormalization)

    def test_renorm_invalid_clipping_keys(self):
        """Keras's three bad `renorm_clipping`s, refused with kbn's messages."""
        cases = [({"random_key": 1.0}, "unknown key(s) ['random_key']"),
                 ({"rmax": 0.0, "rmin": 1.0}, "needs rmax >= rmin"),
                 ({"rmax": 1.0, "dmax": -1.0}, "needs dmax >= 0")]
        for clipping, message in cases:
            with self.assertRaisesRegex(ValueError, re.escape(message)):
                keras_tests.layers.BatchNormalization(renorm=True, renorm_clipping=clipping)
