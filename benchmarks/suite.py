"""kbn vs Keras batch norm: step times, `model.fit` epochs, bandwidth and peak memory.

    python -m benchmarks.suite           # full run, 2–5 min on 2 cores: benchmarks/results.md
    make bench                           # the same
    python -m benchmarks.suite --quick   # smoke run in seconds: small shapes, few runs, prints only
    KBN_PATH=generic python -m benchmarks.suite --out /tmp/generic.md   # kbn's generic path

Runs every measurement in turn and writes one report:

- `benchmarks.layer_steps`: training step and inference of one layer per
  shape, with and without XLA, against the memory floor (`benchmarks.machine`
  measures the copy bandwidth it needs);
- `benchmarks.fit_epochs`: whole `model.fit` epochs of the train/ models;
- `benchmarks.memory`: peak memory, each case in a fresh process (also an
  entry point of its own).

How cases are timed and compared: `benchmarks.timing` and `benchmarks.intervals`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from benchmarks import report  # noqa: E402
from benchmarks.fit_epochs import MODELS, bench_fit  # noqa: E402
from benchmarks.layer_steps import FULL_SHAPES, QUICK_SHAPES, bench_layers  # noqa: E402
from benchmarks.machine import copy_bandwidth, describe_machine  # noqa: E402
from benchmarks.memory import FULL_MEMORY_SHAPES, bench_memory  # noqa: E402
from benchmarks.timing import FULL_ROUNDS, QUICK_ROUNDS  # noqa: E402

DEFAULT_OUT = os.path.join("benchmarks", "results.md")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.suite", description=__doc__.split("\n\n")[0],
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
                        help=f"markdown file to write (default: {DEFAULT_OUT}, "
                             "none with --quick)")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    log = report.log
    started = time.perf_counter()
    if args.quick:
        # No memory probes: each starts a fresh Python + TensorFlow (seconds apiece).
        shapes, memory_shapes, rounds = QUICK_SHAPES, [], QUICK_ROUNDS
        fit_rounds, fit_epochs, models = 1, 1, ["MLP"]
    else:
        shapes, memory_shapes, rounds = FULL_SHAPES, FULL_MEMORY_SHAPES, FULL_ROUNDS
        fit_rounds, fit_epochs, models = 12, 2, list(MODELS)
    out = args.out or (None if args.quick else DEFAULT_OUT)

    machine = describe_machine()
    bandwidth = copy_bandwidth(2**24 if args.quick else 2**26)
    log(f"copy bandwidth: {bandwidth}")
    layer_rows = bench_layers(shapes, max(bandwidth.values()), rounds, log)
    fit_rows = [] if args.skip_fit else bench_fit(models, fit_rounds, fit_epochs, log)
    skip_memory = args.skip_memory or args.quick
    memory_rows = [] if skip_memory else bench_memory(memory_shapes, models, log)

    command = " ".join(["python -m benchmarks.suite"] + argv)
    text = report.document(
        report.header(machine, command, time.perf_counter() - started, bandwidth),
        report.layer_section(layer_rows),
        report.fit_section(fit_rows),
        report.memory_section(memory_rows),
    )
    report.publish(text, out, log)
    return text


if __name__ == "__main__":
    main()
