"""Shared test set-up: quiet TensorFlow, no dtype policy leaking between tests, and
the backend split.

The suites marked `all_backends` are backend-neutral and run on TensorFlow, JAX
and PyTorch (`KERAS_BACKEND`, one backend per process: `make test` runs
TensorFlow and JAX, `make test-torch` PyTorch). Everything else is about
TensorFlow (its fast path, tf.distribute, the training pipeline) and is
skipped on the other backends. The `lean` tests need neither TensorFlow nor the
pipeline (`make test-lean` runs them on JAX in `.venv-lean`, which has no
TensorFlow): this file imports nothing but Keras and pytest, so it serves there too.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()
# The kernels each backend has (`KBN_PATH`): TensorFlow's fused kernel and its
# compiled passes (one of them is `auto`'s, by CPU configuration, and both are
# tested on every CPU), PyTorch's ATen kernel; JAX runs the generic path only.
KERNEL_PATHS = {"tensorflow": ["fused", "compiled", "generic"],
                "torch": ["fast", "generic"]}.get(BACKEND, ["generic"])


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow only (backend: {BACKEND})")
    for item in items:
        if item.get_closest_marker("all_backends") is None \
                and item.get_closest_marker("lean") is None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _float32_policy():
    """Mixed-precision tests change the global policy; restore float32 after each test."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(params=KERNEL_PATHS)
def each_kernel_path(request, monkeypatch):
    """Runs a test on each of the backend's kernels wherever it serves (at any size)
    and on the generic path. `KBN_PATH` is read when a layer call is traced."""
    monkeypatch.setenv("KBN_PATH", request.param)
    return request.param
