"""The pictures of docs/learn.ipynb: one function a figure, each returning a matplotlib Figure.

    from train.lesson import figures
    figures.show(figures.normalization(step, placed))   # in a notebook: a PNG output

Figures are built without pyplot, so nothing is drawn twice and the Agg
backend that train/reports/plots.py selects does not matter; `show` turns one
into PNG bytes that Jupyter displays and stores.
"""

import io

import numpy as np
from matplotlib.figure import Figure

# Small PNGs that still read on a repository page: 8×3.2 in at 80 dpi is 640×256 px.
DPI = 80
PLACED_COLORS = {0: "tab:red", 1: "tab:green"}
MOMENTUM_COLORS = ("tab:blue", "tab:orange", "tab:purple")


def show(figure):
    """The figure as an IPython PNG image (what a notebook cell displays and stores)."""
    from IPython.display import Image

    return Image(data=png(figure), format="png")


def png(figure):
    """The figure's PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _students(axis, values, placed, height=0.0):
    for i, (value, target) in enumerate(zip(values, placed), start=1):
        axis.plot(value, height, "o", color=PLACED_COLORS[int(target)], markersize=9)
        axis.annotate(f"{i}", (value, height), textcoords="offset points", xytext=(0, 8),
                      ha="center")


def normalization(step, placed):
    """z (BN's input, before the activation) and x̂ on number lines, with μ_B ± σ_B and 0 ± 1."""
    figure = Figure(figsize=(8, 3.2), layout="constrained")
    raw, normalized = figure.subplots(2, 1)
    sigma = np.sqrt(step.variance)
    raw.axvspan(step.mean - sigma, step.mean + sigma, color="grey", alpha=0.2)
    raw.axvline(step.mean, color="grey", linestyle=":")
    _students(raw, step.x, placed)
    raw.set_title(f"z_i: μ_B = {step.mean:.4f}, σ_B = {sigma:.4f} (band: μ_B ± σ_B)")
    normalized.axvspan(-1, 1, color="grey", alpha=0.2)
    normalized.axvline(0, color="grey", linestyle=":")
    _students(normalized, step.x_hat, placed)
    normalized.set_title("x̂_i = (z_i − μ_B) / sqrt(σ²_B + ε): mean 0, variance ≈ 1 (band: ±1)")
    low = min(np.min(step.x), np.min(step.x_hat), -1.2) - 0.3
    high = max(np.max(step.x), np.max(step.x_hat), 1.2) + 0.3
    for axis in (raw, normalized):
        axis.set(xlim=(low, high), ylim=(-0.5, 1.0), yticks=[])
    normalized.set_xlabel("value (the same scale in both rows; green: placed, red: not)")
    return figure


def sigmoid_inputs(steps, placed, activation):
    """Where the activation's inputs land, BN before vs after, and what the next layer reads.

    Args:
        steps: {"before": BatchNormStep, "after": BatchNormStep} (train.explain.walk_through).
        placed: The targets, for the colours.
        activation: The `algorithm1.Activation` both steps used.
    """
    before, after = steps["before"], steps["after"]
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    curve, outputs = figure.subplots(1, 2, width_ratios=(3, 2))
    span = max(3.0, float(np.max(np.abs(np.concatenate([before.y, after.z])))) + 0.5)
    v = np.linspace(-span, span, 200)
    curve.plot(v, activation(v), color="black", linewidth=1)
    colors = [PLACED_COLORS[int(t)] for t in placed]
    # Labels above-left of the circles, below-right of the squares: the two can nearly meet.
    for values, marker, label, offset in ((before.y, "o", "BN before: g sees y = BN(z)", (-12, 4)),
                                          (after.z, "s", "BN after: g sees z itself", (6, -12))):
        curve.scatter(values, activation(values), c=colors, marker=marker, s=60,
                      edgecolors="black", zorder=3)
        for i, value in enumerate(values, start=1):
            curve.annotate(f"{i}", (value, activation(value)), textcoords="offset points",
                           xytext=offset)
        # The legend shows the marker only; the colours are placed (green) or not (red).
        curve.plot([], [], marker, color="white", markeredgecolor="black", label=label)
    curve.legend(loc="upper left", fontsize="small")
    curve.set(title=f"the {activation.name}'s inputs", xlabel="input to g", ylabel="g(input)")
    rows = (("BN before: g(BN(z))", before.output), ("BN after: BN(g(z))", after.output))
    for height, (_, values) in enumerate(rows):
        _students(outputs, values, placed, height=height)
    outputs.set(title="what the next layer reads", yticks=[0, 1],
                yticklabels=[label for label, _ in rows], ylim=(-0.6, 1.6))
    return figure


def gamma_beta(history):
    """γ, β and the tiny loss over SGD steps (`learning.GammaBetaHistory`)."""
    figure = Figure(figsize=(9, 3.2), layout="constrained")
    parameters, loss = figure.subplots(1, 2)
    steps = np.arange(len(history.gamma))
    parameters.plot(steps, history.gamma, marker="o", markersize=3, label="γ (starts at 1)")
    parameters.plot(steps, history.beta, marker="o", markersize=3, label="β (starts at 0)")
    parameters.set(title="γ and β, learned by SGD", xlabel="SGD step")
    parameters.legend()
    loss.plot(steps, history.loss, marker="o", markersize=3, color="black")
    loss.set(title="the tiny loss L = (1/2m) Σ (p_i − placed_i)²", xlabel="SGD step")
    return figure


def moving_statistics(histories, population_mean, population_variance, batch_size):
    """Moving mean and variance over steps for several momenta, with each batch's statistics.

    Args:
        histories: {momentum: learning.MovingStatisticsHistory}, all over the same batches.
        population_mean, population_variance: Of the whole data set, drawn dashed.
        batch_size: m; the biased σ²_B average (m − 1)/m of the variance, drawn dotted.
    """
    figure = Figure(figsize=(10, 4), layout="constrained")
    mean_axis, variance_axis = figure.subplots(1, 2)
    first = next(iter(histories.values()))
    steps = np.arange(1, len(first.batch_mean) + 1)
    for axis, batch, population, moving, title in (
        (mean_axis, first.batch_mean, population_mean, "moving_mean",
         "moving_mean (starts at 0) and each batch's μ_B"),
        (variance_axis, first.batch_variance, population_variance, "moving_variance",
         "moving_variance (starts at 1) and each batch's σ²_B"),
    ):
        axis.plot(steps, batch, ".", color="grey", markersize=3, label="this batch's")
        axis.axhline(population, color="black", linestyle="--", linewidth=1,
                     label="whole data set")
        for color, (momentum, history) in zip(MOMENTUM_COLORS, histories.items()):
            axis.plot(steps, getattr(history, moving), color=color, linewidth=1.8,
                      label=f"momentum {momentum:g}")
        axis.set(title=title, xlabel="training step")
    m = batch_size
    variance_axis.axhline((m - 1) / m * population_variance, color="black", linestyle=":",
                          linewidth=1, label=f"(m − 1)/m of it, m = {m}")
    variance_axis.set_yscale("log")
    figure.legend(*variance_axis.get_legend_handles_labels(), loc="outside lower center",
                  ncols=5, fontsize="small")
    return figure


def inference_gap(results, steps):
    """Validation accuracy in inference mode: moving averages vs `kbn.recalibrate`d, over steps.

    Args:
        results: {momentum: {steps: (moving accuracy, recalibrated accuracy, ...)}}
            (`train.recalibration.one_run` per momentum).
        steps: The step counts measured.
    """
    figure = Figure(figsize=(7, 3.6), layout="constrained")
    axis = figure.subplots()
    for index, (color, (momentum, by_steps)) in enumerate(zip(MOMENTUM_COLORS, results.items())):
        axis.plot(steps, [by_steps[s][0] for s in steps], marker="o", color=color,
                  linestyle=":", label=f"momentum {momentum:g}: moving averages")
        # Narrower line for each later momentum: recalibrated curves can coincide (the
        # momentum changes only the moving averages, not the training).
        axis.plot(steps, [by_steps[s][1] for s in steps], marker="s", color=color,
                  linewidth=4.0 / (index + 1), label=f"momentum {momentum:g}: recalibrated")
    axis.set(title="validation accuracy in inference mode", xlabel="training steps",
             xscale="log", ylim=(0, 1))
    axis.legend(fontsize="small")
    return figure
