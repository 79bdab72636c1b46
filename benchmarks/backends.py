"""kbn vs Keras on Keras's other backends, JAX and PyTorch, each in its own process.

    python -m benchmarks.backends                   # every backend found; prints the tables
    python -m benchmarks.backends --quick           # smoke run: small shapes, few runs
    python -m benchmarks.backends --backends jax    # one backend
    python -m benchmarks.backends --out /tmp/backends.md

Keras picks its backend once, at import, so each backend runs
`benchmarks.backend_steps` (what it times: its docstring) in a fresh Python
process with `KERAS_BACKEND` set. JAX runs with this Python; PyTorch with
this Python when it imports torch, else with the PyTorch environment
`.venv-torch` (`make test-torch` creates it) when that exists. A backend with
neither is reported as skipped; one whose process fails is reported as
failed, and the exit status is 1. `python -m benchmarks.suite` includes these
tables in the whole report.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from benchmarks import report  # noqa: E402
from benchmarks.backend_steps import BACKENDS  # noqa: E402
from benchmarks.machine import describe_machine  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_ENVIRONMENT = os.path.join(REPO_ROOT, ".venv-torch", "bin", "python")
NOT_FOUND = {"jax": "this Python cannot import jax",
             "torch": "neither this Python nor .venv-torch can import torch"}


def interpreter(backend):
    """The Python that runs `backend`'s process, or None when none has its library."""
    if importlib.util.find_spec(backend) is not None:
        return sys.executable
    if backend == "torch" and os.path.exists(TORCH_ENVIRONMENT):
        return TORCH_ENVIRONMENT
    return None


def run_backend(backend, quick, log):
    """`benchmarks.backend_steps` on `backend` in a fresh process.

    Returns its results (backend, versions, method, rows); or
    {"backend", "skipped": reason} when no Python here has the backend's
    library; or {"backend", "failed": reason} when its process failed (the
    reason quotes its last output line). Its output is passed on to `log` as
    it comes.
    """
    python = interpreter(backend)
    if python is None:
        return {"backend": backend, "skipped": NOT_FOUND[backend]}
    with tempfile.TemporaryDirectory() as folder:
        results = os.path.join(folder, "results.json")
        command = [python, "-m", "benchmarks.backend_steps", "--json", results]
        command += ["--quick"] if quick else []
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env={**os.environ, "KERAS_BACKEND": backend},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        last_line = "no output"
        for line in process.stdout:
            log(f"[{backend}] {line.rstrip()}")
            last_line = line.strip() or last_line
        if process.wait() != 0:
            return {"backend": backend,
                    "failed": f"its process failed (exit {process.returncode}): {last_line}"}
        with open(results) as f:
            return json.load(f)


def bench_backends(backends, quick, log):
    """`run_backend` of each of `backends`, in turn."""
    return [run_backend(backend, quick, log) for backend in backends]


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.backends", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small shapes, few runs")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help="the backends to run")
    parser.add_argument("--out", default=None, help="markdown file to write (default: print only)")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    started = time.perf_counter()
    results = bench_backends(args.backends, args.quick, report.log)
    command = " ".join(["python -m benchmarks.backends"] + argv)
    text = report.document(
        report.header(describe_machine(), command, time.perf_counter() - started),
        *report.backend_sections(results),
    )
    report.publish(text, args.out, report.log)
    if any("failed" in result for result in results):
        sys.exit(1)
    return text


if __name__ == "__main__":
    main()
