"""Batch norm over several steps, done by `kbn.BatchNormalization`: what docs/learn.ipynb plots.

    from train.lesson import algorithm1, learning
    history = learning.gamma_beta_history(z, placed, placement="before",
                                          activation="sigmoid", lr=1.0, steps=20)
    moving = learning.moving_statistics_history(batches_of_z, momentum=0.99)

`train.explain` shows one step by hand (train/lesson/algorithm1.py); these run
the real layer for many: γ and β trained by SGD on the tiny loss
L = (1/2m) Σ (output − placed)², and the moving mean and variance that a
layer keeps while it normalizes with each batch's own statistics. Step 1 of
each equals the numbers `train.explain` prints (tests/test_notebook.py).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class GammaBetaHistory:
    """γ, β and the loss before each SGD step and after the last (steps + 1 entries)."""

    gamma: np.ndarray
    beta: np.ndarray
    loss: np.ndarray


@dataclasses.dataclass(frozen=True)
class MovingStatisticsHistory:
    """One entry per training step: the batch's μ_B, σ²_B and the moving averages after it."""

    batch_mean: np.ndarray
    batch_variance: np.ndarray
    moving_mean: np.ndarray
    moving_variance: np.ndarray


def gamma_beta_history(x, placed, *, placement, activation, lr, steps, epsilon=1e-3,
                       momentum=0.99):
    """SGD on γ and β of one `kbn.BatchNormalization` neuron, the same batch every step.

    Args:
        x: BN's input for the batch, shape (m,): z before the activation, g(z) after it.
        placed: The tiny loss's targets, shape (m,).
        placement: "before" (BN → activation, the loss reads g(y)) or "after" (it reads y).
        activation: A Keras activation name ("sigmoid", "tanh", ...).
        lr: SGD learning rate.
        steps: How many SGD steps.
        epsilon, momentum: The layer's ε and moving-average momentum.

    Returns:
        A `GammaBetaHistory`.
    """
    import keras

    import kbn
    from kbn._variables import restored_variables
    from train.lesson.autodiff import call_with_gradients

    layer = kbn.BatchNormalization(momentum=momentum, epsilon=epsilon)
    after = [keras.layers.Activation(activation)] if placement == "before" else []
    model = keras.Sequential([keras.Input((1,)), layer, *after])
    x = np.asarray(x, dtype="float32")[:, None]
    targets = np.asarray(placed, dtype="float32")[:, None]
    optimizer = keras.optimizers.SGD(learning_rate=lr)
    gammas, betas, losses = [], [], []

    def look():
        """Records γ, β and the loss; returns the output, for dL/d(output)."""
        with restored_variables(model):  # a look only: the moving statistics stay
            output = keras.ops.convert_to_numpy(model(x, training=True))
        gammas.append(float(keras.ops.convert_to_numpy(layer.gamma)[0]))
        betas.append(float(keras.ops.convert_to_numpy(layer.beta)[0]))
        losses.append(float(np.sum((output - targets) ** 2) / (2 * len(x))))
        return output

    output = look()
    for _ in range(steps):
        upstream = (output - targets) / len(x)
        _, _, gradients = call_with_gradients(model, x, upstream, training=True)
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in gradients],
                        [layer.gamma, layer.beta])
        output = look()
    return GammaBetaHistory(np.array(gammas), np.array(betas), np.array(losses))


def moving_statistics_history(batches, *, momentum, epsilon=1e-3):
    """Feeds each batch to a fresh `kbn.BatchNormalization` in training mode; records its state.

    Args:
        batches: An iterable of arrays of shape (m,), one neuron's inputs per batch.
        momentum, epsilon: The layer's.

    Returns:
        A `MovingStatisticsHistory`; the moving averages start at (0, 1) before step 1.
    """
    import keras

    import kbn

    layer = kbn.BatchNormalization(momentum=momentum, epsilon=epsilon)
    means, variances, moving_means, moving_variances = [], [], [], []
    for batch in batches:
        batch = np.asarray(batch, dtype=np.float64)
        layer(batch[:, None].astype("float32"), training=True)
        means.append(np.mean(batch))
        variances.append(np.var(batch))
        moving_means.append(float(keras.ops.convert_to_numpy(layer.moving_mean)[0]))
        moving_variances.append(float(keras.ops.convert_to_numpy(layer.moving_variance)[0]))
    return MovingStatisticsHistory(*(np.array(v) for v in
                                     (means, variances, moving_means, moving_variances)))


def random_batches(rows, *, batch_size, count, seed):
    """`count` batches of `batch_size` rows drawn without replacement within each batch."""
    rng = np.random.default_rng(seed)
    rows = np.asarray(rows)
    return [rows[rng.choice(len(rows), batch_size, replace=False)] for _ in range(count)]
