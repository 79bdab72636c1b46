"""docs/learn.ipynb: it runs from a clean kernel, its numbers are train.explain's, it is stored
with outputs, and the stored cells are the builder's (train/lesson/notebook.py)."""

import json
import time

import nbformat
import numpy as np
import pytest

from tests.tiny_runs import QUIET, run_python
from train import explain
from train.lesson import notebook

# The budget for one execution on this 2-core machine.
BUDGET_S = 180
# Appended to the executed copy: what the notebook's own variables hold, read back as JSON.
READ_BACK = """\
import json
print(json.dumps({
    "gamma_1": float(history.gamma[1]), "beta_1": float(history.beta[1]),
    "moving_mean_1": float(moving[args.momentum].moving_mean[0]),
    "moving_variance_1": float(moving[args.momentum].moving_variance[0]),
    "compare_status": status,
}))"""
# Cells that print train.explain's lines: (index in the notebook, the call it makes).
EXPLAIN_CELLS = {3: "explain.print_setup(args)",
                 5: 'explain.print_placement(steps["before"], args)',
                 9: 'explain.print_placement(steps["after"], args)',
                 17: "explain.print_why_inference_differs(args)"}


@pytest.fixture(scope="module")
def explain_stdout():
    """What `python -m train.explain` prints with its defaults, in a process of its own."""
    done = run_python("-m", "train.explain", env=QUIET)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The stored notebook's code, run from a clean kernel in an empty folder; and the seconds."""
    stored = nbformat.read(notebook.NOTEBOOK, as_version=4)
    stored.cells.append(nbformat.v4.new_code_cell(READ_BACK))
    start = time.perf_counter()
    notebook.execute(stored, cwd=str(tmp_path_factory.mktemp("notebook")))  # raises on any error
    return stored, time.perf_counter() - start


def _text(cell):
    return "".join(output.get("text", "") for output in cell.outputs
                   if output.output_type == "stream" and output.name == "stdout")


def test_stored_cells_are_the_builders():
    stored = nbformat.read(notebook.NOTEBOOK, as_version=4)
    built = notebook.build()
    assert [(c.cell_type, c.source) for c in stored.cells] == [
        (c.cell_type, c.source) for c in built.cells
    ], "docs/learn.ipynb is stale: run `make notebook`"


def test_every_code_cell_is_stored_with_its_outputs():
    stored = nbformat.read(notebook.NOTEBOOK, as_version=4)
    code = [cell for cell in stored.cells if cell.cell_type == "code"]
    missing = [cell.source.splitlines()[0] for cell in code
               if not cell.outputs or cell.execution_count is None]
    assert not missing, f"code cells without outputs: {missing}"
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert not errors
    assert len(list(notebook.pngs(stored))) == 6  # every figure, as a PNG


@pytest.mark.parametrize("index", sorted(EXPLAIN_CELLS))
def test_stored_explain_lines_are_train_explains(index, explain_stdout):
    cell = nbformat.read(notebook.NOTEBOOK, as_version=4).cells[index]
    assert EXPLAIN_CELLS[index] in cell.source  # the cell prints with train.explain itself
    text = _text(cell)
    assert text.strip() and text in explain_stdout


def test_notebook_runs_within_budget(executed):
    _, seconds = executed
    assert seconds <= BUDGET_S, f"{seconds:.0f} s"


def test_executed_explain_lines_are_train_explains(executed, explain_stdout):
    cells, _ = executed
    for index in EXPLAIN_CELLS:
        text = _text(cells.cells[index])
        assert text.strip() and text in explain_stdout, f"cell {index}"


def test_kbn_steps_in_the_notebook_match_the_hand_computed_ones(executed):
    cells, _ = executed
    values = json.loads(_text(cells.cells[-1]))
    step = explain.walk_through(explain.parse([]))["before"]
    expected = {"gamma_1": step.gamma, "beta_1": step.beta,
                "moving_mean_1": step.moving_mean, "moving_variance_1": step.moving_variance}
    for name, value in expected.items():
        assert explain.relative_difference(value, [values[name]]) <= explain.TOLERANCE, name
    assert values["compare_status"] == 0  # keras and kbn curves agree


def test_the_figures_are_pngs(executed):
    cells, _ = executed
    images = [data for _, data in notebook.pngs(cells)]
    assert len(images) == 6
    assert all(data.startswith(b"\x89PNG") and len(data) > 10_000 for data in images)
    assert np.mean([len(data) for data in images]) < 200_000  # small enough for a repository
