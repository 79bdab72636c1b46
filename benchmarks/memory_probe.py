"""Peak memory of one training step or one `fit` epoch, measured in this process.

    python -m benchmarks.memory_probe '{"kind": "step", "layer": "kbn", "shape": [4096, 1024]}'
    python -m benchmarks.memory_probe '{"kind": "fit", "layer": "Keras", "model": "MLP"}'

prints `{"peak_mib": ...}`. `benchmarks.memory` runs it once per case, each in
a fresh process: memory freed by earlier work stays resident in the
allocator and would hide the case's own.

Peak memory: the extra resident memory (RSS) at the peak of one training
step (no XLA) or of the first `fit` epoch (tracing included), on top of what
is resident before it (input, weights; for the step, its traced function).
The probe resets the kernel's high-water mark (/proc/self/clear_refs), runs
once, and reads VmHWM − VmRSS. A later epoch in the same process cannot be
measured this way: it reuses the buffers the first one freed. (TensorFlow's
allocator stats are GPU-only, and tracemalloc cannot see TensorFlow's C++
allocations.) Linux only (/proc).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.fit_epochs import BATCH_SIZE, compiled_model, digits  # noqa: E402
from benchmarks.layer_steps import LAYERS, layer_step  # noqa: E402


def _resident_kib():
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0])
    return values


def memory_probe(spec):
    """Peak extra resident MiB of one training step or `fit` epoch (see module doc).

    Args:
        spec: {"kind": "step", "layer": a key of `LAYERS`, "shape": [...]} or
            {"kind": "fit", "layer": "kbn" or "Keras", "model": a key of
            `benchmarks.fit_epochs.MODELS`}.
    """
    if spec["kind"] == "step":
        # From NumPy, not tf.random: its freed temporaries would stay in the
        # allocator and be reused by the step, hiding part of its peak.
        x = tf.constant(np.random.default_rng(1).standard_normal(spec["shape"], np.float32))
        step = layer_step(LAYERS[spec["layer"]], x, "train", jit=False)

        # Trace without running: a run before the measurement would leave its
        # freed buffers resident in the allocator and hide the step's peak.
        step.get_concrete_function(x)

        def run():
            step(x)
    else:
        images, labels = digits()
        model = compiled_model(spec["model"], spec["layer"])

        def run():  # the first epoch: includes tracing the train function
            model.fit(images, labels, batch_size=BATCH_SIZE, epochs=1, verbose=0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current VmRSS
    baseline = _resident_kib()["VmRSS"]
    run()
    return (_resident_kib()["VmHWM"] - baseline) / 1024


def parse_spec(text):
    """The probe's JSON argument, checked: a `ValueError` names what is wrong."""
    spec = json.loads(text)  # json.JSONDecodeError is a ValueError
    needed = {"step": ("layer", "shape"), "fit": ("layer", "model")}
    if not isinstance(spec, dict) or spec.get("kind") not in needed:
        raise ValueError(f'"kind" must be one of {sorted(needed)}. Received: {text}')
    missing = [key for key in needed[spec["kind"]] if key not in spec]
    if missing:
        raise ValueError(f"a {spec['kind']!r} probe needs {missing}. Received: {text}")
    if spec["layer"] not in LAYERS:
        raise ValueError(f'"layer" must be one of {sorted(LAYERS)}. Received: {text}')
    return spec


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    usage = "usage: python -m benchmarks.memory_probe SPEC_JSON (see the module docstring)"
    if len(argv) != 1:
        print(usage, file=sys.stderr)
        sys.exit(2)
    try:
        spec = parse_spec(argv[0])
    except ValueError as error:
        print(f"memory_probe: {error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({"peak_mib": memory_probe(spec)}))


if __name__ == "__main__":
    main()
