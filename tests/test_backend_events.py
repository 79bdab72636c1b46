"""`python -m train.train` writes the same TensorBoard events on every backend, and
`--backend` can choose it.

A tiny run on this process's backend (on TensorFlow: on JAX) against the same
run on TensorFlow, each in a process of its own: both finish, and every folder
of the run holds the same tags, per TensorBoard plugin, at the same steps.
`make test` runs it on TensorFlow and JAX, `make test-torch` on PyTorch.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import pytest

from tensorboard_events import steps_by_tag
from tiny_runs import only_run

pytestmark = pytest.mark.all_backends

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--epochs", "2", "--hidden", "8,8"]
OTHER = "jax" if keras.backend.backend() == "tensorflow" else keras.backend.backend()


def _events_of_a_run(backend, logdir):
    """{folder of the run: {plugin: {tag: steps}}} of a tiny run on `backend`."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-m", "train.train", "--backend", backend, *TINY, "--logdir", logdir],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{backend}: exit {done.returncode}\n{done.stderr[-3000:]}"
    run_dir = only_run(logdir)
    return {folder: steps_by_tag(os.path.join(run_dir, folder))
            for folder in ("", "train", "validation")}


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="the reference run is on TensorFlow")
def test_same_tags_and_steps_as_on_tensorflow(tmp_path):
    tensorflow_run = _events_of_a_run("tensorflow", str(tmp_path / "tensorflow"))
    events = _events_of_a_run(OTHER, str(tmp_path / OTHER))
    for folder, plugins in tensorflow_run.items():
        assert set(events[folder]) == set(plugins), folder
        for plugin, steps in plugins.items():
            assert events[folder][plugin] == steps, (folder, plugin)
    # What the comparison covers: Keras's callback's tags, the pipeline's own, the hparams.
    train = tensorflow_run["train"]
    assert {"epoch_loss", "epoch_learning_rate", "batch_loss", "batch_stats/bn_1/mean_shift",
            "activation_input/act_2/p50"} <= set(train["scalars"])
    assert "mlp_kbn/bn_1/gamma/histogram" in train["histograms"]
    assert "keras" in train["graph_keras_model"]
    assert {"epoch_accuracy", "evaluation_loss_vs_iterations"} <= set(
        tensorflow_run["validation"]["scalars"])
    assert set(tensorflow_run[""]) == {"hparams"}


def test_the_commands_import_keras_only_after_choosing_the_backend():
    """Guards `--backend`: Keras takes its backend when first imported, so importing a
    command must not import it (nor kbn, which imports Keras), e.g. for its events."""
    script = ("import sys\n"
              "import train.compare, train.lr_sweep, train.paper, train.train\n"
              "assert 'keras' not in sys.modules, 'Keras was imported'\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
