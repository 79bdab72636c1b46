"""Peak memory of kbn vs Keras: one training step per shape, one first `fit` epoch per model.

    python -m benchmarks.memory            # the full cases; prints the table
    python -m benchmarks.memory --quick    # one small step shape and the MLP (about 20 s)

Each case runs `benchmarks.memory_probe` in a fresh Python process (what it
measures and why a fresh process: its docstring). `python -m benchmarks.suite`
runs these cases too, for the whole report.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from benchmarks import report  # noqa: E402
from benchmarks.fit_epochs import MODELS  # noqa: E402
from benchmarks.layer_steps import LAYERS  # noqa: E402
from benchmarks.machine import describe_machine  # noqa: E402
from benchmarks.shapes import shape_text  # noqa: E402

FULL_MEMORY_SHAPES = [(8192, 2048), (64, 56, 56, 128)]
QUICK_MEMORY_SHAPES = [(4096, 1024)]


def probe_in_subprocess(spec):
    """`benchmarks.memory_probe` of `spec` in a fresh Python process; the peak in MiB."""
    command = [sys.executable, "-m", "benchmarks.memory_probe", json.dumps(spec)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {completed.returncode}):\n"
                           + completed.stderr[-3000:])
    return json.loads(completed.stdout.strip().splitlines()[-1])["peak_mib"]


def bench_memory(shapes, model_names, log):
    """Runs each memory probe in a fresh subprocess; one row per case."""
    cases = [("step", {"shape": list(s)}, shape_text(s) + " train") for s in shapes]
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


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: step shapes {QUICK_MEMORY_SHAPES} and the MLP only")
    parser.add_argument("--skip-fit", action="store_true", help="leave out the fit-epoch cases")
    parser.add_argument("--out", default=None, help="markdown file to write (default: print only)")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    started = time.perf_counter()
    shapes = QUICK_MEMORY_SHAPES if args.quick else FULL_MEMORY_SHAPES
    models = [] if args.skip_fit else (["MLP"] if args.quick else list(MODELS))
    rows = bench_memory(shapes, models, log=report.log)
    command = " ".join(["python -m benchmarks.memory"] + argv)
    text = report.document(
        report.header(describe_machine(), command, time.perf_counter() - started),
        report.memory_section(rows),
    )
    report.publish(text, args.out, report.log)
    return text


if __name__ == "__main__":
    main()
