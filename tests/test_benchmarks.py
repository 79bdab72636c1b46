"""Smoke tests of the benchmarks (`benchmarks/`).

They run the quick modes of the entry points and check the reports'
structure: sections, columns, one row per case, parseable numbers. They never
assert timings — those belong to the benchmark's output, not to a test on a
shared machine.
"""

import importlib.util
import math
import os
import sys

import keras
import pytest
import tensorflow as tf

from benchmarks import (
    backend_steps, backends, ghost, memory, memory_probe, multi_axis, report, suite,
)
from benchmarks.comparisons import TIE_OR_BETTER, Comparison, Target, comparison_rows, verdict
from benchmarks.intervals import median_ci
from benchmarks.shapes import QUICK_SHAPES
from benchmarks.timing import round_orders
from kbn import _tf_fast

LAYER_COLUMNS = ["shape", "elements", "mode", "XLA", "kbn path", "Keras ms", "kbn ms",
                 "kbn/Keras", "paired 95% CI", "A/A 95% CI", "vs A/A", "target", "met",
                 "kbn GB/s", "kbn × floor", "Keras × floor", "runs", "spread"]
FIT_COLUMNS = ["model", "epochs timed", "jit_compile", "Keras s/epoch", "kbn s/epoch", "kbn/Keras",
               "paired 95% CI", "A/A 95% CI", "no-BN s/epoch", "BN share of Keras epoch",
               "lowest possible kbn/Keras"]


COMPARISON_COLUMNS = ["timed", "against", "timed ms", "against ms", "ratio", "paired 95% CI",
                      "A/A 95% CI", "vs A/A", "target", "met", "runs", "spread"]
SECTIONS = ["Layer: training step and inference forward",
            "Ghost batch norm (`virtual_batch_size=k`): training step",
            "Several axes (`axis=[1, 3]`): training step",
            "`model.fit` epochs (digits, batch 60)",
            "Peak memory (extra resident MiB over the run, fresh process per case)",
            "Other backends (JAX, PyTorch)"]


def _tables(report):
    """Every markdown table in `report`, as (header, rows) with cells stripped."""
    tables, current = [], None
    for line in report.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if current is None:
                current = (cells, [])
                tables.append(current)
            elif not set("".join(cells)) <= {"-"}:
                current[1].append(cells)
        else:
            current = None
    return tables


def _sections(report):
    """`report`'s "## " sections in order, as {title: text below the title}."""
    sections, title = {}, None
    for line in report.splitlines():
        if line.startswith("## "):
            title = line[3:]
            sections[title] = ""
        elif title is not None:
            sections[title] += line + "\n"
    return sections


def _check_comparison_table(text, case_columns, expected_rows):
    """The one table in `text`: columns, row count, parseable positive numbers,
    and "vs A/A" and "met" as the intervals, ratio and target say. Returns the rows
    as dicts column -> cell."""
    [(header, rows)] = _tables(text)
    assert header == case_columns + COMPARISON_COLUMNS
    assert len(rows) == expected_rows
    parsed = [dict(zip(header, row)) for row in rows]
    for row in parsed:
        for column in ("timed ms", "against ms", "ratio"):
            assert math.isfinite(float(row[column])) and float(row[column]) > 0, (column, row)
        low, high = (float(v) for v in row["paired 95% CI"].split("–"))
        aa_low, aa_high = (float(v) for v in row["A/A 95% CI"].split("–"))
        # Printed to 2 decimals: a noisy round's ratio below 0.005 prints as 0.00.
        assert 0 <= low <= high and 0 <= aa_low <= aa_high, row
        assert row["vs A/A"] in ("faster", "tie", "slower")
        if high < aa_low or low > aa_high:  # intervals printed apart: never a tie
            assert row["vs A/A"] == ("faster" if high < aa_low else "slower"), row
        elif high > aa_low and low < aa_high:  # overlapping even after rounding
            assert row["vs A/A"] == "tie", row
        met = row["met"].split(";")[0]
        if row["target"].startswith("tie or better"):
            assert met == ("no" if row["vs A/A"] == "slower" else "yes"), row
        else:
            bound = float(row["target"].split(";")[0].removeprefix("≤ "))
            if abs(float(row["ratio"]) - bound) > 0.005:  # not decided by the rounding
                assert met == ("yes" if float(row["ratio"]) < bound else "no"), row
        assert int(row["runs"]) >= 3
    return parsed


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.md"
    report = suite.main(["--quick", "--out", str(out)])
    assert out.read_text() == report
    return report


