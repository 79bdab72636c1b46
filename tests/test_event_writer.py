"""kbn/_event_writer.py: what it writes, read back with TensorBoard's own reader, and that it
never imports TensorFlow."""

import glob
import importlib.util
import io
import os

import keras
import matplotlib.image
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.util.tensor_util import make_ndarray

from kbn._event_writer import EventWriter, histogram_buckets, png_size
from tensorboard_events import scalar_values, tags_by_plugin
from tiny_runs import run_python

pytestmark = pytest.mark.all_backends



def _png(width, height):
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, np.zeros((height, width, 4)), format="png")
    return buffer.getvalue()


PNG = _png(3, 2)


def _tensors(folder, tag):
    events = EventAccumulator(folder, size_guidance={"tensors": 0})
    events.Reload()
    return events.Tensors(tag), events.SummaryMetadata(tag)


def test_every_kind_reads_back_with_tensorboards_reader(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 3))
    with EventWriter(str(tmp_path)) as writer:
        for step in (0, 5):
            writer.scalar("loss", np.float64(0.5 + step), step)
            writer.histogram("kernel/histogram", values * (step + 1), step)
        writer.image("plot", PNG, step=0)
        writer.hparams({"lr": 0.1, "variant": "kbn", "bn_sync": False, "epochs": 2}, "run-1")
        writer.keras_model('{"class_name": "Sequential"}')
    assert tags_by_plugin(str(tmp_path)) == {
        "scalars": {"loss"}, "histograms": {"kernel/histogram"}, "images": {"plot"},
        "hparams": {"_hparams_/session_start_info"}, "graph_keras_model": {"keras"}}
    assert scalar_values(str(tmp_path), "loss") == [(0, 0.5), (5, 5.5)]

    histograms, _ = _tensors(str(tmp_path), "kernel/histogram")
    assert [event.step for event in histograms] == [0, 5]
    np.testing.assert_array_equal(make_ndarray(histograms[1].tensor_proto),
                                  histogram_buckets(values * 6))

    (image,), _ = _tensors(str(tmp_path), "plot")
    assert list(make_ndarray(image.tensor_proto)) == [b"3", b"2", PNG]  # width, height, PNG

    (session,), metadata = _tensors(str(tmp_path), "_hparams_/session_start_info")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        metadata.plugin_data.content).session_start_info
    assert start.group_name == "run-1" and session.step == 0
    assert start.hparams["lr"].number_value == 0.1 and start.hparams["epochs"].number_value == 2
    assert start.hparams["variant"].string_value == "kbn"
    assert start.hparams["bn_sync"].HasField("bool_value")


@pytest.mark.parametrize("values", [
    np.random.default_rng(1).normal(size=1000),
    np.random.default_rng(2).uniform(-1, 3, size=(7, 5)).astype("float32"),
    np.arange(30.0),  # values on the bucket edges
    np.full(9, 0.25),  # one value: every edge is it, the last bucket counts all
    np.array([]),  # nothing: all zeros
], ids=["normal", "float32", "edges", "constant", "empty"])
def test_buckets_are_tensorboards_own(values):
    """Element by element against tensorboard's NumPy histogram (`histogram_pb`), the
    reference tf.summary.histogram's op follows: same edges, same counts."""
    expected = make_ndarray(histogram_pb("x", values).value[0].tensor)
    np.testing.assert_array_equal(histogram_buckets(values), expected)


def test_buckets_count_the_finite_values_only():
    values = np.array([0.0, 1.0, np.nan, np.inf, 2.0])
    np.testing.assert_array_equal(histogram_buckets(values, 4), histogram_buckets([0, 1, 2], 4))
    assert histogram_buckets(values, 4)[:, 2].sum() == 3


def test_two_writers_on_one_folder_keep_their_own_files(tmp_path):
    first, second = EventWriter(str(tmp_path)), EventWriter(str(tmp_path))
    first.scalar("a", 1.0, 1)
    second.scalar("b", 2.0, 1)
    first.close()
    second.close()
    assert first.path != second.path
    assert sorted(glob.glob(str(tmp_path / "*"))) == sorted([first.path, second.path])
    assert scalar_values(str(tmp_path), "a") == [(1, 1.0)]
    assert scalar_values(str(tmp_path), "b") == [(1, 2.0)]


def test_png_size_reads_the_header_and_refuses_other_bytes():
    assert png_size(PNG) == (3, 2)
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(b"GIF89a" + bytes(30))


def test_without_tensorboard_construction_says_what_to_install(monkeypatch, tmp_path):
    find_spec = importlib.util.find_spec

    def without_tensorboard(name, *args):
        return None if name == "tensorboard" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_tensorboard)
    with pytest.raises(ImportError, match=r"tensorboard package.*pip install tensorboard"):
        EventWriter(str(tmp_path))
    assert not os.listdir(tmp_path)


def test_writing_every_kind_never_imports_tensorflow(tmp_path):
    """In a fresh process (here TensorFlow may be loaded already), on JAX or PyTorch:
    importing kbn on TensorFlow's own backend loads TensorFlow, rightly."""
    backend = "jax" if keras.backend.backend() == "tensorflow" else keras.backend.backend()
    script = (
        "import sys\n"
        "from kbn._event_writer import EventWriter\n"
        f"with EventWriter({str(tmp_path)!r}) as writer:\n"
        "    writer.scalar('s', 1.0, 0)\n"
        "    writer.histogram('h', [1.0, 2.0], 0)\n"
        f"    writer.image('i', {PNG!r}, 0)\n"
        "    writer.hparams({'lr': 0.1}, 'run')\n"
        "    writer.keras_model('{}')\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
    )
    done = run_python("-c", script, env={"KERAS_BACKEND": backend}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(glob.glob(str(tmp_path / "events.out.tfevents.*"))) == 1
