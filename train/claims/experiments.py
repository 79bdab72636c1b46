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
MEDIAN_RANGE = Metric("range of the median of the last sigmoid's input", median_range, False)

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
        note="The `make run` set-up (digits, 3×100 sigmoid, SGD lr 1, batch 60), 30 epochs "
        "(`make run` trains 60: there the plain network reaches 0.95 at epoch 50).",
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
        "The batch-60 rows (15 epochs, 360 steps) are for reference, not part of the "
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
)
