"""Why the Keras and kbn runs of `compare` disagree, when the runs' records can tell.

    from train.reports import disagreement
    for line in disagreement.reasons(keras_summary, kbn_summary):
        print(line)

The runs record what `kbn.callbacks.BatchStatsMonitor` saw (`summary.json`,
`batch_stats_events`): the first step at which a Keras layer's moving
statistics became NaN or inf, and the first step at which kbn's NaN safety
skipped updates. Keras's layer folds a non-finite batch into its moving
averages (NaN or inf from then on); kbn's keeps the last finite values.
That is the one intended difference between the layers, and the usual cause
of a DISAGREE.
"""


def reasons(keras_summary, kbn_summary):
    """Lines explaining the disagreement (at least one)."""
    keras_events = _by_layer(keras_summary, "nonfinite")
    kbn_events = _by_layer(kbn_summary, "skipped")
    lines = []
    for layer, event in keras_events.items():
        values = event.get("nonfinite") or {}
        became = " and ".join(f"{key} became {value}" for key, value in values.items())
        line = (f"why: in the keras run {layer}'s {became or 'moving statistics became NaN or inf'}"
                f" in epoch {event['epoch']} (step {event['step']})")
        skipped = kbn_events.get(layer)
        if skipped:
            line += (f", while kbn's NaN safety skipped those updates (first in epoch"
                     f" {skipped['epoch']}, step {skipped['step']}) and kept finite statistics")
        lines.append(line + "; from then on the two runs normalize differently at inference")
    for layer, event in kbn_events.items():
        if layer not in keras_events:
            lines.append(f"why: kbn's NaN safety skipped updates of {layer} from epoch"
                         f" {event['epoch']} (step {event['step']}) on")
    if not lines:
        lines.append("why: no batch-norm layer hit NaN safety or non-finite statistics in either"
                     " run (or the monitor was off); the difference is elsewhere")
    return lines


def _by_layer(summary, kind):
    events = summary.get("batch_stats_events") or []
    return {event["layer"]: event for event in events if event["kind"] == kind}
