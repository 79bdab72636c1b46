"""Whole-model benchmarks: folded batch norm at inference, kbn vs Keras in ResNet-50 training.

    python -m benchmarks.models           # full run (~5 min on 2 cores): benchmarks/models_results.md
    python -m benchmarks.models --quick   # smoke run (small images, few rounds), prints only

Method. Everything runs in one process. Each section builds its models,
warms each one up (tracing, allocator growth), then times them in rounds:
every round calls each model once, in an order that rotates from round to
round, so a slow spell of the busy machine hits all alike. Tables give the
median time per call and, per model, the median over rounds of its time
divided by the reference's time in the same round, with the smallest and
largest of those per-round ratios.

- `predict`: `model.predict(x, verbose=0)` on a fixed batch, for the model
  as built ("with BN"), `kbn.fold_batchnorm` of it ("folded") and a copy
  whose batch-norm layers are simply taken out ("BN removed":
  wrong outputs, but the fastest a perfect fold could be). The digits CNN
  is `train.models.build_model("cnn")` with kbn's layer on the 360
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
  how far their losses and weights drift apart, step by step.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kbn  # noqa: E402
from kbn import _bn_layers  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "models_results.md")
FULL = {"image": 128, "batch": 16, "rounds": 9, "drift_steps": 5}
QUICK = {"image": 32, "batch": 4, "rounds": 2, "drift_steps": 2}


def time_rounds(calls, rounds, warmup=2):
    """{name: [seconds per round]} for each zero-argument callable, in rotating order."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    names = list(calls)
    times = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratio_cells(times, name, reference):
    """Median, min and max over rounds of `name`'s time / `reference`'s time."""
    ratios = [a / b for a, b in zip(times[name], times[reference])]
    return f"{statistics.median(ratios):.3f}", f"{min(ratios):.3f}–{max(ratios):.3f}"


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
    """A copy with every BN layer replaced by Identity: the speed bound of a perfect fold."""
    from kbn import _cloning

    drop = {id(layer) for layer in _bn_layers.batch_norm_layers(model)}
    return _cloning.clone_with(model, lambda layer: None, drop=drop)[0]


def digits_cnn():
    from train.models import build_model

    return build_model("cnn", input_shape=(8, 8, 1), num_classes=10, bn="kbn", seed=1)


def resnet50(image):
    return keras.applications.ResNet50(weights=None, input_shape=(image, image, 3))


def bench_predict(name, model, x, rounds, log):
    randomize_statistics(model)
    folded, report = kbn.fold_batchnorm(model, return_report=True)
    removed = without_batch_norm(model)
    expected = model.predict(x, verbose=0)
    error = np.max(np.abs(folded.predict(x, verbose=0) - expected)) / np.max(np.abs(expected))
    models = {"with BN": model, "folded": folded, "BN removed": removed}
    times = time_rounds({key: lambda m=m: m.predict(x, verbose=0) for key, m in models.items()},
                        rounds)
    log(f"{name}: {len(report.folded)} BN layers folded, {len(report.kept)} kept;"
        f" max |folded − original| / max |original| = {error:.1e}")
    rows = []
    base = statistics.median(times["with BN"])
    for key in models:
        median = statistics.median(times[key])
        ratio, spread = ratio_cells(times, key, "with BN")
        rows.append((name, key, f"{median * 1e3:.1f}", ratio, spread, f"{base / median:.3f}"))
    bound = base / statistics.median(times["BN removed"])
    gain = base / statistics.median(times["folded"])
    log(f"{name}: folded {gain:.3f}× faster than with BN; the bound (BN removed) is {bound:.3f}×;"
        f" the fold gets {100 * (gain - 1) / (bound - 1):.0f} % of the possible gain"
        if bound > 1 else f"{name}: removing BN gains nothing measurable here ({bound:.3f}×)")
    return rows, error


def bench_training_step(settings, log):
    image, batch = settings["image"], settings["batch"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, image, image, 3)).astype("float32")
    y = rng.integers(0, 1000, batch)
    keras.utils.set_random_seed(1)
    keras_model = resnet50(image)
    models = {"Keras": keras_model, "kbn": kbn.convert(keras_model),
              "Keras again": kbn.convert(kbn.convert(keras_model), to="keras")}
    for model in models.values():
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    times = time_rounds({name: lambda m=m: m.train_on_batch(x, y) for name, m in models.items()},
                        settings["rounds"])
    rows = []
    for name in models:
        ratio, spread = ratio_cells(times, name, "Keras")
        rows.append((name, f"{statistics.median(times[name]):.3f}", ratio, spread))
    log("ResNet-50 training step: " + ", ".join(f"{r[0]} {r[1]} s (×{r[2]})" for r in rows))
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
    rows = [("0", "", "", f"{np.max(np.abs(a - b)):.1e}", "0")]
    for step in range(1, settings["drift_steps"] + 1):
        x = rng.normal(size=(batch, image, image, 3)).astype("float32")
        y = rng.integers(0, 1000, batch)
        losses = [float(model.train_on_batch(x, y)) for model in (keras_model, kbn_model)]
        weights = max(
            float(np.max(np.abs(u - v)) / max(np.max(np.abs(u)), 1e-30))
            for u, v in zip(keras_model.get_weights(), kbn_model.get_weights())
        )
        rows.append((str(step), f"{losses[0]:.6f}", f"{losses[1]:.6f}",
                     f"{abs(losses[0] - losses[1]):.1e}", f"{weights:.1e}"))
    log("drift (step: |loss difference|, largest relative weight difference): "
        + ", ".join(f"{r[0]}: {r[3]}, {r[4]}" for r in rows[1:]))
    return rows


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: small images, 2 rounds")
    parser.add_argument("--out", default=RESULTS, help="report file (full runs only)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()

    def log(line):
        print(line, flush=True)

    image, batch = settings["image"], settings["batch"]
    rng = np.random.default_rng(0)
    predict_rows = []
    digits_x = rng.uniform(0, 1, size=(360, 8, 8, 1)).astype("float32")
    rows, _ = bench_predict("digits CNN (batch 360)", digits_cnn(), digits_x, settings["rounds"],
                            log)
    predict_rows += rows
    x = rng.normal(size=(batch, image, image, 3)).astype("float32")
    rows, _ = bench_predict(f"ResNet-50 {image}×{image}, batch {batch}", resnet50(image), x,
                            settings["rounds"], log)
    predict_rows += rows
    step_rows = bench_training_step(settings, log)
    drift_rows = bench_drift(settings, log)

    report = "\n\n".join([
        "# Whole-model benchmarks (`python -m benchmarks.models`)",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"Keras {keras.__version__}, backend {keras.backend.backend()}; "
        f"{settings['rounds']} rounds; {time.perf_counter() - started:.0f} s.",
        "## predict: with BN, folded, BN removed",
        table(("model", "variant", "median ms", "time / with BN (median over rounds)",
               "min–max over rounds", "speed-up"), predict_rows),
        f"## ResNet-50 training step ({image}×{image}, batch {batch}, SGD)",
        table(("layer", "median s", "time / Keras", "min–max over rounds"), step_rows),
        "## Keras vs kbn after the same SGD steps from the same weights",
        "Step 0: largest difference of the `predict` outputs (softmax) on a fixed batch; "
        "then each step's training loss in both runs, their difference, and the largest "
        "difference of any weight tensor relative to that tensor's largest entry.",
        table(("SGD step", "Keras loss", "kbn loss", "difference", "weights: relative difference"),
              drift_rows),
    ]) + "\n"
    if args.quick:
        print(report)
    else:
        with open(args.out, "w") as f:
            f.write(report)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
