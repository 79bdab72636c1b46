"""TensorBoard event files written without TensorFlow, on every Keras backend.

    from kbn._event_writer import EventWriter
    with EventWriter("logs/run/train") as writer:     # one new event file in that folder
        writer.scalar("epoch_loss", 0.31, step=1)
        writer.histogram("dense/kernel/histogram", kernel, step=1)
        writer.image("comparison_plot", png_bytes, step=0)
        writer.hparams({"lr": 0.1, "variant": "kbn"}, trial_id="run-1")

Why not `tf.summary`: it needs TensorFlow in the process whatever the Keras
backend, and next to PyTorch that is fragile: TensorFlow imported before
Keras's PyTorch backend segfaults the process (measured: in triton, as Keras
imports torch._dynamo), and tf.summary ops in a PyTorch process have been seen
to segfault too (elsewhere; not on this project's CPU machine). Why not
tensorboard's own `EventFileWriter`: it opens its file through
`tensorboard.compat.tf`, which imports TensorFlow wherever it is installed.
So the records are framed by tensorboard's `RecordWriter` (TFRecord: length,
masked CRC-32C of it, data, masked CRC-32C of that) into a plain Python file,
and the summaries are the protocol buffers tf.summary writes, from the
`tensorboard` package: it alone is needed (kbn[train]), not TensorFlow.

Each writer creates its own file, `events.out.tfevents.<time>.<host>.<pid>.<n>`
(`n` counts the writers of this process), created exclusively, so writers in
one folder never share or overwrite a file. TensorBoard reads every event file
of a folder as one run.
"""

import importlib.util
import itertools
import os
import socket
import struct
import time

import numpy as np

# Histogram buckets: tf.summary.histogram's default.
DEFAULT_BUCKETS = 30
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The number in the file name of this process's next writer.
_WRITER_NUMBERS = itertools.count()


def require_tensorboard(user):
    """Raises ImportError naming the package to install where `tensorboard` is missing.

    Args:
        user: What needs it, for the message (e.g. a callback's class name).
    """
    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError(
            f"{user} writes TensorBoard event files with the tensorboard package, which is "
            "not installed: pip install tensorboard (kbn[train] installs it; TensorFlow is "
            "not needed)."
        )


