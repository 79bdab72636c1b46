"""kbn vs Keras batch norm: step times, `model.fit` epochs, bandwidth and peak memory.

    python -m benchmarks.layer           # full run, 2–5 min on 2 cores: benchmarks/results.md
    make bench                           # the same
    python -m benchmarks.layer --quick   # smoke run in seconds: small shapes, few runs, prints only
    KBN_PATH=generic python -m benchmarks.layer --out /tmp/generic.md   # kbn's generic path

Method. Everything runs in one process; for each case the layers are built,
warmed up (tracing, XLA compilation, allocator growth), then timed in
interleaved rounds whose order rotates (see `round_orders`), so a slow spell
of a noisy machine hits all alike. Tables give medians, the kbn/Keras
ratio of the medians, and the spread (interquartile range / median, the
largest of the layers timed) as a noise gauge.

- Paired ratio CI: each round times the layers back to back, so the ratio of
  the two times within a round cancels the machine's slow drifts. The layer
  table gives a distribution-free 95% confidence interval of the median of
  those per-round ratios (order statistics of the binomial sign test; with
  5 rounds, the fewest a full run times, it is [min, max] at 94%). An interval
  that holds 1.00 means no difference this machine can resolve.
- A/A control: each layer case also times a second, separately built Keras
  layer, and gives the same interval for Keras-again / Keras. Two copies of
  one program are not always timed alike (memory placement, thread
  scheduling), so this interval is the measurement's own resolution: a kbn
  ratio inside it is a tie.

- Training step: forward + backward + moving update of one layer, loss Σy², in
  one `tf.function` (`jit_compile` False or True); returns dx, dγ, dβ.
- Inference: the forward pass with the moving statistics.
- Floor: the fewest bytes a batch-norm pass over a tensor too big for the
  cache must move. Training: forward reads x twice (the statistics must be
  known before any y is written) and writes y; backward reads dy and x twice
  (Σdy and Σdy·x̂ are needed before any dx) and writes dx: 8 tensor-sized
  transfers. Inference: read x, write y: 2. "× floor" is the time over
  floor bytes / copy bandwidth. The timed training step also holds the loss
  (read y, write dy), which the floor does not count.
- Copy bandwidth: bytes read + written per second by a plain copy, measured
  here: NumPy into a preallocated buffer (one thread) and a TensorFlow
  elementwise negation (all threads); the faster one is the reference.
- Peak memory: the extra resident memory (RSS) at the peak of one training
  step (no XLA) or of the first `fit` epoch (tracing included), on top of what
  is resident before it (input, weights; for the step, its traced function).
  A later epoch in the same process cannot be measured this way: it reuses
  the buffers the first one freed.
  Each measurement runs in a fresh subprocess, which resets the kernel's
  high-water mark (/proc/self/clear_refs), runs once, and reads VmHWM − VmRSS;
  a fresh process, because memory freed by earlier work stays resident in the
  allocator and would hide the case's own. (TensorFlow's allocator stats are
  GPU-only, and tracemalloc cannot see TensorFlow's C++ allocations.)
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kbn  # noqa: E402

LAYERS = {"kbn": kbn.BatchNormalization, "Keras": keras.layers.BatchNormalization}
CONTROL = "Keras again"  # the A/A control: a second Keras layer, timed like the others
FLOOR_PASSES = {"train": 8, "infer": 2}
BYTES_PER_ELEMENT = 4  # float32

# ~100 K to ~30 M elements; rank 2 (Dense activations) and rank 4 (NHWC conv activations).
FULL_SHAPES = [
    (1024, 100), (512, 512), (4096, 512), (8192, 2048),
    (32, 14, 14, 16), (40, 12, 12, 160), (96, 24, 24, 48), (128, 32, 32, 64), (64, 56, 56, 128),
]
QUICK_SHAPES = [(1024, 100), (16, 8, 8, 32)]
FULL_MEMORY_SHAPES = [(8192, 2048), (64, 56, 56, 128)]


# ---------------------------------------------------------------- machine ---

def describe_machine():
    """CPU model, core count, RAM and library versions, for the report's header."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = models[0] if models else cpu
    except OSError:
        pass
    try:
        ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        ram_gib = float("nan")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "kbn": kbn.__version__,
        "kbn_path": os.environ.get("KBN_PATH", "auto"),
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def copy_bandwidth(elements):
    """Bytes read + written per second by a plain copy, in GB/s, two ways."""
    source = np.random.default_rng(0).random(elements, dtype=np.float32)
    target = np.empty_like(source)
    numpy_s = _median_seconds(lambda: np.copyto(target, source), reps=20)
    x = tf.constant(source)
    negate = tf.function(tf.negative)
    tf_s = _median_seconds(lambda: negate(x), reps=20)
    moved = 2 * source.nbytes
    return {"numpy": moved / numpy_s / 1e9, "tensorflow": moved / tf_s / 1e9}


