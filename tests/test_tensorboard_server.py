"""The real `tensorboard` server lists every run of a compare with scalars, histograms, images."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tiny_runs import run_dirs, tiny_compare
from train.data.variants import COMPARED as VARIANTS

TENSORBOARD = os.path.join(os.path.dirname(sys.executable), "tensorboard")
STARTUP_SECONDS = 90


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port, route, body=None):
    """GET `route`, or POST it with a JSON `body`; returns the decoded JSON reply."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{route}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _, _, experiment = tiny_compare(tmp_path_factory)
    port = _free_port()
    process = subprocess.Popen(
        [
            TENSORBOARD,
            "--logdir",
            experiment,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    expected = {os.path.basename(folder) + "/train" for folder in run_dirs(experiment)}
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, "tensorboard exited"
            try:
                if expected <= set(_get(port, "/data/runs")):
                    break
            except OSError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "tensorboard did not list the runs in time"
            time.sleep(0.5)
        yield port, run_dirs(experiment)
    finally:
        process.kill()
        process.wait(timeout=30)


def test_every_run_is_listed(server):
    port, folders = server
    runs = set(_get(port, "/data/runs"))
    for folder in folders:
        name = os.path.basename(folder)
        assert {f"{name}/train", f"{name}/validation"} <= runs


def test_every_run_has_scalars_histograms_and_images(server):
    port, folders = server
    scalars = _get(port, "/data/plugin/scalars/tags")
    histograms = _get(port, "/data/plugin/histograms/tags")
    images = _get(port, "/data/plugin/images/tags")
    for folder in folders:
        train = os.path.basename(folder) + "/train"
        assert {"epoch_loss", "epoch_accuracy", "batch_loss", "activation_input/act_2/p50"} <= set(
            scalars[train]
        )
        assert "epoch_accuracy" in scalars[os.path.basename(folder) + "/validation"]
        assert "activation_input/act_2" in histograms[train]
        assert any(tag.endswith("dense_1/kernel/histogram") for tag in histograms[train])
        assert "comparison_plot" in images[train]
    kbn_train = os.path.basename(folders[2]) + "/train"
    assert any("bn_1/gamma" in tag for tag in histograms[kbn_train])


def test_hparams_dashboard_compares_the_variants(server):
    """The HParams plugin sees every run as a session with its variant and learning rate."""
    port, folders = server
    experiment = _get(port, "/data/plugin/hparams/experiment", {"experimentName": ""})
    infos = {info["name"]: info for info in experiment["hparamInfos"]}
    assert {"variant", "lr", "batch_size", "dataset"} <= set(infos)
    assert set(infos["variant"]["domainDiscrete"]) == set(VARIANTS)
    groups = _get(port, "/data/plugin/hparams/session_groups",
                  {"experimentName": "", "startIndex": 0, "sliceSize": 100,
                   "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                       "STATUS_RUNNING"],
                   "colParams": [], "aggregationType": "AGGREGATION_AVG"})
    variants = {group["hparams"]["variant"] for group in groups["sessionGroups"]}
    assert variants == set(VARIANTS)
    assert len(groups["sessionGroups"]) == len(folders)
