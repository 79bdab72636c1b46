"""Reads TensorBoard event files back with TensorBoard's own reader (a test helper)."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray


def tags_by_plugin(folder):
    """{plugin name: set of tags} of the event files directly in `folder`."""
    events = EventAccumulator(folder, size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    found = {}
    for tag in events.Tags()["tensors"]:
        plugin = events.SummaryMetadata(tag).plugin_data.plugin_name
        found.setdefault(plugin, set()).add(tag)
    return found


def scalar_values(folder, tag):
    """[(step, value)] of a scalar tag (as tf.summary.scalar or kbn's EventWriter write it)."""
    events = EventAccumulator(folder, size_guidance={"tensors": 0})
    events.Reload()
    return [(event.step, float(make_ndarray(event.tensor_proto))) for event in events.Tensors(tag)]


def steps_by_tag(folder):
    """{plugin name: {tag: [steps]}} of the event files directly in `folder`."""
    events = EventAccumulator(folder, size_guidance={"tensors": 0})
    events.Reload()
    found = {}
    for tag in events.Tags()["tensors"]:
        plugin = events.SummaryMetadata(tag).plugin_data.plugin_name
        found.setdefault(plugin, {})[tag] = [event.step for event in events.Tensors(tag)]
    return found