def test_header_describes_machine_and_command(quick_report):
    assert quick_report.startswith("# kbn vs Keras batch norm: benchmark")
    assert "logical cores" in quick_report
    state = "on" if _tf_fast.ONEDNN else "off"
    assert f"TensorFlow {tf.__version__} with oneDNN {state} (" in quick_report
    assert f"Keras {keras.__version__}" in quick_report
    assert "Command: `python -m benchmarks.suite --quick --out " in quick_report
    assert "Copy bandwidth" in quick_report


def test_report_has_every_section_in_order(quick_report):
    assert list(_sections(quick_report)) == SECTIONS


def test_layer_table_has_one_row_per_case(quick_report):
    header, rows = _tables(_sections(quick_report)[SECTIONS[0]])[0]
    assert header == LAYER_COLUMNS
    # Every shape × {train, infer} × {no XLA, XLA}.
    assert len(rows) == 4 * len(QUICK_SHAPES)
    cases = {(row[0], row[2], row[3]) for row in rows}
    assert len(cases) == len(rows)
    for row in rows:
        assert len(row) == len(header)
        assert row[2] in ("train", "infer") and row[3] in ("yes", "no")
        assert row[4] in ("fused", "compiled", "matmul", "generic")
        # Issue 14's targets: kbn/Keras ≤ 0.75 for a rank-2 training step of ≥ 100 K
        # elements without XLA, a tie or better everywhere else.
        rank2_train = (row[2] == "train" and row[3] == "no" and row[0].count("×") == 1
                       and int(row[1].replace(",", "")) >= 100_000)
        assert row[header.index("target")] == ("≤ 0.75" if rank2_train else "tie or better")
        assert row[header.index("vs A/A")] in ("faster", "tie", "slower")
        assert row[header.index("met")] in ("yes", "no")
        for column in ("Keras ms", "kbn ms", "kbn/Keras", "kbn GB/s", "kbn × floor"):
            value = float(row[header.index(column)])
            assert math.isfinite(value) and value > 0, (column, row)
        keras_ms, kbn_ms, ratio = (float(row[header.index(c)])
                                   for c in ("Keras ms", "kbn ms", "kbn/Keras"))
        # The table prints milliseconds and the ratio to 2 decimals: the ratio of the
        # printed times can be off by that rounding (0.14 / 0.15 for a measured 0.99).
        low = (kbn_ms - 0.005) / (keras_ms + 0.005) - 0.005
        high = (kbn_ms + 0.005) / max(keras_ms - 0.005, 1e-9) + 0.005
        assert low <= ratio <= high, (ratio, kbn_ms, keras_ms, row)
        for column in ("paired 95% CI", "A/A 95% CI"):
            low, high = (float(v) for v in row[header.index(column)].split("–"))
            assert 0 <= low <= high, (column, row)  # 2 decimals: may print 0.00


def test_fit_table_and_memory_section(quick_report):
    sections = _sections(quick_report)
    [(header, rows)] = _tables(sections[SECTIONS[3]])
    assert header == FIT_COLUMNS
    assert [row[0] for row in rows] == ["MLP"]
    assert float(rows[0][header.index("kbn/Keras")]) > 0
    # Quick mode: no memory probes, no other backends (each a fresh process).
    assert sections[SECTIONS[4]].strip() == "Skipped (--skip-memory or --quick)."
    assert sections[SECTIONS[5]].strip() == "Skipped (--skip-backends or --quick)."


def test_ghost_table_compares_with_kbn_plain_and_tf_keras(quick_report):
    text = _sections(quick_report)[SECTIONS[1]]
    # Every shape × k × {no XLA, XLA}, two ratios each.
    cases = len(ghost.QUICK_GHOST_SHAPES) * len(ghost.GHOST_SIZES) * 2
    rows = _check_comparison_table(text, ["shape", "k", "XLA", "kbn path"], 2 * cases)
    assert {row["kbn path"] for row in rows} <= {"fused", "compiled", "matmul", "generic"}
    assert {row["k"] for row in rows} == {"16", "32"}
    targets = {row["against"]: row["target"] for row in rows}
    assert targets == {"kbn": "≤ 1.25", "tf_keras ghost": "≤ 0.5"}
    assert {row["timed"] for row in rows} == {"kbn ghost"}
    assert len({(row["shape"], row["k"], row["XLA"], row["against"]) for row in rows}) == len(rows)


def test_multi_axis_table_compares_with_tf_keras(quick_report):
    text = _sections(quick_report)[SECTIONS[2]]
    rows = _check_comparison_table(text, ["shape", "axis", "XLA", "kbn path"],
                                   2 * len(multi_axis.QUICK_MULTI_AXIS_SHAPES))
    assert {row["kbn path"] for row in rows} <= {"fused", "matmul", "generic"}
    assert {(row["timed"], row["against"], row["axis"], row["target"]) for row in rows} == {
        ("kbn", "tf_keras", "[1, 3]", "tie or better")}
    assert {row["XLA"] for row in rows} == {"yes", "no"}


