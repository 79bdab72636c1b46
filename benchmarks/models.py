"""Whole-model benchmarks: folded batch norm at inference, kbn vs Keras in ResNet-50 training.

    python -m benchmarks.models           # full run, ~5 min on 2 cores: models_results.md
    python -m benchmarks.models --quick   # smoke run (small images, few rounds), prints only

Method. Everything runs in one process. Each section builds its models,
then times them with `benchmarks.timing.time_interleaved` (warm-up, then
interleaved rounds in rotating order); tables give medians, the ratio of
medians to the reference, and the paired 95% interval of the per-round
ratios (`benchmarks.intervals`). Each table has an A/A control: a second,
separately built copy of the reference, whose interval is the measurement's
resolution on this machine.

- `predict`: `model.predict(x, verbose=0)` on a fixed batch, for the model
  as built ("with BN"), a copy of it ("with BN again", the A/A control),
  `kbn.fold_batchnorm` of it ("folded") and a copy
  whose batch-norm layers are simply taken out ("BN removed":
  wrong outputs, but the fastest a perfect fold could be). The digits CNN
  is `train.data.models.build_model("cnn")` with kbn's layer on the 360
  validation-sized batch of 8×8 digits; ResNet-50 is
  `keras.applications.ResNet50(weights=None)` (53 BN layers, each right after
  a convolution) at 128×128, batch 16. The folded model's largest
  |difference| from the original, relative to the largest |output|, is
  printed too (after giving every BN layer random non-trivial statistics, so
  the fold has something to fold).
- Training step: `train_on_batch` (SGD, sparse cross-entropy, 1000 classes)
  of ResNet-50 at 128×128, batch 16, with Keras's layer, with kbn's
  (`kbn.convert`), and a second Keras copy (an A/A control: two copies of one
  program do not always time alike). Then the two start from the same
  weights and take the same SGD steps on the same batches; the table shows
  how far their losses and kernels drift apart, step by step.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kbn  # noqa: E402
from benchmarks import report as report_lib  # noqa: E402
from benchmarks.intervals import CONTROL, paired_ci  # noqa: E402
from benchmarks.machine import describe_machine  # noqa: E402
from benchmarks.timing import Rounds, time_interleaved  # noqa: E402
from kbn import _bn_layers, _cloning  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "models_results.md")
# A ResNet-50 round (four predicts or three training steps) takes 1–3 s here.
FULL = {"image": 128, "batch": 16, "drift_steps": 5,
        "rounds": Rounds(min_reps=9, max_reps=15, budget_s=20.0)}
QUICK = {"image": 32, "batch": 4, "drift_steps": 2,
         "rounds": Rounds(min_reps=2, max_reps=2, budget_s=0.1)}
BASE = "with BN"
BASE_AGAIN = "with BN again"  # the A/A control of the predict table


def randomize_statistics(model, seed=0):
    """Gives every BN layer non-trivial γ, β and moving statistics (γ of both signs)."""
    rng = np.random.default_rng(seed)
    for layer in _bn_layers.batch_norm_layers(model):
        values = []
        for weight in layer.weights:
            shape = tuple(weight.shape)
            if weight.name == "moving_variance":
                values.append(rng.uniform(0.5, 2.0, shape))
            elif weight.name == "gamma":
                values.append(rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape))
            else:
                values.append(rng.normal(0.0, 0.3, shape))
        layer.set_weights([value.astype("float32") for value in values])


def without_batch_norm(model):
    """A copy with every BN layer taken out: the speed bound of a perfect fold."""
    drop = {id(layer) for layer in _bn_layers.batch_norm_layers(model)}
    return _cloning.clone_with(model, lambda layer: None, drop=drop)[0]


def copy_of(model):
    """A separately built copy with the same weights (for A/A controls)."""
    return _cloning.clone_with(model, lambda layer: None)[0]


def ratio_cells(medians, times, name, reference):
    """The ratio of medians and the paired 95% interval of `name` against `reference`."""
    return (f"{medians[name] / medians[reference]:.3f}",
            report_lib.interval(paired_ci(times, name, reference)))


def digits_cnn():
    from train.data.models import build_model

    return build_model("cnn", input_shape=(8, 8, 1), num_classes=10, bn="kbn", seed=1)


def resnet50(image):
    return keras.applications.ResNet50(weights=None, input_shape=(image, image, 3))


def bench_predict(name, model, x, rounds, log):
    randomize_statistics(model)
    folded, fold_report = kbn.fold_batchnorm(model, return_report=True)
    expected = model.predict(x, verbose=0)
    error = np.max(np.abs(folded.predict(x, verbose=0) - expected)) / np.max(np.abs(expected))
    models = {BASE: model, BASE_AGAIN: copy_of(model), "folded": folded,
              "BN removed": without_batch_norm(model)}
    medians, _, times = time_interleaved(
        {key: lambda m=m: m.predict(x, verbose=0) for key, m in models.items()}, rounds)
    log(f"{name}: {len(fold_report.folded)} BN layers folded, {len(fold_report.kept)} kept;"
        f" max |folded − original| / max |original| = {error:.1e}")
    # On a shared machine the fastest round is the one least disturbed: shown next to the median.
    fastest = {key: min(values) for key, values in times.items()}
    rows = []
    for key in models:
        ratio, interval = ratio_cells(medians, times, key, BASE)
        rows.append((name, key, f"{medians[key] * 1e3:.1f}", ratio, interval,
                     f"{medians[BASE] / medians[key]:.3f}", f"{fastest[key] * 1e3:.1f}",
                     f"{fastest[BASE] / fastest[key]:.3f}"))
    bound = medians[BASE] / medians["BN removed"]
    gain = medians[BASE] / medians["folded"]
    share = f"{100 * (gain - 1) / (bound - 1):.0f} %" if bound > 1 else "n/a"
    summary = (name, f"{len(fold_report.folded)}/{len(fold_report.folded) + len(fold_report.kept)}",
               f"{error:.1e}", f"{gain:.3f}", f"{bound:.3f}", share,
               f"{fastest[BASE] / fastest['folded']:.3f}",
               f"{fastest[BASE] / fastest['BN removed']:.3f}")
    log(f"{name}: folded {gain:.3f}× as fast as with BN; BN removed {bound:.3f}× ({share} of"
        " that gain)")
    return rows, summary


def bench_training_step(settings, log):
    image, batch = settings["image"], settings["batch"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, image, image, 3)).astype("float32")
    y = rng.integers(0, 1000, batch)
    keras.utils.set_random_seed(1)
    keras_model = resnet50(image)
    # "BN removed": the same network without its BN layers, the bound for any
    # batch-norm layer (its cost taken out).
    models = {"Keras": keras_model, "kbn": kbn.convert(keras_model), CONTROL: copy_of(keras_model),
              "BN removed": without_batch_norm(keras_model)}
    for model in models.values():
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    medians, _, times = time_interleaved(
        {name: lambda m=m: m.train_on_batch(x, y) for name, m in models.items()},
        settings["rounds"])
    rows = []
    for name in models:
        ratio, interval = ratio_cells(medians, times, name, "Keras")
        rows.append((name, f"{medians[name]:.3f}", ratio, interval, f"{min(times[name]):.3f}",
                     f"{min(times[name]) / min(times['Keras']):.3f}"))
    log("ResNet-50 training step: " + ", ".join(f"{r[0]} {r[1]} s (×{r[2]})" for r in rows)
        + f"; kbn / BN removed {medians['kbn'] / medians['BN removed']:.3f}")
    return rows


def bench_drift(settings, log):
    """Same weights, same SGD steps, Keras's layer vs kbn's: how far the two runs move apart."""
    image, batch = settings["image"], settings["batch"]
    rng = np.random.default_rng(1)
    keras.utils.set_random_seed(2)
    keras_model = resnet50(image)
    kbn_model = kbn.convert(keras_model)
    for model in (keras_model, kbn_model):
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    probe = rng.normal(size=(batch, image, image, 3)).astype("float32")
    a, b = (m.predict(probe, verbose=0) for m in (keras_model, kbn_model))
    rows = [("0", "", "", f"{np.max(np.abs(a - b)):.1e}", "0 (copied)")]
    for step in range(1, settings["drift_steps"] + 1):
        x = rng.normal(size=(batch, image, image, 3)).astype("float32")
        y = rng.integers(0, 1000, batch)
        losses = [float(model.train_on_batch(x, y)) for model in (keras_model, kbn_model)]
        # Kernels only: the biases of the convolutions before BN get a zero gradient in
        # exact arithmetic, so theirs are rounding noise and differ by 100 % of themselves.
        weights = max(
            float(np.max(np.abs(u.numpy() - v.numpy())) / np.max(np.abs(u.numpy())))
            for u, v in zip(keras_model.weights, kbn_model.weights) if u.path.endswith("kernel")
        )
        rows.append((str(step), f"{losses[0]:.6f}", f"{losses[1]:.6f}",
                     f"{abs(losses[0] - losses[1]):.1e}", f"{weights:.1e}"))
    log("drift (step: loss difference, largest relative kernel difference): "
        + ", ".join(f"{r[0]}: {r[3]}, {r[4]}" for r in rows[1:]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: small images, 2 rounds")
    parser.add_argument("--out", default=RESULTS, help="report file (full runs only)")
    parser.add_argument("--rounds", type=int, metavar="N",
                        help="exactly N timed rounds per table (default: 9–15 in about 20 s)")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.exit(2, f"{parser.prog}: error: --rounds must be >= 1, got {args.rounds}\n")
    settings = QUICK if args.quick else FULL
    if args.rounds is not None:
        settings = {**settings, "rounds": Rounds(args.rounds, args.rounds, 0.0)}
    started = time.perf_counter()
    log = report_lib.log
    image, batch, rounds = settings["image"], settings["batch"], settings["rounds"]
    rng = np.random.default_rng(0)

    digits_x = rng.uniform(0, 1, size=(360, 8, 8, 1)).astype("float32")
    digits_rows, digits_summary = bench_predict("digits CNN, batch 360", digits_cnn(), digits_x,
                                                rounds, log)
    x = rng.normal(size=(batch, image, image, 3)).astype("float32")
    resnet_rows, resnet_summary = bench_predict(f"ResNet-50 {image}×{image}, batch {batch}",
                                                resnet50(image), x, rounds, log)
    step_rows = bench_training_step(settings, log)
    drift_rows = bench_drift(settings, log)

    machine = describe_machine()
    command = "python -m benchmarks.models" + (" --quick" if args.quick else "") + (
        f" --rounds {args.rounds}" if args.rounds is not None else "")
    table = report_lib.table
    report = report_lib.document(
        ["# Whole-model benchmarks: folded batch norm, ResNet-50 with kbn", "",
         f"Machine: {machine['cpu']} ({machine['vector_extensions']}), {machine['cores']} "
         f"logical cores; TensorFlow {machine['tensorflow']} with "
         f"{report_lib.configuration(machine)}, "
         f"Keras {machine['keras']}, kbn {machine['kbn']}.", "",
         f"Command: `{command}` ({time.perf_counter() - started:.0f} s). Method: the docstring "
         "of `benchmarks/models.py`; intervals: `benchmarks/intervals.py`."],
        ["## predict: folded vs with BN", "",
         "Speed-up: time with BN / time of the variant. The bound is the speed-up of the model "
         "with its BN layers taken out (wrong outputs: the fastest a fold can be); the share is "
         "(folded − 1) / (bound − 1). From medians, and from each variant's fastest round (on a "
         "shared machine, the least disturbed one).",
         "", table(("model", "BN layers folded", "max abs(folded − original) / max abs(original)",
                    "folded: speed-up", "BN removed: speed-up (bound)", "share of the bound",
                    "fastest rounds: folded", "fastest rounds: bound"),
                   [digits_summary, resnet_summary]),
         "", table(("model", "variant", "median ms", f"time / {BASE}", "paired 95% CI",
                    "speed-up", "fastest ms", "speed-up (fastest)"), digits_rows + resnet_rows)],
        [f"## ResNet-50 training step ({image}×{image}, batch {batch}, SGD, `train_on_batch`)", "",
         table(("BN layer", "median s", "time / Keras", "paired 95% CI", "fastest s",
                "fastest / Keras's fastest"), step_rows)],
        ["## Keras vs kbn after the same SGD steps from the same weights", "",
         "Step 0: largest difference of the `predict` outputs (softmax) on a fixed batch; "
         "then each step's training loss in both runs, their difference, and the largest "
         "difference of any kernel relative to that kernel's largest entry.", "",
         table(("SGD step", "Keras loss", "kbn loss", "difference",
                "kernels: relative difference"), drift_rows)],
    )
    report_lib.publish(report, None if args.quick else args.out, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
