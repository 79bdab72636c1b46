"""Shared test set-up: quiet TensorFlow, and no dtype policy leaking between tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _float32_policy():
    """Mixed-precision tests change the global policy; restore float32 after each test."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(params=["fast", "generic"])
def each_kernel_path(request, monkeypatch):
    """Runs a test on the fused kernel wherever it serves (at any size) and on the
    generic path. `KBN_PATH` is read when a layer call is traced."""
    monkeypatch.setenv("KBN_PATH", request.param)
    return request.param