def _median_seconds(fn, reps):
    fn()
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------- timing ---

def time_interleaved(fns, min_reps, max_reps, budget_s, warmup=2):
    """Median seconds per call of each of `fns`, timed in interleaved rounds.

    Args:
        fns: dict name -> callable with no arguments.
        min_reps, max_reps: bounds on the timed rounds.
        budget_s: the rounds are sized to take about this long in all.
        warmup: untimed calls of each before timing.

    Returns:
        `(medians, spreads, times)`: dicts name -> median seconds,
        name -> interquartile range / median, and name -> the list of
        per-round seconds (index i of every list is the same round).
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    start = time.perf_counter()
    for name in names:
        fns[name]()
    round_s = time.perf_counter() - start
    reps = int(min(max_reps, max(min_reps, budget_s / max(round_s, 1e-9))))
    times = {name: [] for name in names}
    orders = round_orders(names)
    for rep in range(reps):
        for name in orders[rep % len(orders)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    spreads = {}
    for name, t in times.items():
        q1, _, q3 = statistics.quantiles(t, n=4) if len(t) > 1 else (t[0], t[0], t[0])
        spreads[name] = (q3 - q1) / medians[name]
    return medians, spreads, times


def round_orders(names):
    """The orders in which interleaved rounds run `names`: every rotation, then
    every rotation reversed. Each block of len(names) rounds, counted from
    the first, puts each name in each position once; each full cycle also puts
    each name before and after each other name equally often."""
    names = list(names)
    rotations = [names[i:] + names[:i] for i in range(len(names))]
    return rotations + [order[::-1] for order in rotations]


def paired_ci(times, name, reference="Keras"):
    """`median_ci` of the per-round ratios times[name] / times[reference], as (low, high)."""
    return median_ci([a / b for a, b in zip(times[name], times[reference])])[:2]


def median_ci(values, confidence=0.95):
    """Distribution-free confidence interval of the median of `values`.

    The interval between the k-th smallest and the k-th largest value covers
    the median with probability 1 − 2·P(B ≤ k − 1), B ~ Binomial(n, ½); k is
    the largest with coverage ≥ `confidence`, or 1 (min, max) when even that
    falls short (n ≤ 5). Returns `(low, high, coverage)`.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median_ci needs at least one value, got none")

    def coverage(k):
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    return ordered[k - 1], ordered[n - k], coverage(k)


def layer_step(layer_cls, x, mode, jit):
    """A `tf.function` running one step of a fresh layer on inputs like `x`.

    `mode` "train": forward + backward + moving update with the loss Σy²,
    returning dx, dγ, dβ; "infer": the inference forward pass.
    """
    layer = layer_cls()
    layer.build(x.shape)
    if mode == "train":
        @tf.function(jit_compile=jit)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.square(layer(x, training=True)))
            return tape.gradient(loss, [x] + layer.trainable_weights)
    else:
        step = tf.function(lambda x: layer(x, training=False), jit_compile=jit)
    return step


def kbn_path(step, x):
    """What kbn's traced step computes with: "fused" (the fused kernel), "matmul"
    (statistics by matrix products, under XLA) or "generic"."""
    types = {op.type for op in step.get_concrete_function(x).graph.get_operations()}
    if "FusedBatchNormV3" in types:
        return "fused"
    return "matmul" if "MatMul" in types else "generic"


