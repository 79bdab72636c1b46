"""The paper's (and the lecture's) claims as data: one `Experiment` each, run by `train.paper`.

    from train.claims.experiments import EXPERIMENTS
    for experiment in EXPERIMENTS: print(experiment.key, experiment.claim)

An experiment names its rows (a BN variant plus command-line flags of
`train.compare`, on top of the experiment's own), the number it reads from each
finished run (a `summary.json` key, or the activation-input history), and the
comparisons that make its claim: "row A beats row B". The runner trains every
row once per seed (identical rows of different experiments share their runs)
and gives the verdict:

    reproduced   every comparison holds for every seed
    partly       at least half of the (comparison, seed) pairs hold
    not          fewer than half hold

Epochs are (full, quick) pairs; `--quick` also uses one seed.
"""

import dataclasses
import math
from typing import Callable, Optional


@dataclasses.dataclass(frozen=True)
class Metric:
    """The number read from one finished run.

    Attributes:
        name: As printed in the report.
        read: `RunResult` → float, or None when the run never got there
            (never reached the target, stopped on NaN).
        higher_is_better: Direction of every comparison on this metric.
        missing: How a None reads in the report ("never", "NaN").
        digits: Decimals of one run's number (a mean over seeds gets one more when 0).
    """

    name: str
    read: Callable
    higher_is_better: bool
    missing: str = "-"
    digits: int = 3


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of an experiment's table: a BN variant trained with extra flags."""

    label: str
    variant: str
    flags: tuple = ()
    epochs: Optional[tuple] = None  # (full, quick), quick 0: full run only; None: the experiment's
    metric: Optional[Metric] = None  # None: the experiment's


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A claim, the runs that test it, and how to read them."""

    key: str
    title: str
    claim: str
    source: str
    rows: tuple
    metric: Metric
    comparisons: tuple  # (better label, worse label) pairs
    epochs: tuple  # (full, quick)
    flags: tuple = ()
    note: str = ""
    monitor: bool = True  # log the last hidden layer's input (needed by E3)
    curves: bool = False  # also `make run`'s figure of the first seed (rows "none" and "kbn")
    requires: Optional[Callable] = None  # () → None, or why the experiment cannot run


def summary_value(key):
    """A metric reader for one `summary.json` entry."""

    def read(result):
        value = result.summary.get(key)
        return None if value is None else float(value)

    return read


def median_range(result):
    """max − min of the median (p50) of the last hidden layer's input over training.

    Read from `ActivationInputMonitor`'s history (every --shift-every steps, on
    the fixed validation probe), the paper's Figure 1(b, c).
    """
    medians = [record["p50"] for record in result.shift_history]
    return max(medians) - min(medians) if medians else None


def end_gap(train_key, val_key, sign):
    """A metric reader for the last epoch's gap between training and validation.

    `sign` 1: validation minus training (loss), −1: training minus validation
    (accuracy), so that a network that fits its training data better than it
    generalizes has a positive gap. The training numbers are Keras's: the mean
    over the epoch's batches, in training mode (dropout on, BN on batch statistics).
    """

    def read(result):
        if not result.rows:
            return None
        last = result.rows[-1]
        gap = sign * (last[val_key] - last[train_key])
        return gap if math.isfinite(gap) else None

    return read


def _recalibrate_missing():
    import kbn
    from train.options import cli

    if not hasattr(kbn, "recalibrate"):
        return "kbn.recalibrate (issue 9) is not in this version of kbn"
    parser = cli.make_parser("", experiment="paper", bn_flag=False)
    if "--recalibrate" not in parser._option_string_actions:
        return "the pipeline's --recalibrate flag (issue 9) is not in this version of train/"
    return None


EPOCHS_TO_TARGET = Metric(
    "epochs to 0.95 val. accuracy", summary_value("epochs_to_target"), False, "never", 0
)
BEST_ACCURACY = Metric("best val. accuracy", summary_value("best_val_accuracy"), True, "NaN")
FINAL_ACCURACY = Metric("final val. accuracy", summary_value("final_val_accuracy"), True, "NaN")
LOSS_GAP = Metric("validation − training loss, last epoch", end_gap("loss", "val_loss", 1),
                  False)
ACCURACY_GAP = Metric("training − validation accuracy, last epoch",
                      end_gap("accuracy", "val_accuracy", -1), False)
MEDIAN_RANGE = Metric("range of the median of the last sigmoid's input", median_range, False)

# E8's settings: (row label, variant, flags on top of the experiment's, (full, quick) epochs).
_REGULARIZATION_SETTINGS = (
    ("no BN", "none", ("--batch-size", "30"), None),
    ("BN", "kbn", ("--batch-size", "30"), None),
    ("BN, batch 10", "kbn", ("--batch-size", "10"), (20, 0)),
    ("dropout 0.3, no BN", "none", ("--batch-size", "30", "--dropout", "0.3"), (20, 0)),
)
# E9's initial-weight scales: {scale: (flags, (full, quick) epochs or None: the experiment's)}.
# ×1 is E1's runs (30 epochs, shared); in --quick only ×10 is run besides.
_INIT_SCALES = {
    "0.1": (("--init-scale", "0.1"), (20, 0)),
    "1": ((), (30, 15)),
    "3": (("--init-scale", "3"), (20, 0)),
    "10": (("--init-scale", "10"), None),
}
# E10's optimizers: (label, flags, (full, quick) epochs or None), each at its usual learning
# rate and 10× it. Plain SGD's rows are E1's and E2's runs (30 epochs, shared).
_OPTIMIZERS = (
    ("SGD lr 1", (), (30, 15)),
    ("SGD lr 10", ("--lr", "10"), (30, 15)),
    ("SGD momentum 0.9 lr 0.1", ("--momentum", "0.9", "--lr", "0.1"), (20, 0)),
    ("SGD momentum 0.9 lr 1", ("--momentum", "0.9", "--lr", "1"), (20, 0)),
    ("RMSprop lr 0.001", ("--optimizer", "rmsprop", "--lr", "0.001"), (20, 0)),
    ("RMSprop lr 0.01", ("--optimizer", "rmsprop", "--lr", "0.01"), (20, 0)),
    ("Adam lr 0.001", ("--optimizer", "adam", "--lr", "0.001"), None),
    ("Adam lr 0.01", ("--optimizer", "adam", "--lr", "0.01"), (20, 0)),
)

EXPERIMENTS = (
    Experiment(
        key="E1",
        title="Faster convergence",
        claim="With BN the network reaches a given accuracy in far fewer steps (Fig. 1a: "
        "the same accuracy in about 1/14 of the steps on MNIST).",
        source="Ioffe & Szegedy 2015, §4.1; the lecture: 'networks taking a lot of time to "
        "converge'",
        rows=(Row("no BN", "none"), Row("BN (kbn)", "kbn")),
        metric=EPOCHS_TO_TARGET,
        comparisons=(("BN (kbn)", "no BN"),),
        epochs=(30, 15),
        curves=True,
        note="The `make run` set-up (digits, 3×100 sigmoid, SGD lr 1, batch 60), trained for "
        "the table's epochs (`make run` trains 60: there the plain network reaches 0.95 at "
        "epoch 50).",
    ),
    Experiment(
        key="E2",
        title="Higher learning rates",
        claim="BN makes training robust to the scale of the parameters, so much higher "
        "learning rates train without diverging (and so do lower ones, faster).",
        source="Ioffe & Szegedy 2015, §3.3",
        rows=(
            Row("no BN, lr 0.05", "none", ("--lr", "0.05")),
            Row("BN, lr 0.05", "kbn", ("--lr", "0.05")),
            Row("no BN, lr 10", "none", ("--lr", "10")),
            Row("BN, lr 10", "kbn", ("--lr", "10")),
        ),
        metric=BEST_ACCURACY,
        comparisons=(("BN, lr 0.05", "no BN, lr 0.05"), ("BN, lr 10", "no BN, lr 10")),
        epochs=(30, 15),
        note="lr 1 is E1. `python -m train.lr_sweep` sweeps more rates.",
    ),
    Experiment(
        key="E3",
        title="Steadier layer-input distributions",
        claim="Without BN the distribution of a layer's inputs keeps moving during training "
        "(internal covariate shift); with BN it stays put (Fig. 1b, c).",
        source="Ioffe & Szegedy 2015, §2 and §4.1; the lecture: 'change in data distribution "
        "across layers'",
        rows=(Row("no BN", "none"), Row("BN (kbn)", "kbn")),
        metric=MEDIAN_RANGE,
        comparisons=(("BN (kbn)", "no BN"),),
        epochs=(30, 15),
        curves=True,
        note="The same runs as E1; the median is read every 20 steps on the validation digits "
        "(359 with the default split), in training mode, by kbn.callbacks.ActivationInputMonitor.",
    ),
    Experiment(
        key="E4",
        title="Inference statistics: moving averages vs recalibrated",
        claim="At inference BN uses population statistics; computed over the training data "
        "with the trained network (Algorithm 2) they describe the network better than "
        "moving averages that lag it early in training.",
        source="Ioffe & Szegedy 2015, §3.1 and Algorithm 2; the lecture: 'moving average' for "
        "test/inference",
        rows=(
            Row("moving averages, 2 epochs", "kbn", ("--recalibrate",), (2, 2),
                Metric("val. accuracy", summary_value("val_accuracy_ema"), True, "NaN")),
            Row("recalibrated, 2 epochs", "kbn", ("--recalibrate",), (2, 2),
                Metric("val. accuracy", summary_value("val_accuracy_recalibrated"), True, "NaN")),
            Row("moving averages, 6 epochs", "kbn", ("--recalibrate",), (6, 6),
                Metric("val. accuracy", summary_value("val_accuracy_ema"), True, "NaN")),
            Row("recalibrated, 6 epochs", "kbn", ("--recalibrate",), (6, 6),
                Metric("val. accuracy", summary_value("val_accuracy_recalibrated"), True, "NaN")),
        ),
        metric=Metric("val. accuracy", summary_value("val_accuracy_ema"), True, "NaN"),
        comparisons=(
            ("recalibrated, 2 epochs", "moving averages, 2 epochs"),
            ("recalibrated, 6 epochs", "moving averages, 6 epochs"),
        ),
        epochs=(6, 6),
        note="24 steps an epoch (48 and 144 steps), BN momentum 0.99; recalibration with "
        "kbn.recalibrate over the training data, batch 60.",
        requires=_recalibrate_missing,
    ),
    Experiment(
        key="E5",
        title="Small batches",
        claim="Batch statistics of a few samples are noisy and differ from the moving ones "
        "used at inference, so plain BN degrades at small batches; Batch Renormalization "
        "corrects the difference and trains better there.",
        source="Ioffe 2017, Batch Renormalization, §1 and §4.2",
        rows=(
            Row("batch 4, BN", "kbn", ("--batch-size", "4")),
            Row("batch 4, renorm", "kbn-renorm", ("--batch-size", "4")),
            Row("batch 2, BN", "kbn", ("--batch-size", "2"), (1, 0)),
            Row("batch 2, renorm", "kbn-renorm", ("--batch-size", "2"), (1, 0)),
            Row("batch 60, ghost batches of 3", "kbn-ghost3", (), (15, 4)),
            Row("batch 60, BN", "kbn", (), (15, 4)),
        ),
        metric=FINAL_ACCURACY,
        comparisons=(("batch 4, renorm", "batch 4, BN"), ("batch 2, renorm", "batch 2, BN")),
        epochs=(1, 1),
        flags=(
            "--lr", "0.1", "--validation-split", "0.199",
            "--shift-every", "200", "--batch-log-every", "100",
        ),
        note="One epoch at batch 4 and 2 (360 and 720 steps; batch 2 in the full run only), "
        "lr 0.1 for every row. Renorm clipping r ∈ [1/3, 3], |d| ≤ 5. Validation split 0.199: "
        "1440 training and 357 validation digits, so that every batch is a multiple of 3. "
        "The batch-60 rows (epochs and steps in the table) are for reference, not part of the "
        "verdict: ghost batches normalize over 3 samples (ghost batches must divide every "
        "batch, and 3 is the size that divides this split's) while each step sees 60.",
        monitor=False,
    ),
    Experiment(
        key="E6",
        title="BN before vs after the activation",
        claim="The lecture's two approaches, z → BN → g and z → g → BN; the first is the one "
        "mostly used (and the paper's: Wx + b is 'more likely to have a symmetric, "
        "non-sparse distribution').",
        source="The lecture notes; Ioffe & Szegedy 2015, §3.2",
        rows=(
            Row("before", "kbn"),
            Row("after", "kbn", ("--bn-position", "after")),
        ),
        metric=EPOCHS_TO_TARGET,
        comparisons=(("before", "after"),),
        epochs=(30, 15),
    ),
    Experiment(
        key="E7",
        title="Normalized inputs vs BN",
        claim="Normalizing the inputs speeds up learning; BN extends that to every layer's "
        "input and helps on top of it.",
        source="The lecture: 'normalizing inputs to speed up learning'",
        rows=(
            Row("inputs ÷ 16, no BN", "none"),
            Row("inputs ÷ 16, BN", "kbn"),
            Row("standardized, no BN", "none", ("--input-norm", "standard")),
            Row("standardized, BN", "kbn", ("--input-norm", "standard")),
        ),
        metric=EPOCHS_TO_TARGET,
        comparisons=(
            ("standardized, no BN", "inputs ÷ 16, no BN"),
            ("standardized, BN", "standardized, no BN"),
        ),
        epochs=(30, 15),
    ),
    Experiment(
        key="E8",
        title="Regularization",
        claim="'Batch normalization can act as regularizer'; 'Reduces overfitting by introducing "
        "a slight noise through mini-batch statistics' (each mini-batch is normalized by its "
        "own mean and variance: 'similar to dropout, it adds some noise to each hidden "
        "layer's activations').",
        source="The lecture notes",
        rows=tuple(
            Row(f"{setting}: {short}", variant, flags, epochs, metric)
            for short, metric in (("loss gap", LOSS_GAP), ("accuracy gap", ACCURACY_GAP),
                                  ("best val. acc.", BEST_ACCURACY))
            for setting, variant, flags, epochs in _REGULARIZATION_SETTINGS
        ),
        metric=LOSS_GAP,
        comparisons=(
            ("BN: loss gap", "no BN: loss gap"),
            ("BN: accuracy gap", "no BN: accuracy gap"),
            ("BN: best val. acc.", "no BN: best val. acc."),
            ("BN, batch 10: loss gap", "BN: loss gap"),
        ),
        epochs=(20, 8),
        flags=("--train-samples", "300", "--optimizer", "adam", "--lr", "0.003",
               "--bn-momentum", "0.9"),
        note="The first 300 of the 1438 training digits (about 30 a class), validation on the "
        "usual 359; Adam lr 0.003, batch 30 (10 steps an epoch): the plain network "
        "fits its 300 digits far better than the validation ones. The gaps are the last "
        "epoch's; the training loss and accuracy are Keras's, the mean over that epoch's "
        "batches in training mode (dropout on, BN on batch statistics). BN momentum 0.9, so "
        "that the moving averages used on the validation digits keep up over this short run "
        "(at 0.99 they lag: E4). Batch 10 (30 steps an epoch) gives BN noisier statistics; "
        "dropout 0.3 without BN is the regularizer the lecture compares BN to, for reference "
        "(not in the verdict).",
    ),
    Experiment(
        key="E9",
        title="Weight initialization",
        claim="'Batch normalization can act as regularizer - reduce the impact of weight "
        "initialization' (the lecture's handwritten notes; OCR: 'usight'): with BN, the "
        "scale of the initial weights matters less.",
        source="The lecture notes; Ioffe & Szegedy 2015, §3.3 (BN(aWu) = BN(Wu))",
        rows=tuple(
            Row(f"×{scale}, {name}: {short}", variant, flags, epochs, metric)
            for short, metric in (("epochs", EPOCHS_TO_TARGET), ("best val. acc.", BEST_ACCURACY))
            for scale, (flags, epochs) in _INIT_SCALES.items()
            for name, variant in (("no BN", "none"), ("BN", "kbn"))
        ),
        metric=EPOCHS_TO_TARGET,
        comparisons=tuple(
            (f"×{scale}, BN: {short}", f"×{scale}, no BN: {short}")
            for scale in ("0.1", "3", "10")
            for short in ("epochs", "best val. acc.")
        ),
        epochs=(20, 5),
        note="The `make run` set-up (SGD lr 1, batch 60); every kernel's Glorot uniform "
        "draws (the output layer's too) times 0.1, 1, 3 or 10 (`--init-scale`). ×1 is E1's "
        "runs; the other scales train fewer epochs (the table's), and the verdict compares "
        "BN with no BN at the same scale. BN makes a hidden layer's output independent of "
        "its kernel's scale, but SGD's step on that kernel then shrinks as 1/scale² "
        "relative to it, and the output layer has no BN.",
    ),
    Experiment(
        key="E10",
        title="Optimizers",
        claim="BN 'works w/ momentum, RMSprop, Adam' (the lecture's handwritten notes; "
        "OCR: 'momente, RMSpap'): it speeds up training with each of them.",
        source="The lecture notes",
        rows=tuple(
            Row(f"{setting}, {name}", variant, flags, epochs)
            for setting, flags, epochs in _OPTIMIZERS
            for name, variant in (("no BN", "none"), ("BN", "kbn"))
        ),
        metric=EPOCHS_TO_TARGET,
        comparisons=tuple((f"{setting}, BN", f"{setting}, no BN") for setting, _, _ in _OPTIMIZERS),
        epochs=(20, 3),
        note="Batch 60 (24 steps an epoch). Usual learning rates: SGD lr 1 (this sigmoid "
        "network's, `make run`), SGD with momentum 0.9 lr 0.1 (the same step "
        "lr/(1 − momentum) = 1), RMSprop and Adam lr 0.001 (Keras's defaults); then each "
        "10× higher. Plain SGD's rows are E1's and E2's runs, the others train fewer epochs "
        "(the table's). A comparison of two runs that both never reach 0.95 does not hold.",
    ),
)