def test_skipping_features_fit_memory_and_backends_leaves_the_layer_table():
    text = suite.main(["--quick", "--skip-features", "--skip-fit"])
    sections = _sections(text)
    assert list(sections) == SECTIONS
    assert len(_tables(sections[SECTIONS[0]])) == 1
    for title in SECTIONS[1:3]:
        assert sections[title].strip().endswith("Skipped (--skip-features).")
    assert sections[SECTIONS[3]].strip().endswith("Skipped (--skip-fit).")


def _backend_available(backend):
    return backends.interpreter(backend) is not None


@pytest.mark.parametrize("backend", [
    "jax",
    pytest.param("torch", marks=pytest.mark.skipif(
        not _backend_available("torch"), reason="no torch here and no .venv-torch")),
])
def test_backends_entry_point_reports_each_backend(backend, tmp_path):
    out = tmp_path / "backends.md"
    text = backends.main(["--quick", "--backends", backend, "--out", str(out)])
    assert out.read_text() == text
    name = report.BACKEND_NAMES[backend]
    [(title, body)] = _sections(text).items()
    assert title == f"Backend {name}: training step and inference (kbn vs Keras)"
    assert f"Keras {keras.__version__} on {name} " in body
    rows = _check_comparison_table(body, ["shape", "elements", "mode"], 2 * len(QUICK_SHAPES))
    assert {(row["timed"], row["against"]) for row in rows} == {("kbn", "Keras")}
    assert {(row["shape"], row["mode"]) for row in rows} == {
        ("×".join(map(str, shape)), mode) for shape in QUICK_SHAPES for mode in ("train", "infer")}


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is importable")
def test_a_failing_backend_process_is_reported_with_its_last_line(monkeypatch):
    # This Python has no torch, so Keras's torch backend fails at import.
    monkeypatch.setattr(backends, "interpreter", lambda backend: sys.executable)
    result = backends.run_backend("torch", quick=True, log=lambda line: None)
    assert set(result) == {"backend", "failed"}
    assert result["failed"].startswith("its process failed (exit 1): ")
    assert "torch" in result["failed"]
    [section] = report.backend_sections([result])
    assert section[-1] == f"Failed: {result['failed']}."


def test_a_backend_without_its_library_is_skipped(monkeypatch):
    monkeypatch.setattr(backends, "interpreter", lambda backend: None)
    result = backends.run_backend("torch", quick=True, log=lambda line: None)
    assert result == {"backend": "torch",
                      "skipped": "neither this Python nor .venv-torch can import torch"}
    assert report.backend_sections([result])[0][-1] == f"Skipped: {result['skipped']}."


def test_backend_steps_refuses_the_tensorflow_backend(tmp_path, capsys):
    assert keras.backend.backend() == "tensorflow"
    with pytest.raises(SystemExit) as exit_info:
        backend_steps.main(["--quick", "--json", str(tmp_path / "results.json")])
    assert exit_info.value.code == 2
    assert "KERAS_BACKEND must be one of ('jax', 'torch')" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("backend, shape, mode, text", [
    ("jax", (1024, 100), "train", "tie or better"),
    ("jax", (64, 56, 56, 128), "infer", "tie or better; stretch ≤ 0.8"),
    ("jax", (8192, 2048), "train", "tie or better"),  # rank 2: no stretch goal
    ("torch", (1024, 100), "train", "≤ 0.4"),         # 102,400 ≥ 2^16
    ("torch", (16, 8, 8, 32), "train", "tie or better"),  # 32,768 < 2^16
    ("torch", (8192, 2048), "infer", "tie or better"),
])
def test_backend_targets_follow_issue_8(backend, shape, mode, text):
    assert backend_steps.target(backend, shape, mode).text() == text


@pytest.mark.parametrize("ci, aa_ci, expected", [
    ((0.50, 0.60), (0.95, 1.05), "faster"),
    ((0.90, 1.00), (0.95, 1.05), "tie"),
    ((1.06, 1.20), (0.95, 1.05), "slower"),
    ((1.05, 1.20), (0.95, 1.05), "tie"),  # touching intervals overlap
])
def test_verdict_compares_the_paired_interval_with_the_a_a_one(ci, aa_ci, expected):
    assert verdict(ci, aa_ci) == expected


@pytest.mark.parametrize("target, ratio, judged, met", [
    (Target(at_most=0.5), 0.49, "slower", "yes"),  # a bound is on the ratio alone
    (Target(at_most=0.5), 0.51, "faster", "no"),
    (TIE_OR_BETTER, 1.30, "tie", "yes"),
    (TIE_OR_BETTER, 0.90, "slower", "no"),
    (Target(stretch=0.8), 0.79, "faster", "yes; stretch yes"),
    (Target(stretch=0.8), 0.95, "tie", "yes; stretch no"),
])
def test_target_met(target, ratio, judged, met):
    assert target.met(ratio, judged) == met


