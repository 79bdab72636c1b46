"""Smoke tests of the benchmarks (`benchmarks/`).

They run the quick modes of the entry points and check the reports'
structure: sections, columns, one row per case, parseable numbers. They never
assert timings — those belong to the benchmark's output, not to a test on a
shared machine.
"""

import math
import os

import keras
import pytest
import tensorflow as tf

from benchmarks import memory, memory_probe, suite
from benchmarks.intervals import median_ci
from benchmarks.layer_steps import QUICK_SHAPES
from benchmarks.timing import round_orders

LAYER_COLUMNS = ["shape", "elements", "mode", "XLA", "kbn path", "Keras ms", "kbn ms",
                 "kbn/Keras", "paired 95% CI", "A/A 95% CI", "kbn GB/s", "kbn × floor",
                 "Keras × floor", "runs", "spread"]
FIT_COLUMNS = ["model", "epochs timed", "jit_compile", "Keras s/epoch", "kbn s/epoch", "kbn/Keras",
               "paired 95% CI", "A/A 95% CI", "no-BN s/epoch", "BN share of Keras epoch",
               "lowest possible kbn/Keras"]


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


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.md"
    report = suite.main(["--quick", "--out", str(out)])
    assert out.read_text() == report
    return report


def test_header_describes_machine_and_command(quick_report):
    assert quick_report.startswith("# kbn vs Keras batch norm: benchmark")
    assert "logical cores" in quick_report
    assert f"TensorFlow {tf.__version__}" in quick_report
    assert f"Keras {keras.__version__}" in quick_report
    assert "Command: `python -m benchmarks.suite --quick --out " in quick_report
    assert "Copy bandwidth" in quick_report


def test_layer_table_has_one_row_per_case(quick_report):
    header, rows = _tables(quick_report)[0]
    assert header == LAYER_COLUMNS
    # Every shape × {train, infer} × {no XLA, XLA}.
    assert len(rows) == 4 * len(QUICK_SHAPES)
    cases = {(row[0], row[2], row[3]) for row in rows}
    assert len(cases) == len(rows)
    for row in rows:
        assert len(row) == len(header)
        assert row[2] in ("train", "infer") and row[3] in ("yes", "no")
        assert row[4] in ("fused", "matmul", "generic")
        for column in ("Keras ms", "kbn ms", "kbn/Keras", "kbn GB/s", "kbn × floor"):
            value = float(row[header.index(column)])
            assert math.isfinite(value) and value > 0, (column, row)
        keras_ms, kbn_ms, ratio = (float(row[header.index(c)])
                                   for c in ("Keras ms", "kbn ms", "kbn/Keras"))
        assert ratio == pytest.approx(kbn_ms / keras_ms, rel=0.05, abs=0.01)
        for column in ("paired 95% CI", "A/A 95% CI"):
            low, high = (float(v) for v in row[header.index(column)].split("–"))
            assert 0 < low <= high, (column, row)


def test_fit_table_and_memory_section(quick_report):
    tables = _tables(quick_report)
    assert len(tables) == 2  # quick mode: no memory table
    header, rows = tables[1]
    assert header == FIT_COLUMNS
    assert [row[0] for row in rows] == ["MLP"]
    assert float(rows[0][header.index("kbn/Keras")]) > 0
    assert "Skipped (--skip-memory or --quick)." in quick_report


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_memory_probe_sees_the_step_tensors():
    """A training step must hold at least its output and dx beside x: a 16 MiB
    input must peak at least one tensor's size above a 64 KiB one, for both layers."""
    small, large = memory.bench_memory([(256, 64), (4096, 1024)], [], log=lambda message: None)
    tensor_mib = 4096 * 1024 * 4 / 2**20
    for column in ("keras_mib", "kbn_mib"):
        assert math.isfinite(small[column]) and small[column] >= 0
        assert large[column] - small[column] >= tensor_mib, (column, small, large)


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


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_memory_entry_point_reports_one_row_per_step_shape(tmp_path):
    out = tmp_path / "memory.md"
    report = memory.main(["--quick", "--skip-fit", "--out", str(out)])
    assert out.read_text() == report
    assert "Command: `python -m benchmarks.memory --quick --skip-fit --out " in report
    [(header, rows)] = _tables(report)
    assert header == ["case", "Keras MiB", "kbn MiB", "kbn/Keras"]
    assert [row[0] for row in rows] == ["4096×1024 train"]
    assert all(float(cell) > 0 for cell in rows[0][1:])


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
