"""What the benchmark ran on: the machine and library versions, and its copy bandwidth.

Copy bandwidth: bytes read + written per second by a plain copy, measured
here: NumPy into a preallocated buffer (one thread) and a TensorFlow
elementwise negation (all threads); the faster one is the reference for the
memory floor of `benchmarks.layer_steps`.
"""

import os
import platform

import keras
import numpy as np
import tensorflow as tf

import kbn
from benchmarks.timing import median_seconds


# The vector extensions that decide TensorFlow's CPU kernels (oneDNN's default
# and its code paths), as /proc/cpuinfo names them.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "amx_tile")


def _cpuinfo():
    """The CPU model and its vector extensions (of VECTOR_FLAGS), from /proc/cpuinfo."""
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return cpu, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            cpu = value.strip()
        elif key.strip() == "flags":
            present = set(value.split())
            flags = [flag for flag in VECTOR_FLAGS if flag in present]
            break
    return cpu, flags


def describe_machine():
    """CPU model, vector extensions, oneDNN on/off, core count, RAM and library
    versions, for the report's header."""
    from kbn import _tf_fast

    cpu, flags = _cpuinfo()
    try:
        ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        ram_gib = float("nan")
    return {
        "cpu": cpu,
        "vector_extensions": " ".join(flags) or "none listed",
        "onednn": _tf_fast.ONEDNN,
        "onednn_switch": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "kbn": kbn.__version__,
        "kbn_path": os.environ.get("KBN_PATH", "auto"),
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def copy_bandwidth(elements):
    """Bytes read + written per second by a plain copy, in GB/s, two ways."""
    source = np.random.default_rng(0).random(elements, dtype=np.float32)
    target = np.empty_like(source)
    numpy_s = median_seconds(lambda: np.copyto(target, source), reps=20)
    x = tf.constant(source)
    negate = tf.function(tf.negative)
    tf_s = median_seconds(lambda: negate(x), reps=20)
    moved = 2 * source.nbytes
    return {"numpy": moved / numpy_s / 1e9, "tensorflow": moved / tf_s / 1e9}