class EventWriter:
    """Writes scalars, histograms, images and hyperparameters to one new event file.

    What each method writes is what the tf.summary function of the same name
    writes (tag, plugin, tensor), so TensorBoard's dashboards show it alike.
    Each record is flushed to the file as it comes, so a TensorBoard watching
    the run sees it at once and a killed process loses none (TensorBoard's
    reader skips a last record cut short). `close` closes the file (also on
    leaving a `with` block).

    Args:
        log_dir: The folder of the event file (a TensorBoard run); created
            if missing.

    Raises:
        ImportError: The `tensorboard` package is not installed.
    """

    def __init__(self, log_dir):
        require_tensorboard(type(self).__name__)
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = log_dir
        self.path, file = _new_event_file(log_dir)
        self._records = RecordWriter(file)
        self._add(event_pb2.Event(file_version="brain.Event:2",
                                  source_metadata=event_pb2.SourceMetadata(writer="kbn")))

    def scalar(self, tag, value, step):
        """A float32 scalar (the Scalars dashboard)."""
        from tensorboard.compat.proto import summary_pb2, types_pb2
        from tensorboard.plugins.scalar import metadata

        tensor = _tensor(types_pb2.DT_FLOAT, (), float_val=[float(value)])
        self._summary(tag, metadata.create_summary_metadata(None, None), tensor, step,
                      summary_pb2.DATA_CLASS_SCALAR)

    def histogram(self, tag, values, step, buckets=DEFAULT_BUCKETS):
        """The histogram of `values` (array-like, any shape), bucketed by `histogram_buckets`
        (the Histograms and Distributions dashboards)."""
        from tensorboard.compat.proto import summary_pb2, types_pb2
        from tensorboard.plugins.histogram import metadata

        rows = histogram_buckets(values, buckets)
        tensor = _tensor(types_pb2.DT_DOUBLE, rows.shape,
                         tensor_content=rows.astype("<f8").tobytes())
        self._summary(tag, metadata.create_summary_metadata(None, None), tensor, step,
                      summary_pb2.DATA_CLASS_TENSOR)

    def image(self, tag, png_bytes, step):
        """One PNG image, stored as given (the Images dashboard).

        The tensor is tf.summary.image's: strings [width, height, PNG], the
        size read from the PNG's header.

        Raises:
            ValueError: `png_bytes` is not a PNG.
        """
        from tensorboard.compat.proto import summary_pb2, types_pb2
        from tensorboard.plugins.image import metadata

        width, height = png_size(png_bytes)
        tensor = _tensor(types_pb2.DT_STRING, (3,),
                         string_val=[str(width).encode(), str(height).encode(), bytes(png_bytes)])
        self._summary(tag, metadata.create_summary_metadata(None, None), tensor, step,
                      summary_pb2.DATA_CLASS_BLOB_SEQUENCE)

    def hparams(self, values, trial_id):
        """The hyperparameters of one session (trial), at step 0, as
        `tensorboard.plugins.hparams.api.hparams` writes them: the HParams
        dashboard lists each run folder holding one as a session with its values.

        Args:
            values: {name: bool, int, float or str}.
            trial_id: The session's name (e.g. the run folder's).
        """
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb

        (value,) = hparams_pb(values, trial_id=trial_id).value
        self._summary(value.tag, value.metadata, value.tensor, 0, summary_pb2.DATA_CLASS_TENSOR)

    def keras_model(self, config_json, step=0, tag="keras"):
        """A Keras model's JSON config (`model.to_json()`), as keras.callbacks.TensorBoard
        writes it for the Graphs dashboard's conceptual graph."""
        from tensorboard.compat.proto import summary_pb2, types_pb2
        from tensorboard.plugins.graph import metadata

        model_metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name=metadata.PLUGIN_NAME_KERAS_MODEL, content=b"1"))  # its version
        tensor = _tensor(types_pb2.DT_STRING, (1,), string_val=[config_json.encode()])
        self._summary(tag, model_metadata, tensor, step, summary_pb2.DATA_CLASS_BLOB_SEQUENCE)

    def flush(self):
        """Nothing is held back (see above); here for writers that buffer."""
        self._records.flush()

    def close(self):
        """Closes the file; closing again does nothing."""
        if not self._records.closed:
            self._records.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _summary(self, tag, summary_metadata, tensor, step, data_class):
        from tensorboard.compat.proto import event_pb2, summary_pb2

        # tf.summary's files carry the data class; TensorBoard derives it when missing.
        summary_metadata.data_class = data_class
        value = summary_pb2.Summary.Value(tag=tag, metadata=summary_metadata, tensor=tensor)
        self._add(event_pb2.Event(step=int(step), summary=summary_pb2.Summary(value=[value])))

    def _add(self, event):
        event.wall_time = time.time()
        self._records.write(event.SerializeToString())
        self._records.flush()


def histogram_buckets(values, bucket_count=DEFAULT_BUCKETS):
    """The rows (left edge, right edge, count) of a histogram, as tf.summary.histogram buckets.

    `bucket_count` buckets of equal width from the smallest value to the
    largest; value v goes to bucket floor((v − min) / width), the largest into
    the last. All values equal: every edge is that value and the last bucket
    holds them all. No values: all zeros. Only the finite values are counted
    (tf.summary's buckets turn to NaN edges and zero counts with one NaN).

    Args:
        values: Array-like of any shape, castable to float64.
        bucket_count: The number of rows (>= 1).

    Returns:
        A float64 array of shape [bucket_count, 3].
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros((bucket_count, 3))
    low, high = values.min(), values.max()
    counts = np.zeros(bucket_count)
    if low == high:
        counts[-1] = values.size
        return np.stack([np.full(bucket_count, low), np.full(bucket_count, high), counts], axis=1)
    width = (high - low) / bucket_count
    indices = np.minimum(np.floor((values - low) / width).astype(np.int64), bucket_count - 1)
    counts = np.bincount(indices, minlength=bucket_count).astype(np.float64)
    edges = np.linspace(low, high, bucket_count + 1)
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


def png_size(png_bytes):
    """(width, height) from a PNG's header (its first chunk, IHDR, holds them).

    Raises:
        ValueError: Not a PNG.
    """
    header = bytes(png_bytes[:24])
    if len(header) < 24 or header[:8] != _PNG_SIGNATURE or header[12:16] != b"IHDR":
        raise ValueError("not a PNG image (no PNG signature and IHDR header)")
    return struct.unpack(">II", header[16:24])


def _tensor(dtype, shape, **values):
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2

    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=dims), **values)


def _new_event_file(log_dir):
    """(path, binary file) of an event file no other writer has, created exclusively."""
    while True:
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
                f".{os.getpid()}.{next(_WRITER_NUMBERS)}")
        path = os.path.join(log_dir, name)
        try:
            return path, open(path, "xb")
        except FileExistsError:
            continue  # another process with this pid, e.g. a container's: take the next number
