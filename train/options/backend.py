"""Which Keras backend a command runs on: `--backend tensorflow|jax|torch`.

    from train.options import backend
    backend.activate(args.backend)     # before anything imports Keras; ValueError: one line
    backend.set_random_seed(seed)      # Keras's, quiet where it imports TensorFlow

Keras reads `KERAS_BACKEND` once, when it is first imported, so a command
picks its backend before it imports the modules that train (they import
Keras); the flag's default is `KERAS_BACKEND`, else tensorflow. A resumed run
continues on the backend it was made on (args.json). Only the tensorflow
backend imports TensorFlow here (quietly): the pipeline writes its TensorBoard
events without it (kbn/_event_writer.py), and on PyTorch importing it before
Keras is fatal (measured: a segfault in triton when Keras then imports torch._dynamo).
"""

import contextlib
import importlib.util
import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")
_PACKAGES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def default():
    """`KERAS_BACKEND` if set, else tensorflow."""
    return os.environ.get("KERAS_BACKEND") or "tensorflow"


def check(name, flag="--backend"):
    """Raises ValueError (one line) for a backend that is unknown or not installed."""
    if name not in BACKENDS:
        raise ValueError(f"{flag} {name!r}: choose one of {', '.join(BACKENDS)}")
    if importlib.util.find_spec(name) is None:
        raise ValueError(f"{flag} {name}: {_PACKAGES[name]} is not installed (kbn's {name}"
                         f" extra: pip install '.[{name}]' in kbn's checkout, or pip install"
                         f" {name})")


def activate(name):
    """Makes `name` the backend of every Keras import in this process.

    Raises:
        ValueError: not installed, or Keras already runs on another backend in
            this process (a backend cannot change after Keras's import).
    """
    check(name)
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != name:
            raise ValueError(f"--backend {name}: this process already runs Keras on {current};"
                             f" start a new one (python -m train.<command> --backend {name})")
    os.environ["KERAS_BACKEND"] = name
    if name == "tensorflow":
        import_tensorflow_quietly()


def import_tensorflow_quietly():
    """Imports TensorFlow with its start-up noise kept out of the terminal."""
    with _tensorflow_start_up_muted():
        import tensorflow  # noqa: F401


def set_random_seed(seed):
    """`keras.utils.set_random_seed(seed)`, with TensorFlow's start-up noise kept out.

    Keras seeds TensorFlow too wherever it is installed (for tf.data), so on
    JAX and PyTorch this is where TensorFlow gets imported: by Keras, after
    Keras's own backend (an order that works on PyTorch).
    """
    import keras

    with _tensorflow_start_up_muted():
        keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def _tensorflow_start_up_muted():
    """Where TensorFlow is installed and not yet imported, mutes what its import prints.

    TF_CPP_MIN_LOG_LEVEL silences most of it; TensorFlow 2.21 still prints a few
    C++ lines (oneDNN, CUDA drivers) while its libraries load, so stderr points
    to /dev/null meanwhile. Python errors are raised after it is restored.
    """
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)
