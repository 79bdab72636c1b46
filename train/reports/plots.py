"""PNG plots of a comparison or a learning-rate sweep, also logged to TensorBoard as images.

from train.reports import plots
plots.plot_comparison(results, "logs/compare/20250101-120000-digits.png", target_accuracy=0.95)
plots.log_image_to_runs("logs/compare/....png", [result.run_dir for result in results])
"""

import os

from train.run import files
from train.data.variants import VARIANTS


def pyplot():
    """matplotlib's pyplot, drawing to files only; imported when a plot is drawn, so that a
    command's --help or a usage error does not wait for it (~0.8 s)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _style(variant):
    """A variant's line (a name outside the registry: black, solid)."""
    known = VARIANTS.get(variant)
    return {"color": known.color if known else "black", "linestyle": known.style if known else "-"}


def plot_comparison(results, path, target_accuracy):
    """Validation accuracy, training loss, and the last hidden layer's activation input.

    `results` maps each variant trained to its `RunResult`.
    """
    plt = pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    accuracy, loss, shift_plain, shift_bn = axes.ravel()
    for variant, result in results.items():
        epochs = [row["epoch"] for row in result.rows]
        style = dict(**_style(variant), label=variant)
        accuracy.plot(epochs, [row["val_accuracy"] for row in result.rows], **style)
        loss.plot(epochs, [row["loss"] for row in result.rows], **style)
    accuracy.axhline(target_accuracy, color="grey", linewidth=0.8, linestyle=":")
    accuracy.set(title="validation accuracy", xlabel="epoch", ylim=(0, 1))
    loss.set(title="training loss", xlabel="epoch", yscale="log")
    for axis in (accuracy, loss):
        axis.legend()

    by_variant = results
    bn_variant = "kbn" if "kbn" in by_variant else "keras"
    for axis, variant, title in (
        (shift_plain, "none", "without BN"),
        (shift_bn, bn_variant, f"with BN ({bn_variant})"),
    ):
        history = by_variant[variant].shift_history if variant in by_variant else []
        _plot_percentiles(axis, history, _style(variant)["color"])
        layer = history[0]["layer"] if history else "?"
        axis.set(title=f"input to {layer}'s non-linearity, {title}", xlabel="training step")
    low, high = _shared_limits([shift_plain, shift_bn])
    shift_plain.set_ylim(low, high)
    shift_bn.set_ylim(low, high)
    figure.tight_layout()
    _save(figure, path)


def plot_sweep(results_by_lr, variants, path, target_accuracy):
    """Best validation accuracy and epochs to target against the learning rate.

    `results_by_lr` maps each rate to {variant: RunResult}.
    """
    plt = pyplot()
    figure, (best, speed) = plt.subplots(1, 2, figsize=(12, 4.5))
    rates = list(results_by_lr)
    epochs = max(
        result.summary["hyperparameters"]["epochs"] for result in results_by_lr[rates[0]].values()
    )
    for variant in variants:
        summaries = [results_by_lr[lr][variant].summary for lr in rates]
        style = dict(**_style(variant), marker="o")
        best.plot(rates, [s["best_val_accuracy"] or 0.0 for s in summaries], label=variant, **style)
        # "never" is drawn above the last epoch so a failure is visible, not missing.
        speed.plot(
            rates, [s["epochs_to_target"] or epochs + 5 for s in summaries], label=variant, **style
        )
    best.axhline(target_accuracy, color="grey", linewidth=0.8, linestyle=":")
    best.set(title="best validation accuracy", xlabel="learning rate", xscale="log", ylim=(0, 1))
    speed.axhline(epochs, color="grey", linewidth=0.8, linestyle=":")
    speed.set(
        title=f"epochs to {target_accuracy:g} (above the line: never)",
        xlabel="learning rate",
        xscale="log",
    )
    for axis in (best, speed):
        axis.legend()
    figure.tight_layout()
    _save(figure, path)


def _save(figure, path):
    """Writes the PNG atomically (train/run/files.py) and frees the figure."""
    with files.replacing(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=90)
    pyplot().close(figure)


def log_image_to_runs(path, run_dirs, tag="comparison_plot"):
    """Adds the PNG at `path` as an image to every run's `train/` events."""
    # Imported here: kbn imports Keras, which waits for --backend (train/options/backend.py).
    from kbn._event_writer import EventWriter

    with open(path, "rb") as f:
        png = f.read()
    for run_dir in run_dirs:
        with EventWriter(os.path.join(run_dir, "train")) as writer:
            writer.image(tag, png, step=0)


def _plot_percentiles(axis, history, color):
    steps = [record["step"] for record in history]
    for key, width in (("p15", 0.8), ("p50", 1.6), ("p85", 0.8)):
        axis.plot(
            steps, [record[key] for record in history], color=color, linewidth=width, label=key
        )
    if history:
        axis.legend(title="percentile", loc="upper right")


def _shared_limits(axes):
    limits = [axis.get_ylim() for axis in axes if axis.lines]
    if not limits:
        return 0.0, 1.0
    return min(low for low, _ in limits), max(high for _, high in limits)
