"""What a run makes of a lost peer, in-process: which errors count as one, and the
rows it keeps (the processes themselves are killed in test_data_parallel.py)."""

import json
import types

import pytest

from tiny_runs import read_run_file
from train.distribution import distributed
from train.run import runs
from train.run.recording import METRIC_COLUMNS
from train.run import files


def test_only_gloos_failures_count_as_a_lost_peer():
    jax = pytest.importorskip("jax")
    gloo = "UNKNOWN: Gloo AllGather failed: [external/gloo/pair.cc:538] Connection closed by peer"
    assert distributed.is_failed_collective(ValueError(gloo))
    assert distributed.is_failed_collective(
        jax.errors.JaxRuntimeError("UNKNOWN: Gloo all-reduce failed: Connection reset by peer"))
    # Out of memory, a bug: raised as they are, not called a lost peer.
    assert not distributed.is_failed_collective(
        jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4 GiB"))
    assert not distributed.is_failed_collective(ValueError("operands could not be broadcast"))


def _row(epoch):
    return {"epoch": epoch, "loss": 1.0 / epoch, "accuracy": 0.5, "val_loss": 1.0,
            "val_accuracy": 0.5, "learning_rate": 1.0, "seconds": 0.1}


@pytest.mark.parametrize("checkpointed, kept", [(2, 2), (3, 3), (None, 0)])
def test_a_lost_peer_keeps_the_rows_the_checkpoint_holds(tmp_path, checkpointed, kept):
    """A peer that dies during epoch 3's save: epoch 3 was recorded, not saved."""
    rows = [_row(epoch) for epoch in (1, 2, 3)]
    files.write_rows(str(tmp_path / "metrics.csv"), rows, METRIC_COLUMNS)
    if checkpointed is not None:
        (tmp_path / "checkpoint.json").write_text(json.dumps({"epochs_done": checkpointed}))
    state = types.SimpleNamespace(writes=True, run_dir=str(tmp_path), rows=rows)
    runs._keep_checkpointed_rows(state)
    assert [row["epoch"] for row in state.rows] == list(range(1, kept + 1))
    assert [int(row["epoch"]) for row in read_run_file(str(tmp_path), "metrics.csv")] == list(
        range(1, kept + 1))
