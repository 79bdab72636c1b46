"""Watching a command that starts local worker processes (test helpers): its
launcher line, its workers' pids, whether they are still alive."""

import os
import select
import time


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