def bench_layers(shapes, copy_gbps, min_reps, max_reps, budget_s, log):
    """Times every (shape, mode, XLA) case; returns one row dict per case."""
    rows = []
    for shape in shapes:
        x = tf.random.normal(shape, seed=1)
        elements = int(np.prod(shape))
        for mode in ("train", "infer"):
            for jit in (False, True):
                steps = {name: layer_step(cls, x, mode, jit) for name, cls in LAYERS.items()}
                steps[CONTROL] = layer_step(LAYERS["Keras"], x, mode, jit)
                medians, spreads, times = time_interleaved(
                    {name: (lambda step=step, x=x: step(x)) for name, step in steps.items()},
                    min_reps, max_reps, budget_s,
                )
                ci, aa_ci = paired_ci(times, "kbn"), paired_ci(times, CONTROL)
                floor_bytes = FLOOR_PASSES[mode] * BYTES_PER_ELEMENT * elements
                floor_s = floor_bytes / (copy_gbps * 1e9)
                row = {
                    "shape": "×".join(map(str, shape)),
                    "elements": elements,
                    "mode": mode,
                    "xla": jit,
                    "path": kbn_path(steps["kbn"], x),
                    "keras_ms": medians["Keras"] * 1e3,
                    "kbn_ms": medians["kbn"] * 1e3,
                    "ratio": medians["kbn"] / medians["Keras"],
                    "ci": ci,
                    "aa_ci": aa_ci,
                    "kbn_gbps": floor_bytes / medians["kbn"] / 1e9,
                    "kbn_x_floor": medians["kbn"] / floor_s,
                    "keras_x_floor": medians["Keras"] / floor_s,
                    "reps": len(times["kbn"]),
                    "spread": max(spreads.values()),
                }
                rows.append(row)
                log(f"{row['shape']:>16} {mode:5} xla={jit!s:5} Keras {row['keras_ms']:9.2f} ms"
                    f"  kbn {row['kbn_ms']:9.2f} ms  ratio {row['ratio']:.2f}"
                    " [{:.2f}, {:.2f}]  A/A [{:.2f}, {:.2f}]".format(*ci, *aa_ci))
    return rows


# -------------------------------------------------------------------- fit ---

def digits():
    """The train/ pipeline's digits training split (80 %): 8×8×1 images in [0, 1], labels."""
    from train.datasets import load_dataset

    data = load_dataset("digits", seed=1)
    return data.x_train, data.y_train


# The train/ pipeline's models with their defaults: `mlp` is 3 × (Dense(100) →
# BN → sigmoid), `cnn` 3 × (Conv2D(100, 3×3) → BN → sigmoid) with max pooling.
MODELS = {"MLP": "mlp", "CNN": "cnn"}
_BN_NAMES = {"kbn": "kbn", "Keras": "keras", "no BN": "none"}


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def compiled_model(model_name, layer_name):
    from train.models import build_model

    images, _ = digits()
    model = build_model(MODELS[model_name], input_shape=images.shape[1:], num_classes=10,
                        bn=_BN_NAMES[layer_name], seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def bench_fit(model_names, rounds, epochs, log, batch_size=60):
    """Median seconds per `fit` epoch with each layer, a second Keras model (the
    A/A control) and without BN, in interleaved rounds of `epochs` epochs each.

    The model without BN shows how much of an epoch BN takes at all: the
    kbn/Keras ratio of a whole epoch cannot go below no-BN/Keras. The paired
    intervals compare each round's median epochs, as in the layer table.
    """
    images, labels = digits()
    rows = []
    for model_name in model_names:
        models = {}
        for name, layer_name in [(name, name) for name in _BN_NAMES] + [(CONTROL, "Keras")]:
            model = compiled_model(model_name, layer_name)
            model.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0)  # traces
            models[name] = model
        seconds = {name: [] for name in models}
        per_round = {name: [] for name in models}
        orders = round_orders(models)
        for round_index in range(rounds):
            for name in orders[round_index % len(orders)]:
                timer = EpochTimer()
                models[name].fit(images, labels, batch_size=batch_size, epochs=epochs, verbose=0,
                                 callbacks=[timer])
                seconds[name] += timer.seconds
                per_round[name].append(statistics.median(timer.seconds))
        medians = {name: statistics.median(s) for name, s in seconds.items()}
        row = {
            "model": model_name,
            "epochs": len(seconds["kbn"]),
            "jit_compile": models["kbn"].jit_compile,
            "keras_s": medians["Keras"],
            "kbn_s": medians["kbn"],
            "none_s": medians["no BN"],
            "ratio": medians["kbn"] / medians["Keras"],
            "ci": paired_ci(per_round, "kbn"),
            "aa_ci": paired_ci(per_round, CONTROL),
            "bn_share": (medians["Keras"] - medians["no BN"]) / medians["Keras"],
        }
        rows.append(row)
        log(f"{model_name:>16} fit   Keras {row['keras_s']:.3f} s/epoch  kbn {row['kbn_s']:.3f}"
            f" s/epoch  ratio {row['ratio']:.2f}")
    return rows


