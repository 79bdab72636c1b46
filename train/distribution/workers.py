"""Runs one command as N local worker processes of a cluster.

    status = workers.launch("train.train", settings, argv, "python -m train.train")

`--workers N` without a cluster of the user's comes here: `--strategy
multi-worker` without TF_CONFIG, `--strategy data-parallel` without
--coordinator. This process trains nothing: it picks free ports on 127.0.0.1,
starts N copies of the same command, each told the cluster and its own place in
it (tf.distribute: a TF_CONFIG naming N ports and its task; JAX: `--coordinator
127.0.0.1:PORT --num-processes N --process-id I`; worker 0 is the chief: its
output is shown and it writes the run folders), and waits for them. The
workers' stderr goes to files; the chief's is shown once it ends well, and
after a failure the one line quotes the failed worker's last message (a
traceback would bury the line that matters).

It stops them all, and leaves no process behind:
- Ctrl-C or SIGTERM here is forwarded once to every worker; they stop together
  after the same step (train/run/loop.py) and the chief prints how to resume. A
  worker still running `GRACE_SECONDS` later is killed; a second Ctrl-C kills
  them at once.
- A worker killed by a signal stops the others at once. A worker that exits
  while others still run gets them stopped after `GRACE_SECONDS` (the time
  the chief may need for its last files and plots). "Stopped" means SIGTERM,
  then SIGKILL after `KILL_SECONDS`: a worker blocked in an all-reduce with a
  dead peer never reaches the point where it would stop by itself.
- Then one line names the worker and the run folders left "running" are
  marked interrupted, resumable from their last finished epoch.
- Workers run in their own process group, so the terminal's Ctrl-C reaches
  them only through this process (once), and on Linux they get SIGTERM if
  this process dies (PR_SET_PDEATHSIG).
"""

import contextlib
import ctypes
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from train.distribution import distributed
from train.run import run_folder, signals

# A normal end: after the first worker exits, the chief may still write its
# summary, table and plot (matplotlib's first figure takes ~2 s here).
GRACE_SECONDS = 30.0
KILL_SECONDS = 5.0
POLL_SECONDS = 0.1


def launch(module, settings, argv, prog, resume=None):
    """Runs `python -m module argv` as `settings.workers` local workers; returns the exit status.

    Args:
        module: The command's module, e.g. "train.train".
        settings: The command's settings (logdir, experiment, workers).
        argv: The command's arguments, passed on to every worker.
        prog: The command's name, for messages.
        resume: The run folder being resumed, if any.
    """
    count = settings.workers
    places, where = _places(settings.strategy, count)
    stamp = run_folder.timestamp()
    command = [sys.executable, "-m", module, *argv, "--stamp", stamp]
    log_dir = tempfile.mkdtemp(prefix="kbn-workers-")
    processes, stop, failure = [], signals.StopRequest(), None
    try:
        for index, (flags, variables) in enumerate(places):
            env = {**os.environ, **variables}
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            with open(os.path.join(log_dir, f"worker-{index}.stderr"), "wb") as stderr:
                processes.append(
                    subprocess.Popen(
                        [*command, *flags],
                        env=env,
                        stdout=None if index == 0 else subprocess.DEVNULL,
                        stderr=stderr,
                        start_new_session=True,
                        preexec_fn=_terminate_with_parent,
                    )
                )
        print(
            f"{prog}: {count} workers on 127.0.0.1 ({where};"
            f" pids {', '.join(str(p.pid) for p in processes)}); worker 0 is the chief",
            flush=True,
        )
        with stop:
            failure = _wait(processes, stop, log_dir)
    finally:
        for process in processes:  # whatever happened above, none outlives this command
            if process.poll() is None:
                process.kill()
                process.wait()
    statuses = [process.returncode for process in processes]
    if failure is None and len(set(statuses)) == 1 and statuses[0] >= 0:
        with open(os.path.join(log_dir, "worker-0.stderr")) as chief_stderr:
            sys.stderr.write(chief_stderr.read())
        shutil.rmtree(log_dir, ignore_errors=True)
        return statuses[0]
    message = failure or _describe(statuses.index(max(statuses, key=abs)), processes, log_dir)
    folders = [resume] if resume else glob.glob(
        os.path.join(settings.logdir, settings.experiment, f"{stamp}-*")
    )
    resumable = [folder for folder in sorted(folders) if run_folder.mark_interrupted(folder)]
    if resumable:
        message += "; continue with " + " or ".join(
            f"python -m train.train --resume {folder}" for folder in resumable
        )
    shutil.rmtree(log_dir, ignore_errors=True)
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return stop.exit_status if stop.requested else 1


