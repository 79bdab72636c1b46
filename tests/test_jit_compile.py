"""--jit-compile auto|on|off: model.compile's choice, recorded, and the same run either way.

Backend-neutral: the runs train in this process, on its backend. Keras resolves
"auto" per backend (XLA on JAX; none on TensorFlow without a GPU; eager on
PyTorch); summary.json's "xla" says what ran.
"""

import keras
import numpy as np
import pytest

from tiny_runs import only_run, read_run_file
from train import train as train_command

pytestmark = pytest.mark.all_backends

TINY = ["--epochs", "3", "--hidden", "8,8", "--shift-every", "10", "--batch-log-every", "10"]
BACKEND = keras.backend.backend()
CHOICES = ["auto", "off"] if BACKEND == "torch" else ["auto", "on", "off"]


def _auto_is_xla():
    """Keras's "auto": XLA on JAX; on TensorFlow only where a device other than a CPU is."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return any(d.device_type != "CPU" for d in tf.config.list_physical_devices())
    return BACKEND == "jax"


XLA = {"auto": _auto_is_xla(), "on": True, "off": False}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    made = {}
    for choice in CHOICES:
        logdir = str(tmp_path_factory.mktemp(f"jit-{choice}"))
        status = train_command.main([*TINY, "--backend", BACKEND, "--jit-compile", choice,
                                     "--logdir", logdir])
        assert status == 0
        made[choice] = only_run(logdir)
    return made


@pytest.mark.parametrize("choice", CHOICES)
def test_the_run_records_the_choice_and_what_ran(runs, choice):
    assert read_run_file(runs[choice], "args.json")["jit_compile"] == choice
    assert read_run_file(runs[choice], "summary.json")["xla"] is XLA[choice]


# Only a choice that compiles differs from "off" (on PyTorch none does).
@pytest.mark.parametrize("choice", [c for c in CHOICES if XLA[c]])
def test_compiled_or_not_the_run_is_the_same(runs, choice):
    """XLA fuses and reorders float32 arithmetic: 1e-5 relative over 3 epochs."""
    columns = ("loss", "accuracy", "val_loss", "val_accuracy")
    eager = read_run_file(runs["off"], "metrics.csv")
    other = read_run_file(runs[choice], "metrics.csv")
    assert len(other) == len(eager) == 3
    for a, b in zip(eager, other):
        np.testing.assert_allclose([float(b[c]) for c in columns],
                                   [float(a[c]) for c in columns], rtol=1e-5, atol=1e-6)
