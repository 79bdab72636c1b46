"""`python -m train.train` and `python -m train.compare` write the same TensorBoard
events on every backend, and `--backend` can choose it.

A tiny run on this process's backend (on TensorFlow: on JAX) against the same
run on TensorFlow, each in a process of its own: both finish, and every folder
of the run holds the same tags, per TensorBoard plugin, at the same steps; for
compare, each variant's run folder, with the comparison plot among its images.
`make test` runs it on TensorFlow and JAX, `make test-torch` on PyTorch.
"""

import glob
import importlib.util
import os

import keras
import pytest

from tensorboard_events import steps_by_tag
from tiny_runs import QUIET, run_python
from train.data.variants import COMPARED

pytestmark = pytest.mark.all_backends

TINY = ["--epochs", "2", "--hidden", "8,8"]
OTHER = "jax" if keras.backend.backend() == "tensorflow" else keras.backend.backend()


def _events_of_a_run(backend, logdir, command="train"):
    """{(run folder, sub-folder): {plugin: {tag: steps}}} of a tiny `python -m train.<command>`
    on `backend`; a run folder is named without its time stamp ("digits-kbn")."""
    done = run_python("-m", f"train.{command}", "--backend", backend, *TINY, "--logdir", logdir,
                      env=QUIET, timeout=300 if command == "train" else 600)
    assert done.returncode == 0, f"{backend}: exit {done.returncode}\n{done.stderr[-3000:]}"
    run_dirs = [path for path in glob.glob(os.path.join(logdir, command, "*"))
                if os.path.isdir(path)]  # not compare's PNG beside them
    assert run_dirs, f"{backend}: no run folder in {logdir}"
    return {(os.path.basename(run_dir).split("-", 2)[2], folder):
            steps_by_tag(os.path.join(run_dir, folder))
            for run_dir in run_dirs for folder in ("", "train", "validation")}


def _assert_same_events(tensorflow_run, events):
    assert set(events) == set(tensorflow_run)
    for folder, plugins in tensorflow_run.items():
        assert set(events[folder]) == set(plugins), folder
        for plugin, steps in plugins.items():
            assert events[folder][plugin] == steps, (folder, plugin)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="the reference run is on TensorFlow")
def test_same_tags_and_steps_as_on_tensorflow(tmp_path):
    tensorflow_run = _events_of_a_run("tensorflow", str(tmp_path / "tensorflow"))
    _assert_same_events(tensorflow_run, _events_of_a_run(OTHER, str(tmp_path / OTHER)))
    # What the comparison covers: Keras's callback's tags, the pipeline's own, the hparams.
    tensorflow_run = {folder: plugins for (_, folder), plugins in tensorflow_run.items()}
    train = tensorflow_run["train"]
    assert {"epoch_loss", "epoch_learning_rate", "batch_loss", "batch_stats/bn_1/mean_shift",
            "activation_input/act_2/p50"} <= set(train["scalars"])
    assert "mlp_kbn/bn_1/gamma/histogram" in train["histograms"]
    assert "keras" in train["graph_keras_model"]
    assert {"epoch_accuracy", "evaluation_loss_vs_iterations"} <= set(
        tensorflow_run["validation"]["scalars"])
    assert set(tensorflow_run[""]) == {"hparams"}


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="the reference run is on TensorFlow")
def test_compare_writes_the_same_tags_and_its_plot_as_on_tensorflow(tmp_path):
    """Guards the PNG that compare logs into its runs (`plots.log_image_to_runs`) too."""
    tensorflow_run = _events_of_a_run("tensorflow", str(tmp_path / "tensorflow"), "compare")
    _assert_same_events(tensorflow_run,
                        _events_of_a_run(OTHER, str(tmp_path / OTHER), "compare"))
    for variant in COMPARED:
        assert tensorflow_run[(f"digits-{variant}", "train")]["images"] == {
            "comparison_plot": [0]}, variant


def test_the_commands_import_keras_only_after_choosing_the_backend():
    """Guards `--backend`: Keras takes its backend when first imported, so importing a
    command must not import it (nor kbn, which imports Keras), e.g. for its events."""
    script = ("import sys\n"
              "import train.compare, train.lr_sweep, train.paper, train.train\n"
              "assert 'keras' not in sys.modules, 'Keras was imported'\n")
    done = run_python("-c", script, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