def _places(strategy, count):
    """Each worker's extra flags and environment, and a few words on the cluster."""
    if strategy == "data-parallel":
        (port,) = distributed.free_ports(1)
        address = f"127.0.0.1:{port}"
        places = [(["--coordinator", address, "--num-processes", str(count),
                    "--process-id", str(index)], {}) for index in range(count)]
        return places, f"JAX coordinator {address}"
    ports = distributed.free_ports(count)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    places = [([], {"TF_CONFIG": json.dumps({"cluster": cluster,
                                              "task": {"type": "worker", "index": index}})})
              for index in range(count)]
    return places, f"ports {', '.join(map(str, ports))}"


def _wait(processes, stop, log_dir):
    """Waits for every worker (see the module docstring); returns a failure line or None."""
    first_exit = signal_sent = None
    failure = None
    try:
        # Every worker polled each time (`any` over a generator would stop at the first
        # running one and never notice a later worker's death).
        while not all([process.poll() is not None for process in processes]):
            now = time.monotonic()
            if stop.requested and signal_sent is None:
                signal_sent = now
                _send(processes, stop.signal)
            for index, process in enumerate(processes):
                if process.returncode is not None and first_exit is None:
                    first_exit = (index, now)
            if first_exit is not None and failure is None:
                index, when = first_exit
                if processes[index].returncode < 0 and signal_sent is None:
                    failure = _describe(index, processes, log_dir)
                elif now - when > GRACE_SECONDS:
                    failure = _describe(index, processes, log_dir, others_running=True)
            if signal_sent is not None and now - signal_sent > GRACE_SECONDS:
                failure = failure or f"workers still running {GRACE_SECONDS:g} s after the stop"
            if failure is not None:
                _stop(processes)
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:  # a second Ctrl-C: out now
        failure = "stopped at once by a second Ctrl-C"
        _stop(processes, at_once=True)
    return failure


def _describe(index, processes, log_dir, others_running=False):
    """One line about worker `index`'s end."""
    process = processes[index]
    status = process.returncode
    if status is not None and status < 0:
        how = f"was killed by {signal.Signals(-status).name}"
    else:
        how = f"exited with status {status}"
    line = f"worker {index} (pid {process.pid}) {how}"
    if others_running:
        line += f" while the others ran on for {GRACE_SECONDS:g} s; stopped them"
    elif status is not None and status < 0:
        line += "; stopped the other workers"
    last = _last_line(log_dir, index) if log_dir else None
    return line + (f" (its last message: {last})" if last else "")


def _last_line(log_dir, index):
    with contextlib.suppress(OSError):
        with open(os.path.join(log_dir, f"worker-{index}.stderr"), errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1][:300] if lines else None
    return None


def _send(processes, signum):
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)


def _stop(processes, at_once=False):
    """SIGTERM, then SIGKILL after KILL_SECONDS (at once: SIGKILL); waits for all."""
    if not at_once:
        _send(processes, signal.SIGTERM)
        deadline = time.monotonic() + KILL_SECONDS
        while time.monotonic() < deadline and any(p.poll() is None for p in processes):
            time.sleep(POLL_SECONDS)
    _send(processes, signal.SIGKILL)
    for process in processes:
        process.wait()


def _terminate_with_parent():
    """In the child, before exec: ask Linux for SIGTERM when the launcher dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
