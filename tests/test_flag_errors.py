"""Every command's bad flag values: one line naming the flag, exit 2, nothing written, no Keras.

Each case runs `python -m train.<command> <flags>` in a fresh process, as a
user would. The flags are checked before Keras or TensorFlow is imported, so a
usage error costs ~0.2 s, not the ~7 s of Keras's import: the process reports
which of them it imported, and only --activation (a Keras name) may need Keras.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Commands that write under --logdir get a fresh one; it must hold no file afterwards.
WRITERS = ("train", "compare", "lr_sweep", "paper")

BAD = [
    ("train", ["--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    ("train", ["--lr", "inf"], "--lr must be > 0, got inf"),
    ("train", ["--momentum", "1.5"], "--momentum must be in [0, 1], got 1.5"),
    ("train", ["--momentum", "nan"], "--momentum must be in [0, 1], got nan"),
    ("train", ["--bn-momentum", "nan"], "--bn-momentum must be in [0, 1], got nan"),
    ("train", ["--bn-epsilon", "inf"], "--bn-epsilon must be > 0, got inf"),
    ("train", ["--seed", "-1"], "--seed -1: seeds must be in [0, 2**32 - 1]"),
    ("train", ["--seed", "4294967296"], "--seed 4294967296: seeds must be in [0, 2**32 - 1]"),
    ("train", ["--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
    ("train", ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("train", ["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    ("train", ["--hidden", "8,x"], "--hidden '8,x': expected widths like 100,100,100"),
    ("train", ["--validation-split", "nan"], "--validation-split must be in (0, 1), got nan"),
    ("train", ["--target-accuracy", "0"], "--target-accuracy must be in (0, 1], got 0.0"),
    ("train", ["--shift-every", "0"], "--shift-every must be >= 1, got 0"),
    ("train", ["--batch-log-every", "x"], "argument --batch-log-every: invalid int value"),
    ("train", ["--experiment", "/elsewhere"], "--experiment '/elsewhere': expected a folder name"),
    ("train", ["--experiment", ".."], "--experiment '..': expected a folder name"),
    ("train", ["--run-name", "a/b"], "--run-name 'a/b': expected a folder name"),
    ("train", ["--run-name", ""], "--run-name '': expected a folder name"),
    ("train", ["--strategy", "mirrored", "--devices", "0"], "--devices must be >= 1, got 0"),
    ("train", ["--workers", "2"], "--workers needs --strategy multi-worker"),
    ("train", ["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
    ("train", ["--data", "/nonexistent.csv"], "--data /nonexistent.csv: no such readable file"),
    ("train", ["--backend", "theano"], "argument --backend: invalid choice: 'theano'"),
    ("train", ["--resume", "/nonexistent"], "--resume /nonexistent: not a run folder"),
    ("train", ["--activation", "wiggle"], "--activation 'wiggle' is not a Keras activation"),
    ("compare", ["--lr", "nan"], "--lr must be > 0, got nan"),
    ("compare", ["--seed", "-3"], "--seed -3: seeds must be in"),
    ("compare", ["--bn", "kbn"], "ambiguous option: --bn could match"),
    ("lr_sweep", ["--lrs", "0.1,inf"], "--lrs '0.1,inf': values must be > 0 and finite"),
    ("lr_sweep", ["--lrs", "a"], "--lrs 'a': expected numbers like 0.1,1,10"),
    ("lr_sweep", ["--variants", ""], "--variants '': unknown ''"),
    ("lr_sweep", ["--variants", "kbn,batch"], "--variants 'kbn,batch': unknown 'batch'"),
    ("lr_sweep", ["--lr", "0.5"], "--lr 0.5: lr_sweep trains at each of --lrs"),
    ("paper", ["--only", "E99"], "--only 'E99': unknown E99"),
    ("paper", ["--seeds", ""], "--seeds '': expected integers"),
    ("paper", ["--seeds", "1,1"], "--seeds '1,1': seeds must be distinct"),
    ("paper", ["--seeds", "4294967296"], "--seeds 4294967296: seeds must be in"),
    ("explain", ["--batch", "8.9;6.2"], "--batch '8.9;6.2': student 1 has 1 value;"),
    ("explain", ["--weights", "1,2"], "--weights '1,2': expected 3 numbers"),
    ("explain", ["--epsilon", "inf"], "--epsilon must be > 0, got inf"),
    ("explain", ["--momentum", "2"], "--momentum must be in [0, 1], got 2.0"),
    ("explain", ["--student", "a"], "--student 'a': not numbers"),
    ("explain", ["--placed", "1,0"], "--placed '1,0': expected 4 numbers"),
    ("recalibration", ["--steps", "0,abc"], "--steps '0,abc': expected step counts"),
    ("recalibration", ["--steps", "0"], "--steps 0: counts must be >= 1"),
    ("recalibration", ["--bn-momentums", "2"], "--bn-momentums 2.0: each must be in [0, 1]"),
    ("recalibration", ["--seeds", "-1"], "--seeds -1: seeds must be in [0, 2**32 - 1]"),
    ("recalibration", ["--lr", "inf"], "--lr must be > 0, got inf"),
    ("recalibration", ["--batch-size", "1"], "--batch-size must be >= 2, got 1"),
    ("diff_runs", ["/nonexistent", "/nonexistent"], "/nonexistent: not a finished run folder"),
    ("diff_runs", ["--backend", "theano", "a", "b"], "argument --backend: invalid choice"),
]

# Prints, as the process ends, which heavy modules it imported.
RUN = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
finally:
    print(" ".join(m for m in ("keras", "tensorflow", "jax", "torch") if m in sys.modules))
"""


@pytest.mark.parametrize("command, flags, expected", BAD,
                         ids=[f"{c} {' '.join(f)}" for c, f, _ in BAD])
def test_a_bad_value_is_one_line_naming_its_flag(command, flags, expected, tmp_path):
    logdir = ["--logdir", str(tmp_path)] if command in WRITERS else []
    done = subprocess.run([sys.executable, "-c", RUN, f"train.{command}", *flags, *logdir],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert done.stderr.startswith(f"python -m train.{command}: error: ")
    assert expected in done.stderr
    imported = done.stdout.split()
    assert ("keras" in imported) if "--activation" in flags else imported == [], imported
    assert [files for _, _, files in os.walk(tmp_path) if files] == []  # nothing written
