"""Builds docs/learn.ipynb: the lecture's cells, executed from a clean kernel, stored with outputs.

    make notebook                                  # = python -m train.lesson.notebook
    python -m train.lesson.notebook --png-dir /tmp/learn-png   # also every picture as a file

The notebook holds no arithmetic of its own: each cell calls the project
(train.explain for Algorithm 1, train/lesson/learning.py for the steps that
kbn.BatchNormalization takes, train/lesson/figures.py for the pictures,
train.recalibration and train.compare for the networks). It lives in a
module of train/lesson, not as a command at the top of train/, because only
`make notebook` and tests/test_notebook.py run it.
"""

import argparse
import base64
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(REPO, "docs", "learn.ipynb")
# Set while the notebook is built or tested: the TensorBoard cell then starts no server,
# which would outlive the kernel.
NO_TENSORBOARD = "KBN_NOTEBOOK_NO_TENSORBOARD"
# The longest cell (the comparison, ~50 s here) with a margin for a loaded machine.
CELL_TIMEOUT_S = 600
# The comparison: the `make run` network for 20 of its 60 epochs (~50 s on 2 cores).
COMPARE_EPOCHS = 20

CELLS = [
    ("markdown", """\
# Learn batch norm with kbn

The lecture on batch normalization (Ioffe & Szegedy 2015, [arXiv:1502.03167](https://arxiv.org/abs/1502.03167)),
cell by cell. Every number comes from the project's own code: `train.explain` does
Algorithm 1 by hand, `kbn.BatchNormalization` does the steps after it, and the plots are
the pipeline's.

Run it from the repository root (`jupyter notebook docs/learn.ipynb` after `make`), or
rebuild it with its outputs: `make notebook` (about 2 minutes on 2 cores)."""),
    ("code", """\
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up noise off
# Jupyter starts in docs/ when this file is opened there; the project lives one folder up.
if not os.path.isdir("train") and os.path.isdir(os.path.join("..", "train")):
    os.chdir("..")
sys.path.insert(0, os.getcwd())

from train import explain
from train.lesson import algorithm1, figures, learning
from train.options import backend

print("Keras backend:", backend.default(), " (KERAS_BACKEND=jax or torch before starting)")"""),
    ("markdown", """\
## 1. The placement batch and one neuron

Four students, their cgpa and iq, and whether they were placed (the lecture's table; the
fourth iq and the placed column are illustrative). One neuron of a hidden layer computes
z = w₁·cgpa + w₂·iq + b. These are the defaults of `python -m train.explain`."""),
    ("code", """\
args = explain.parse([])  # the flags of `python -m train.explain`, all defaults
steps = explain.walk_through(args)  # the float64 numbers for BN before and after g
explain.print_setup(args)"""),
    ("markdown", """\
## 2. Algorithm 1, step by step (BN before the activation)

μ_B, σ²_B, the normalized x̂ and y = γ·x̂ + β, then one SGD step on γ and β, the moving
statistics and inference on a new student: the lines `python -m train.explain` prints."""),
    ("code", """\
explain.print_placement(steps["before"], args)"""),
    ("markdown", """\
The same students before and after normalization, on the same scale: z sits wherever the
weights put it; x̂ has mean 0 and variance just under 1, whatever w and b were. The order
of the students and their relative distances stay as they were."""),
    ("code", """\
figures.show(figures.normalization(steps["before"], args.targets))"""),
    ("markdown", """\
## 3. BN before vs after the activation

The lecture's two ways: z → BN → g (the paper's) and z → g → BN. The same numbers, BN
after the sigmoid:"""),
    ("code", """\
explain.print_placement(steps["after"], args)"""),
    ("markdown", """\
Where the sigmoid's inputs land (circles and squares; the numbers are the students).
Before: g sees y = BN(z), centred on 0 where the sigmoid is steepest, whatever w and b are.
After: g sees z itself, wherever the weights put it (here mostly above 0, where the curve
starts to bend), and BN then stretches g(z) to mean 0, variance ≈ 1 for the next layer:
on the right, the next layer reads values in (0, 1) in one case and centred values in the
other."""),
    ("code", """\
figures.show(figures.sigmoid_inputs(steps, args.targets, args.activation_function))"""),
    ("markdown", """\
## 4. γ and β learn

γ and β start at 1 and 0 and are trained like any weight. `kbn.BatchNormalization` takes
SGD steps on the tiny loss with the same batch every step; its first step is the one
computed by hand above."""),
    ("code", """\
before = steps["before"]
history = learning.gamma_beta_history(
    before.x, args.targets, placement="before", activation=args.activation, lr=args.lr,
    steps=40, epsilon=args.epsilon, momentum=args.momentum)
print(f"after 1 step, kbn (float32):  γ = {history.gamma[1]:.4f}, β = {history.beta[1]:.4f}")
print(f"after 1 step, by hand:        γ = {before.gamma:.4f}, β = {before.beta:.4f}")
print(f"after {len(history.gamma) - 1} steps, kbn:           γ = {history.gamma[-1]:.4f},"
      f" β = {history.beta[-1]:.4f}, loss {history.loss[0]:.4f} → {history.loss[-1]:.4f}")
figures.show(figures.gamma_beta(history))"""),
    ("markdown", """\
γ grows: the loss wants the placed students' outputs nearer 1 and the others' nearer 0, so
the network undoes part of the normalization where that helps. BN normalizes, and γ, β let
the next layer have back any scale and shift it needs.

## 5. Moving averages vs batch statistics

In training a BN layer normalizes with each batch's own μ_B and σ²_B, and keeps moving
averages for inference:
moving ← momentum·moving + (1 − momentum)·batch. Here one `kbn.BatchNormalization` sees
300 batches of 4 students: the lecture's batch first, then random ones from the pipeline's
synthetic placement table (`--dataset placement`)."""),
    ("code", """\
from train.data.datasets import make_placement

students = make_placement(1000, seed=1).x
everyone = algorithm1.neuron_inputs(students, args.weight_values)
batches = [before.z] + [algorithm1.neuron_inputs(batch, args.weight_values)
                        for batch in learning.random_batches(students, batch_size=4,
                                                             count=299, seed=1)]
moving = {momentum: learning.moving_statistics_history(batches, momentum=momentum,
                                                       epsilon=args.epsilon)
          for momentum in (0.9, args.momentum)}
first = moving[args.momentum]
print(f"step 1, momentum {args.momentum:g}, kbn: moving_mean {first.moving_mean[0]:.4f},"
      f" moving_variance {first.moving_variance[0]:.4f}"
      f"  (by hand: {before.moving_mean:.4f}, {before.moving_variance:.4f})")
for momentum, averages in moving.items():
    print(f"step {len(batches)}, momentum {momentum:g}: moving_mean {averages.moving_mean[-1]:.4f},"
          f" moving_variance {averages.moving_variance[-1]:.4f}"
          f"  (all 1000 students: {everyone.mean():.4f}, {everyone.var():.4f})")
figures.show(figures.moving_statistics(moving, everyone.mean(), everyone.var(), batch_size=4))"""),
    ("markdown", """\
With momentum 0.9 the averages come near the data set's values within a few dozen steps
and then jitter with the batches; with 0.99 they are smoother but still on their way after
hundreds of steps. The moving variance settles below the whole data set's: it averages
the biased σ²_B (1/m), whose expectation is (m − 1)/m of the variance, ¾ for m = 4 (the
paper's inference uses m/(m − 1) times it; `kbn.recalibrate(..., unbiased=True)` does that).

The lag is why inference differs from training at the start:"""),
    ("code", """\
explain.print_why_inference_differs(args)"""),
    ("markdown", """\
The same on a real network: the `make run` network (digits, three hidden layers of 100
sigmoid units, BN before each) trained for a few steps, then validated in inference mode
with the moving averages, and again after `kbn.recalibrate` recomputed the statistics over
the training data with the trained network (the paper's Algorithm 2). This is
`train.recalibration`'s measurement, one seed."""),
    ("code", """\
from train import recalibration
from train.data.datasets import load_dataset

gap_args = recalibration.parse_args(["--steps", "5,20,60,200", "--seeds", "1"])
digits = load_dataset("digits", seed=1, input_norm="unit")
gap = {momentum: recalibration.one_run(digits, gap_args, momentum, seed=1)
       for momentum in (0.9, 0.99)}
print("momentum  steps  moving averages  recalibrated")
for momentum, by_steps in gap.items():
    for count in gap_args.steps:
        with_moving, recalibrated = by_steps[count][:2]
        print(f"{momentum:<8g}  {count:>5}  {with_moving:>15.3f}  {recalibrated:>12.3f}")
figures.show(figures.inference_gap(gap, gap_args.steps))"""),
    ("markdown", """\
With the moving averages the network looks untrained in inference mode long after it has
learned, the longer the closer the momentum is to 1. The recalibrated accuracies are the
same for both momenta: training normalizes with each batch's own statistics, so the
momentum changes only the moving averages, never the weights."""),
    ("markdown", """\
## 6. The `make run` comparison, smaller

No BN vs Keras's BN vs kbn's BN on the offline digits, the same initial weights and batches:
`python -m train.compare` with 20 of its 60 epochs (about a minute). The plot is the one
`make run` writes: validation accuracy, training loss, and the 15th, 50th and 85th
percentiles of the last hidden layer's sigmoid input over training (the paper's
Fig. 1b, c)."""),
    ("code", f"""\
import glob

from IPython.display import Image

from train import compare

LOGDIR = os.path.join("logs", "notebook")
status = compare.main(["--epochs", "{COMPARE_EPOCHS}", "--run-name", "learn", "--logdir", LOGDIR])
print("exit status", status)
Image(filename=sorted(glob.glob(os.path.join(LOGDIR, "compare", "*-learn.png")))[-1])"""),
    ("markdown", """\
Read the table and the plot: without BN the network at lr 1 starts learning late; with BN
it reaches the target accuracy within a few epochs, and Keras's and kbn's curves are the
same (the exit status is 0 when they agree within 1e-3). Below, without BN the last
sigmoid's input percentiles drift over training; with BN they stay put. Where the run reports a
train/inference gap, that is section 5's lag of the moving averages.

## 7. TensorBoard, inline

The runs above wrote TensorBoard logs. With TensorBoard's notebook extension this cell shows
them here (`%load_ext tensorboard`, then `%tensorboard --logdir logs/notebook/compare`);
elsewhere, `make tensorboard` serves all of logs/."""),
    ("code", f"""\
if os.environ.get("{NO_TENSORBOARD}"):
    print("TensorBoard is not started while the notebook is built (make notebook) or tested;"
          " run this cell in Jupyter, or `make tensorboard`.")
else:
    try:
        get_ipython().run_line_magic("load_ext", "tensorboard")
        get_ipython().run_line_magic("tensorboard", f"--logdir {{LOGDIR}}/compare")
    except Exception as error:  # no extension, no server: say so and go on
        print(f"TensorBoard inline is not available here ({{error}}); try `make tensorboard`.")"""),
    ("markdown", """\
## 8. What to try

- **Learning rate**: `explain.parse(["--lr", "5"])` in section 1; in section 6 add
  `"--lr", "0.1"` or `"--lr", "10"`: which variant still learns?
- **Batch size**: `"--batch-size", "8"` or `"600"` in section 6; `batch_size=2` in section 5
  (the batch statistics jump more, the moving averages less).
- **Placement**: `"--bn-position", "after"` in section 6 (BN after the sigmoid);
  `"--activation", "tanh"` in section 1.
- **Momentum**: other momenta in section 5 (`(0.5, 0.9, 0.999)`) and in the recalibration
  cell; `"--bn-momentum", "0.9"` in section 6.
- **Your own students**: in section 1,
  `explain.parse(["--batch", "8.9,100;6.2,89;9.1,76", "--placed", "1,0,1"])`."""),
]


