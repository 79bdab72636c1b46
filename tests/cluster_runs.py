"""Watching a command that starts local worker processes (test helpers): its
launcher line, its workers' pids, whether they are still alive, and what it does
when one of them is killed."""

import os
import select
import signal
import time

from tiny_runs import only_run


def lines_until(process, text, timeout):
    """Reads the launcher's stdout until a line contains `text`; returns all lines read."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if text in line:
                return lines
    process.kill()
    raise AssertionError(f"no {text!r} in {lines}")


def worker_pids(launcher_line):
    """The pids the launcher's first line names: "... pids 123, 456); worker 0 ..."."""
    return [int(pid) for pid in launcher_line.split("pids ")[1].split(")")[0].split(", ")]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_worker_1(launcher, first_epoch, logdir):
    """Kills worker 1 (SIGKILL) of the `launcher` process once it prints `first_epoch`;
    returns its exit status, stderr, the seconds from the kill to its exit, the
    workers' pids and the run folder it made in `logdir`."""
    pids = worker_pids(lines_until(launcher, first_epoch, timeout=180)[0])
    killed_at = time.monotonic()
    os.kill(pids[1], signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)
    return launcher.returncode, err, time.monotonic() - killed_at, pids, only_run(logdir)


def assert_stopped_in_one_line(killed):
    """What `kill_worker_1` must see: exit 1, one line naming the dead worker and the
    resume command, within 30 s (room for a loaded machine), no process left."""
    status, err, seconds, pids, run_dir = killed
    assert status == 1
    assert err.count("\n") == 1, err
    assert f"worker 1 (pid {pids[1]}) was killed by SIGKILL" in err
    assert f"continue with python -m train.train --resume {run_dir}" in err
    assert seconds < 30
    assert not any(alive(pid) for pid in pids)  # no orphans
