"""Crash-safe files: a run folder never holds a half-written file.

    from train.run import files
    files.write_json(path, {"epochs_done": 3})
    files.write_rows(path, rows, columns)
    digest = files.save_model(model, path)      # the checkpoint; returns its sha256

Every write goes to a temporary file beside the target, is flushed to disk
(fsync), then renamed over the target. A rename within one folder is atomic
on POSIX file systems, so a process killed at any moment (SIGKILL, the OOM
killer, the machine going down) leaves either the old file or the new one,
never a truncated mix. The folder is fsynced too, so the rename itself
survives a power cut. A process killed during a write leaves its temporary
file (`.<name>.<random>.partial…`); `remove_leftovers` clears them on resume.
"""

import contextlib
import csv
import glob
import hashlib
import json
import os
import tempfile


PARTIAL = ".partial"


@contextlib.contextmanager
def replacing(path, suffix=""):
    """Yields the path of a temporary file beside `path`; on success renames it over `path`.

    Args:
        path: The file to write.
        suffix: Ending of the temporary file's name (Keras insists on ".keras").
    """
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=PARTIAL + suffix, dir=folder
    )
    os.close(descriptor)
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _fsync_folder(folder)


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    with replacing(path) as temporary:
        with open(temporary, "w", newline="") as f:
            f.write(text)


def write_json(path, content):
    """Writes `content` as indented JSON, atomically; NaN is refused (JSON has none)."""
    write_text(path, json.dumps(content, indent=2, allow_nan=False, default=str) + "\n")


def write_rows(path, rows, columns):
    """Writes a CSV with a header row and one line per dict in `rows`, atomically."""
    with replacing(path) as temporary:
        with open(temporary, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


def save_model(model, path):
    """Saves a Keras model (with its optimizer) atomically; returns the file's sha256."""
    with replacing(path, suffix=".keras") as temporary:
        model.save(temporary)
        digest = sha256(temporary)
    return digest


def remove_leftovers(folder):
    """Deletes the temporary files of writes that a killed process never finished."""
    for leftover in glob.glob(os.path.join(folder, f".*{PARTIAL}*")):
        with contextlib.suppress(OSError):
            os.remove(leftover)


def sha256(path):
    """The hex SHA-256 of a file's bytes."""
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _fsync_file(path):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder):
    # Some file systems refuse fsync on a folder; the rename is still atomic there.
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