def build():
    """The notebook, unexecuted (nbformat v4)."""
    import nbformat

    make = {"markdown": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell}
    notebook = nbformat.v4.new_notebook(cells=[make[kind](source) for kind, source in CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def execute(notebook, cwd, timeout=CELL_TIMEOUT_S):
    """Runs every cell in a fresh "python3" kernel started in `cwd`; raises on a cell's error."""
    import nbclient

    os.environ[NO_TENSORBOARD] = "1"
    # The kernel imports train/ from the repository, wherever it starts.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [REPO, *filter(None, [os.environ.get("PYTHONPATH")])])
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     record_timing=False, resources={"metadata": {"path": cwd}})
    client.execute()
    coalesce_streams(notebook)
    return notebook


def coalesce_streams(notebook):
    """Joins each cell's consecutive stdout (or stderr) outputs into one, as Jupyter shows them."""
    for cell in notebook.cells:
        merged = []
        for output in cell.get("outputs", []):
            previous = merged[-1] if merged else None
            if (output.output_type == "stream" and previous is not None
                    and previous.output_type == "stream" and previous.name == output.name):
                previous.text += output.text
            else:
                merged.append(output)
        if cell.cell_type == "code":
            cell.outputs = merged


def pngs(notebook):
    """Every PNG output, in cell order: (cell index, PNG bytes)."""
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                yield index, base64.b64decode(data["image/png"])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m train.lesson.notebook",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=NOTEBOOK, help="(default: docs/learn.ipynb)")
    parser.add_argument("--png-dir", help="also write every picture here, cell<i>.png")
    args = parser.parse_args(argv)
    import nbformat

    start = time.perf_counter()
    notebook = execute(build(), cwd=REPO)
    nbformat.write(notebook, args.output)
    print(f"{args.output}: {len(notebook.cells)} cells, {os.path.getsize(args.output)} bytes,"
          f" executed in {time.perf_counter() - start:.0f} s")
    if args.png_dir:
        os.makedirs(args.png_dir, exist_ok=True)
        for index, data in pngs(notebook):
            path = os.path.join(args.png_dir, f"cell{index:02d}.png")
            with open(path, "wb") as f:
                f.write(data)
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
