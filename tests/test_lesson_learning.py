"""train/lesson/learning.py: kbn's steps agree with the hand arithmetic and the closed forms."""

import numpy as np
import pytest

from train import explain
from train.lesson import learning

# float32 layer vs float64 arithmetic, as in train.explain (its TOLERANCE says why).
TOLERANCE = explain.TOLERANCE


@pytest.fixture(scope="module")
def lecture():
    args = explain.parse([])
    return args, explain.walk_through(args)


@pytest.mark.parametrize("placement", ["before", "after"])
def test_first_sgd_step_is_train_explains(lecture, placement):
    args, steps = lecture
    step = steps[placement]
    history = learning.gamma_beta_history(step.x, args.targets, placement=placement,
                                          activation=args.activation, lr=args.lr, steps=3,
                                          epsilon=args.epsilon, momentum=args.momentum)
    assert len(history.gamma) == len(history.beta) == len(history.loss) == 4
    assert (history.gamma[0], history.beta[0]) == (1.0, 0.0)
    assert abs(history.loss[0] - step.loss) <= TOLERANCE
    assert abs(history.gamma[1] - step.gamma) <= TOLERANCE
    assert abs(history.beta[1] - step.beta) <= TOLERANCE
    assert history.loss[-1] < history.loss[0]  # SGD on γ, β lowers the tiny loss


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_moving_statistics_of_one_batch_follow_the_closed_form(lecture, momentum):
    _, steps = lecture
    step = steps["before"]
    history = learning.moving_statistics_history([step.z] * 5, momentum=momentum)
    n = np.arange(1, 6)
    # From (0, 1), n updates with the same μ_B, σ²_B: moving = start·mⁿ + (1 − mⁿ)·batch.
    np.testing.assert_allclose(history.moving_mean, (1 - momentum**n) * step.mean,
                               rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(history.moving_variance,
                               momentum**n + (1 - momentum**n) * step.variance,
                               rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(history.batch_mean, step.mean)
    np.testing.assert_allclose(history.batch_variance, step.variance)


def test_random_batches_draw_distinct_rows_of_each_batch():
    rows = np.arange(20)[:, None]
    batches = learning.random_batches(rows, batch_size=4, count=50, seed=3)
    assert len(batches) == 50
    assert all(batch.shape == (4, 1) and len(set(batch[:, 0])) == 4 for batch in batches)
    again = learning.random_batches(rows, batch_size=4, count=50, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