def test_comparison_rows_pair_the_rounds():
    # Round i: "a" takes 1 + i ms, "b" twice that; the control drifts with "b".
    times = {"a": [1e-3 * (1 + i) for i in range(9)]}
    times["b"] = [2 * t for t in times["a"]]
    times["b again"] = [2.02 * t for t in times["a"]]
    medians = {name: sorted(t)[4] for name, t in times.items()}
    spreads = {"a": 0.1, "b": 0.2, "b again": 0.3}
    [row] = comparison_rows({"shape": "8×8"}, [Comparison("a", "b", "b again", Target(0.6))],
                            (medians, spreads, times))
    assert row["ratio"] == pytest.approx(0.5)
    assert row["ci"] == pytest.approx((0.5, 0.5))  # every round's ratio is 0.5, drift or not
    assert row["aa_ci"] == pytest.approx((1.01, 1.01))
    assert (row["verdict"], row["target"], row["met"]) == ("faster", "≤ 0.6", "yes")
    assert (row["timed_ms"], row["against_ms"]) == pytest.approx((5.0, 10.0))
    assert (row["reps"], row["spread"], row["case"]) == (9, 0.3, {"shape": "8×8"})


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                                reason="needs Linux /proc")


@pytest.fixture(scope="module")
def quick_memory_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("memory") / "memory.md"
    report = memory.main(["--quick", "--skip-fit", "--out", str(out)])
    assert out.read_text() == report
    return report


@needs_proc
def test_memory_entry_point_reports_one_row_per_step_shape(quick_memory_report):
    assert "Command: `python -m benchmarks.memory --quick --skip-fit --out " in quick_memory_report
    [(header, rows)] = _tables(quick_memory_report)
    assert header == ["case", "Keras MiB", "kbn MiB", "kbn/Keras"]
    assert [row[0] for row in rows] == ["4096×1024 train"] == [
        f"{'×'.join(map(str, shape))} train" for shape in memory.QUICK_MEMORY_SHAPES]
    assert all(float(cell) > 0 for cell in rows[0][1:])


@needs_proc
def test_memory_probe_sees_the_step_tensors(quick_memory_report):
    """A training step must hold at least its output and dx beside x: a 16 MiB
    input must peak at least one tensor's size above a 64 KiB one, for both layers."""
    [small] = memory.bench_memory([(256, 64)], [], log=lambda message: None)
    [(header, [large])] = _tables(quick_memory_report)
    tensor_mib = 4096 * 1024 * 4 / 2**20
    for key, column in (("keras_mib", "Keras MiB"), ("kbn_mib", "kbn MiB")):
        assert math.isfinite(small[key]) and small[key] >= 0
        large_mib = float(large[header.index(column)])
        assert large_mib - small[key] >= tensor_mib, (column, small, large)


@pytest.mark.parametrize("n, k, coverage", [
    (3, 1, 0.75),        # too few values for 95%: [min, max] and its true coverage
    (5, 1, 0.9375),
    (6, 1, 0.96875),
    (9, 2, 0.9609375),   # the 2nd smallest and 2nd largest: 1 - 2·(1 + 9)/512
    (60, 22, None),      # the textbook table: ranks 22 and 39 of 60
])
def test_median_ci_uses_binomial_order_statistics(n, k, coverage):
    values = [float(i) for i in range(n, 0, -1)]  # unsorted on purpose
    low, high, covered = median_ci(values)
    assert (low, high) == (float(k), float(n + 1 - k))
    if coverage is not None:
        assert covered == pytest.approx(coverage)
    assert covered >= 0.95 or k == 1


@pytest.mark.parametrize("count", [2, 3, 4])
def test_round_orders_put_each_name_in_each_position_in_turn(count):
    names = [f"layer{i}" for i in range(count)]
    orders = round_orders(names)
    assert all(sorted(order) == names for order in orders)
    for start in range(0, len(orders), count):  # any full block of `count` rounds
        block = orders[start:start + count]
        for position in range(count):
            assert sorted(order[position] for order in block) == names


def test_median_ci_rejects_empty():
    with pytest.raises(ValueError, match="at least one value"):
        median_ci([])


@pytest.mark.parametrize("spec, message", [
    ("not json", "Expecting value"),
    ('{"kind": "epoch", "layer": "kbn"}', '"kind" must be one of'),
    ('{"kind": "step", "layer": "kbn"}', "needs ['shape']"),
    ('{"kind": "fit", "layer": "torch", "model": "MLP"}', '"layer" must be one of'),
])
def test_memory_probe_rejects_a_bad_spec_in_one_line(spec, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        memory_probe.main([spec])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