# ----------------------------------------------------------------- memory ---

def _resident_kib():
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0])
    return values


def memory_probe(spec):
    """Peak extra resident MiB of one training step or `fit` epoch (see module doc).

    Meant to run in a fresh process (`--memory-probe`), so that memory freed
    by earlier work and kept by the allocator cannot hide this case's own.
    Linux only (/proc).
    """
    cls = LAYERS[spec["layer"]]
    if spec["kind"] == "step":
        # From NumPy, not tf.random: its freed temporaries would stay in the
        # allocator and be reused by the step, hiding part of its peak.
        x = tf.constant(np.random.default_rng(1).standard_normal(spec["shape"], np.float32))
        layer = cls()
        layer.build(x.shape)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.square(layer(x, training=True)))
            return tape.gradient(loss, [x] + layer.trainable_weights)

        # Trace without running: a run before the measurement would leave its
        # freed buffers resident in the allocator and hide the step's peak.
        step.get_concrete_function(x)

        def run():
            step(x)
    else:
        images, labels = digits()
        model = compiled_model(spec["model"], spec["layer"])

        def run():  # the first epoch: includes tracing the train function
            model.fit(images, labels, batch_size=60, epochs=1, verbose=0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current VmRSS
    baseline = _resident_kib()["VmRSS"]
    run()
    return (_resident_kib()["VmHWM"] - baseline) / 1024


def probe_in_subprocess(spec):
    """`memory_probe(spec)` in a fresh Python process; the peak in MiB."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.layer", "--memory-probe", json.dumps(spec)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])["peak_mib"]


def bench_memory(shapes, model_names, log):
    """Runs each memory probe in a fresh subprocess; one row per case."""
    cases = [("step", {"shape": list(s)}, "×".join(map(str, s)) + " train") for s in shapes]
    cases += [("fit", {"model": m}, f"{m} fit epoch") for m in model_names]
    rows = []
    for kind, extra, label in cases:
        peaks = {name: probe_in_subprocess({"kind": kind, "layer": name, **extra})
                 for name in LAYERS}
        row = {"case": label, "keras_mib": peaks["Keras"], "kbn_mib": peaks["kbn"],
               "ratio": peaks["kbn"] / peaks["Keras"] if peaks["Keras"] > 0 else float("nan")}
        rows.append(row)
        log(f"{label:>24} peak  Keras {row['keras_mib']:.1f} MiB  kbn {row['kbn_mib']:.1f} MiB")
    return rows


# ----------------------------------------------------------------- report ---

def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _interval(bounds):
    return "{:.2f}–{:.2f}".format(*bounds)


def render(machine, bandwidth, layer_rows, fit_rows, memory_rows, command, seconds):
    copy_gbps = max(bandwidth.values())
    out = [
        "# kbn vs Keras batch norm: benchmark",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} logical cores, "
        f"{machine['ram_gib']:.0f} GiB RAM, {machine['gpus']} GPU(s); Python {machine['python']}, "
        f"TensorFlow {machine['tensorflow']}, Keras {machine['keras']}, kbn {machine['kbn']}, "
        f"KBN_PATH={machine['kbn_path']}.",
        "",
        f"Command: `{command}` ({datetime.date.today().isoformat()}, {seconds:.0f} s). "
        "Method, floor and memory definitions: the docstring of `benchmarks/layer.py`.",
        "",
        f"Copy bandwidth (bytes read + written): {copy_gbps:.1f} GB/s "
        f"(NumPy copy, 1 thread: {bandwidth['numpy']:.1f}; TensorFlow negation, all threads: "
        f"{bandwidth['tensorflow']:.1f}).",
        "",
        "## Layer: training step and inference forward",
        "",
        "Medians; ratio < 1 means kbn is faster. Floor: 8 tensor passes for a training step, "
        "2 for inference; \"× floor\" = time / (floor bytes / copy bandwidth). "
        "Spread: interquartile range / median (the largest of the layers timed). "
        "Paired 95% CI: confidence interval of the median per-round kbn/Keras ratio; "
        "A/A 95% CI: the same for a second Keras layer against the first, the resolution "
        "of this measurement (a kbn interval overlapping it is a tie).",
        "",
        _table(
            ["shape", "elements", "mode", "XLA", "kbn path", "Keras ms", "kbn ms", "kbn/Keras",
             "paired 95% CI", "A/A 95% CI", "kbn GB/s", "kbn × floor", "Keras × floor", "runs",
             "spread"],
            [[r["shape"], f"{r['elements']:,}", r["mode"], "yes" if r["xla"] else "no", r["path"],
              f"{r['keras_ms']:.2f}", f"{r['kbn_ms']:.2f}", f"{r['ratio']:.2f}",
              _interval(r["ci"]), _interval(r["aa_ci"]), f"{r['kbn_gbps']:.1f}",
              f"{r['kbn_x_floor']:.1f}", f"{r['keras_x_floor']:.1f}",
              r["reps"], f"{100 * r['spread']:.0f}%"] for r in layer_rows],
        ),
        "",
        "## `model.fit` epochs (digits, batch 60)",
        "",
        "Medians over every timed epoch; the confidence intervals pair the rounds (each "
        "round: every model fits a few epochs; its median epoch counts), as above.",
        "",
    ]
    if fit_rows:
        out.append(_table(
            ["model", "epochs timed", "jit_compile", "Keras s/epoch", "kbn s/epoch", "kbn/Keras",
             "paired 95% CI", "A/A 95% CI", "no-BN s/epoch", "BN share of Keras epoch",
             "lowest possible kbn/Keras"],
            [[r["model"], r["epochs"], r["jit_compile"], f"{r['keras_s']:.3f}", f"{r['kbn_s']:.3f}",
              f"{r['ratio']:.2f}", _interval(r["ci"]), _interval(r["aa_ci"]),
              f"{r['none_s']:.3f}",
              f"{100 * r['bn_share']:.0f}%", f"{1 - r['bn_share']:.2f}"] for r in fit_rows],
        ))
    else:
        out.append("Skipped (--skip-fit).")
    out += ["", "## Peak memory (extra resident MiB over the run, fresh process per case)", ""]
    if memory_rows:
        out.append(_table(
            ["case", "Keras MiB", "kbn MiB", "kbn/Keras"],
            [[r["case"], f"{r['keras_mib']:.1f}", f"{r['kbn_mib']:.1f}", f"{r['ratio']:.2f}"]
             for r in memory_rows],
        ))
    else:
        out.append("Skipped (--skip-memory or --quick).")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------- main ---

def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.layer", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument("--quick", action="store_true",
                     help="smoke run: small shapes, few runs, no memory probes, "
                          "no file unless --out")
    run.add_argument("--skip-fit", action="store_true", help="leave out the model.fit epochs")
    run.add_argument("--skip-memory", action="store_true", help="leave out the peak-memory probes")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=None,
                        help="markdown file to write (default: benchmarks/results.md, "
                             "none with --quick)")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.memory_probe:
        print(json.dumps({"peak_mib": memory_probe(json.loads(args.memory_probe))}))
        return None

    def log(message):
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    if args.quick:
        # No memory probes: each starts a fresh Python + TensorFlow (seconds apiece).
        shapes, memory_shapes, reps, budget_s = QUICK_SHAPES, [], (3, 10), 0.2
        fit_rounds, fit_epochs, models = 1, 1, ["MLP"]
    else:
        shapes, memory_shapes, reps, budget_s = FULL_SHAPES, FULL_MEMORY_SHAPES, (5, 60), 2.5
        fit_rounds, fit_epochs, models = 12, 2, list(MODELS)
    out = args.out or (None if args.quick else os.path.join("benchmarks", "results.md"))

    machine = describe_machine()
    bandwidth = copy_bandwidth(2**24 if args.quick else 2**26)
    log(f"copy bandwidth: {bandwidth}")
    layer_rows = bench_layers(shapes, max(bandwidth.values()), *reps, budget_s, log)
    fit_rows = [] if args.skip_fit else bench_fit(models, fit_rounds, fit_epochs, log)
    skip_memory = args.skip_memory or args.quick
    memory_rows = [] if skip_memory else bench_memory(memory_shapes, models, log)

    command = " ".join(["python -m benchmarks.layer"] + argv)
    report = render(machine, bandwidth, layer_rows, fit_rows, memory_rows, command,
                    time.perf_counter() - started)
    print(report)
    if out:
        with open(out, "w") as f:
            f.write(report)
        log(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
