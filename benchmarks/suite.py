"""kbn vs Keras batch norm: every benchmark, one report.

    python -m benchmarks.suite           # full run, minutes on 2 cores: benchmarks/results.md
    make bench                           # the same
    python -m benchmarks.suite --quick   # smoke run (< 1 min): small shapes, few runs, prints only
    KBN_PATH=generic python -m benchmarks.suite --out /tmp/generic.md   # kbn's generic path

Runs every measurement in turn and writes one report:

- `benchmarks.layer_steps`: training step and inference of one layer per
  shape, with and without XLA, against the memory floor (`benchmarks.machine`
  measures the copy bandwidth it needs);
- `benchmarks.ghost`: ghost batch norm (`virtual_batch_size`) against kbn's
  plain layer and tf.keras 2's ghost batch norm;
- `benchmarks.multi_axis`: `axis=[1, 3]` against tf.keras 2's layer;
- `benchmarks.fit_epochs`: whole `model.fit` epochs of the train/ models;
- `benchmarks.memory`: peak memory, each case in a fresh process (also an
  entry point of its own);
- `benchmarks.backends`: kbn vs Keras on JAX and PyTorch, each in a fresh
  process (also an entry point of its own).

The targets in the tables are issue 8's. The exit status is 1 when a
backend's process failed (the report says which and why), else 0.

How cases are timed and compared: `benchmarks.timing` and `benchmarks.intervals`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from benchmarks import ghost, multi_axis, report  # noqa: E402
from benchmarks.backends import BACKENDS, bench_backends  # noqa: E402
from benchmarks.fit_epochs import MODELS, bench_fit  # noqa: E402
from benchmarks.layer_steps import bench_layers  # noqa: E402
from benchmarks.machine import copy_bandwidth, describe_machine  # noqa: E402
from benchmarks.memory import FULL_MEMORY_SHAPES, bench_memory  # noqa: E402
from benchmarks.shapes import FULL_SHAPES, QUICK_SHAPES  # noqa: E402
from benchmarks.timing import FULL_ROUNDS, QUICK_ROUNDS, Rounds  # noqa: E402

DEFAULT_OUT = os.path.join("benchmarks", "results.md")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures and how long: the shapes of each table, the timed
    rounds of a case, the `fit` rounds × epochs per round, the memory cases."""

    shapes: list
    ghost_shapes: list
    multi_axis_shapes: list
    rounds: Rounds
    fit_rounds: int
    fit_epochs: int
    models: list
    memory_shapes: list
    bandwidth_elements: int


FULL = Plan(FULL_SHAPES, ghost.FULL_GHOST_SHAPES, multi_axis.FULL_MULTI_AXIS_SHAPES, FULL_ROUNDS,
            fit_rounds=12, fit_epochs=2, models=list(MODELS), memory_shapes=FULL_MEMORY_SHAPES,
            bandwidth_elements=2**26)
# No memory probes or other backends: each starts a fresh Python (seconds apiece).
QUICK = Plan(QUICK_SHAPES, ghost.QUICK_GHOST_SHAPES, multi_axis.QUICK_MULTI_AXIS_SHAPES,
             QUICK_ROUNDS, fit_rounds=1, fit_epochs=1, models=["MLP"], memory_shapes=[],
             bandwidth_elements=2**24)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.suite", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument("--quick", action="store_true",
                     help="smoke run: small shapes, few runs, no memory probes and no "
                          "other backends, no file unless --out")
    run.add_argument("--skip-features", action="store_true",
                     help="leave out the ghost batch norm and several-axes cases")
    run.add_argument("--skip-fit", action="store_true", help="leave out the model.fit epochs")
    run.add_argument("--skip-memory", action="store_true", help="leave out the peak-memory probes")
    run.add_argument("--skip-backends", action="store_true",
                     help=f"leave out the other backends ({', '.join(BACKENDS)})")
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
    plan = QUICK if args.quick else FULL
    out = args.out or (None if args.quick else DEFAULT_OUT)

    machine = describe_machine()
    bandwidth = copy_bandwidth(plan.bandwidth_elements)
    log(f"copy bandwidth: {bandwidth}")
    layer_rows = bench_layers(plan.shapes, max(bandwidth.values()), plan.rounds, log)
    ghost_rows, multi_axis_rows = [], []
    if not args.skip_features:
        ghost_rows = ghost.bench_ghost(plan.ghost_shapes, plan.rounds, log)
        multi_axis_rows = multi_axis.bench_multi_axis(plan.multi_axis_shapes, plan.rounds, log)
    fit_rows = []
    if not args.skip_fit:
        fit_rows = bench_fit(plan.models, plan.fit_rounds, plan.fit_epochs, log)
    skip_memory = args.skip_memory or args.quick
    memory_rows = [] if skip_memory else bench_memory(plan.memory_shapes, plan.models, log)
    skip_backends = args.skip_backends or args.quick
    backend_results = [] if skip_backends else bench_backends(BACKENDS, quick=False, log=log)

    command = " ".join(["python -m benchmarks.suite"] + argv)
    text = report.document(
        report.header(machine, command, time.perf_counter() - started, bandwidth),
        report.layer_section(layer_rows),
        report.ghost_section(ghost_rows),
        report.multi_axis_section(multi_axis_rows),
        report.fit_section(fit_rows),
        report.memory_section(memory_rows),
        *(report.backend_sections(backend_results) if backend_results
          else [report.backends_skipped()]),
    )
    report.publish(text, out, log)
    if any("failed" in result for result in backend_results):
        sys.exit(1)
    return text


if __name__ == "__main__":
    main()
