"""python -m train.explain: its printed numbers against an independent float64 NumPy computation.

The reference below is written from the paper's Algorithm 1 and the chain rule,
without train.lesson.algorithm1. Printed numbers have 4 decimals, so they are held to
half a unit of the last digit (5e-5, plus float64 noise).
"""

import re

import numpy as np
import pytest

from tiny_runs import run_python
from train import explain

pytestmark = pytest.mark.all_backends

PRINTED = 5e-5 + 1e-12


def reference(features, placed, weights, epsilon, momentum, lr, student, activation, placement):
    """Algorithm 1 on one neuron, one SGD step on (1/2m) Σ (p − t)², moving update, inference."""
    g, dg = {
        "sigmoid": (lambda v: 1 / (1 + np.exp(-v)), lambda v: np.exp(-v) / (1 + np.exp(-v)) ** 2),
        "tanh": (np.tanh, lambda v: 1 / np.cosh(v) ** 2),
    }[activation]
    w1, w2, b = weights
    features = np.array(features, dtype=np.float64)
    z = features @ np.array([w1, w2]) + b
    x = z if placement == "before" else g(z)
    m = x.size
    mean = x.mean()
    variance = ((x - mean) ** 2).mean()
    x_hat = (x - mean) / np.sqrt(variance + epsilon)
    y = x_hat  # γ = 1, β = 0
    p = g(y) if placement == "before" else y
    dy = (p - np.array(placed)) / m * (dg(y) if placement == "before" else 1.0)
    gamma = 1 - lr * np.dot(dy, x_hat)
    beta = 0 - lr * dy.sum()
    moving_mean = (1 - momentum) * mean
    moving_variance = momentum + (1 - momentum) * variance
    new_z = w1 * student[0] + w2 * student[1] + b
    new_x = new_z if placement == "before" else g(new_z)
    return {
        "z": z,
        "mean": mean,
        "variance": variance,
        "std": np.sqrt(variance + epsilon),
        "x_hat": x_hat,
        "loss": ((p - np.array(placed)) ** 2).sum() / (2 * m),
        "grad_gamma": np.dot(dy, x_hat),
        "grad_beta": dy.sum(),
        "gamma": gamma,
        "beta": beta,
        "y_after": gamma * x_hat + beta,
        "moving_mean": moving_mean,
        "moving_variance": moving_variance,
        "inference_moving": gamma * (new_x - moving_mean) / np.sqrt(moving_variance + epsilon)
        + beta,
        "inference_batch": gamma * (new_x - mean) / np.sqrt(variance + epsilon) + beta,
    }


def section(text, placement):
    """The printed lines of one placement's walk-through."""
    before, after = text.split("== BN after the activation")
    return before.split("== BN before the activation")[1] if placement == "before" else after


def last_number(line):
    return float(re.findall(r"-?\d+\.\d+", line)[-1])


def printed_values(text, placement):
    """The result (last number) of each printed step of one placement."""
    lines = section(text, placement).splitlines()

    def find(prefix):
        return last_number(find_line(lines, prefix))

    return {
        "mean": find("2. batch mean"),
        "variance": find("3. batch variance"),
        "std": find("4. denominator"),
        "x_hat": np.array([last_number(line) for line in lines if line.strip().startswith("x̂")
                           and "= (" in line]),
        "loss": find("8. one SGD step"),
        "grad_gamma": find("∂L/∂γ"),
        "grad_beta": find("∂L/∂β"),
        # "γ ← 1 − lr·(∂L/∂γ) = γ'      β ← 0 − lr·(∂L/∂β) = β'" on one line
        "gamma": float(re.findall(r"= (-?\d+\.\d+)", find_line(lines, "γ ←"))[0]),
        "beta": float(re.findall(r"= (-?\d+\.\d+)", find_line(lines, "γ ←"))[1]),
        "y_after": np.array([float(v) for v in re.findall(
            r"y[₀-₉]+ = (-?\d+\.\d+)", find_line(lines, "so the same batch"))]),
        "moving_mean": find("moving_mean"),
        "moving_variance": find("moving_variance"),
        "inference_moving": find("moving statistics: y"),
        "inference_batch": find("batch statistics:  y"),
    }


def find_line(lines, prefix):
    (line,) = [line for line in lines if line.strip().startswith(prefix)]
    return line


CASES = {
    "default": ([], dict(features=[[8.9, 100], [6.2, 89], [9.1, 76], [7.7, 95]],
                         placed=[1, 0, 1, 0], weights=(0.5, 0.02, -5), epsilon=1e-3,
                         momentum=0.99, lr=1.0, student=(8.0, 90), activation="sigmoid")),
    "three students, tanh": (
        ["--batch", "7,120;9.5,80;6,100", "--placed", "0,1,1", "--weights", "0.3,-0.01,-1",
         "--epsilon", "0.01", "--momentum", "0.9", "--lr", "0.5", "--activation", "tanh",
         "--student", "9,110"],
        dict(features=[[7, 120], [9.5, 80], [6, 100]], placed=[0, 1, 1],
             weights=(0.3, -0.01, -1), epsilon=0.01, momentum=0.9, lr=0.5, student=(9, 110),
             activation="tanh"),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_printed_numbers_match_an_independent_numpy_computation(case, capsys):
    argv, settings = CASES[case]
    status = explain.main(argv)
    text = capsys.readouterr().out
    assert status == 0
    assert "all three agree" in text
    z_lines = [line for line in text.splitlines() if re.match(r"\s+z[₀-₉]+ = ", line)]
    for placement in ("before", "after"):
        expected = reference(**settings, placement=placement)
        np.testing.assert_allclose([last_number(line) for line in z_lines], expected["z"],
                                   rtol=0, atol=PRINTED)
        printed = printed_values(text, placement)
        for name, value in printed.items():
            np.testing.assert_allclose(value, expected[name], rtol=0, atol=PRINTED,
                                       err_msg=f"{placement}: {name}")


def test_the_check_catches_a_wrong_number(monkeypatch, capsys):
    """Regression guard for the check itself: a wrong float64 result must give DISAGREE, exit 1."""
    original = explain.expected_results

    def off_by_a_little(step):
        values = original(step)
        values["moving_variance"] = values["moving_variance"] + 1e-3
        return values

    monkeypatch.setattr(explain, "expected_results", off_by_a_little)
    assert explain.main([]) == 1
    assert "DISAGREE" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch", "8.9,100"], "--batch '8.9,100': needs at least 2 students"),
        (["--batch", "8.9,abc;6.2,89"], "--batch student 1 '8.9,abc': not numbers"),
        (["--batch", "8.9,100,1;6.2,89,0"], "student 1 has 3 values; each needs 2"),
        (["--batch", "8.9;6.2"], "student 1 has 1 value; each needs 2"),
        (["--batch", "nan,100;6.2,89"], "numbers must be finite"),
        (["--epsilon", "0"], "--epsilon must be > 0, got 0.0"),
        (["--epsilon=-1e-3"], "--epsilon must be > 0, got -0.001"),
        (["--momentum", "1.5"], "--momentum must be in [0, 1], got 1.5"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--weights", "1,2"], "--weights '1,2': expected 3 numbers"),
        (["--placed", "1,0"], "--placed '1,0': expected 4 numbers"),
        (["--activation", "softmax"], "invalid choice: 'softmax'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        explain.parse(argv)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_command_line_exit_status_and_no_traceback():
    done = run_python("-m", "train.explain", "--batch", "8.9,100")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("python -m train.explain: error: --batch")
    assert done.stdout == ""
