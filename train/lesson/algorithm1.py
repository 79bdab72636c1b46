"""Algorithm 1 (Ioffe & Szegedy 2015) on one neuron in float64 NumPy: what `train.explain` prints.

    from train.lesson import algorithm1
    z = algorithm1.neuron_inputs(batch, weights=(0.5, 0.02, -5.0))
    steps = algorithm1.batch_norm_step(z, placed, placement="before", activation="sigmoid",
                                       epsilon=1e-3, momentum=0.99, lr=1.0, new_input=0.8)

One neuron of a hidden layer sees, for a batch of m students (cgpa, iq),

    z_i = w₁·cgpa_i + w₂·iq_i + b

and batch norm sits either before its activation g (z → BN → g, the paper's
placement) or after it (z → g → BN). Whichever it is, BN's input x_i goes
through

    μ_B  = (1/m) Σ x_i                        batch mean
    σ²_B = (1/m) Σ (x_i − μ_B)²               biased batch variance
    x̂_i  = (x_i − μ_B) / sqrt(σ²_B + ε)       normalize
    y_i  = γ·x̂_i + β                          scale and shift (γ = 1, β = 0 at the start)

and, in the same training step, the moving statistics used for inference move:

    moving_mean     ← momentum·moving_mean     + (1 − momentum)·μ_B     (starts at 0)
    moving_variance ← momentum·moving_variance + (1 − momentum)·σ²_B    (starts at 1)

The tiny loss that trains γ and β here is L = (1/2m) Σ (p_i − placed_i)², p
the neuron's output (g(y) before, y after). Since y = γ·x̂ + β,

    ∂L/∂γ = Σ ∂L/∂y_i · x̂_i        ∂L/∂β = Σ ∂L/∂y_i

and one SGD step is γ ← γ − lr·∂L/∂γ, β ← β − lr·∂L/∂β.
"""

import dataclasses

import numpy as np

PLACEMENTS = ("before", "after")


@dataclasses.dataclass(frozen=True)
class Activation:
    """A non-linearity g with its derivative, and both formulas as text."""

    name: str
    formula: str
    derivative_formula: str

    def __call__(self, v):
        return _ACTIVATION_FUNCTIONS[self.name][0](np.asarray(v, dtype=np.float64))

    def derivative(self, v):
        return _ACTIVATION_FUNCTIONS[self.name][1](np.asarray(v, dtype=np.float64))


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


_ACTIVATION_FUNCTIONS = {
    "sigmoid": (_sigmoid, lambda v: _sigmoid(v) * (1.0 - _sigmoid(v))),
    "tanh": (np.tanh, lambda v: 1.0 - np.tanh(v) ** 2),
    # The derivative at exactly 0 is taken as 0, as TensorFlow's ReluGrad does.
    "relu": (lambda v: np.maximum(v, 0.0), lambda v: (v > 0).astype(np.float64)),
    "linear": (lambda v: v, np.ones_like),
}
ACTIVATIONS = {
    "sigmoid": Activation("sigmoid", "g(v) = 1 / (1 + e^(−v))", "g'(v) = g(v)·(1 − g(v))"),
    "tanh": Activation("tanh", "g(v) = tanh(v)", "g'(v) = 1 − tanh(v)²"),
    "relu": Activation("relu", "g(v) = max(v, 0)", "g'(v) = 1 if v > 0 else 0"),
    "linear": Activation("linear", "g(v) = v", "g'(v) = 1"),
}


@dataclasses.dataclass(frozen=True)
class BatchNormStep:
    """Every intermediate number of one training step of one BN neuron, then inference.

    Attributes (arrays have one entry per student):
        placement: "before" (z → BN → g) or "after" (z → g → BN).
        z: The neuron's pre-activations.
        x: BN's input: z before the activation, g(z) after it.
        mean, variance: μ_B and the biased σ²_B of x.
        std: sqrt(σ²_B + ε).
        x_hat: The normalized inputs.
        y: γ·x̂ + β with γ = 1, β = 0.
        output: What the loss reads: g(y) before, y after.
        loss: (1/2m) Σ (output − placed)².
        grad_output: ∂L/∂output_i = (output_i − placed_i) / m.
        grad_y: ∂L/∂y_i (times g'(y_i) before the activation).
        grad_gamma, grad_beta: Σ ∂L/∂y_i·x̂_i and Σ ∂L/∂y_i.
        gamma, beta: After one SGD step from (1, 0).
        y_after: γ·x̂ + β with those γ, β (the same batch, the next forward pass).
        moving_mean, moving_variance: After one update from (0, 1).
        new_x: BN's input for a new student.
        inference_moving: γ·(new_x − moving_mean)/sqrt(moving_variance + ε) + β.
        inference_batch: γ·(new_x − μ_B)/sqrt(σ²_B + ε) + β.
    """

    placement: str
    z: np.ndarray
    x: np.ndarray
    mean: float
    variance: float
    std: float
    x_hat: np.ndarray
    y: np.ndarray
    output: np.ndarray
    loss: float
    grad_output: np.ndarray
    grad_y: np.ndarray
    grad_gamma: float
    grad_beta: float
    gamma: float
    beta: float
    y_after: np.ndarray
    moving_mean: float
    moving_variance: float
    new_x: float
    inference_moving: float
    inference_batch: float


def neuron_inputs(features, weights):
    """z_i = w₁·cgpa_i + w₂·iq_i + b for each row of `features` ((m, 2) array)."""
    w1, w2, b = weights
    features = np.asarray(features, dtype=np.float64)
    return w1 * features[:, 0] + w2 * features[:, 1] + b


def batch_norm_step(z, placed, *, placement, activation, epsilon, momentum, lr, new_z):
    """One training step of BN on one neuron, then inference on a new student.

    Args:
        z: The neuron's pre-activations for the batch, shape (m,), m ≥ 2.
        placed: The targets of the tiny loss, shape (m,).
        placement: "before" or "after" the activation.
        activation: An `Activation`.
        epsilon, momentum: BN's ε and moving-average momentum.
        lr: SGD learning rate for γ and β.
        new_z: The new student's pre-activation.

    Returns:
        A `BatchNormStep`.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    z = np.asarray(z, dtype=np.float64)
    placed = np.asarray(placed, dtype=np.float64)
    m = len(z)
    x = z if placement == "before" else activation(z)
    mean = float(np.sum(x) / m)
    variance = float(np.sum((x - mean) ** 2) / m)
    std = float(np.sqrt(variance + epsilon))
    x_hat = (x - mean) / std
    gamma, beta = 1.0, 0.0
    y = gamma * x_hat + beta
    output = activation(y) if placement == "before" else y
    loss = float(np.sum((output - placed) ** 2) / (2 * m))
    grad_output = (output - placed) / m
    grad_y = grad_output * activation.derivative(y) if placement == "before" else grad_output
    grad_gamma = float(np.sum(grad_y * x_hat))
    grad_beta = float(np.sum(grad_y))
    gamma -= lr * grad_gamma
    beta -= lr * grad_beta
    moving_mean = momentum * 0.0 + (1.0 - momentum) * mean
    moving_variance = momentum * 1.0 + (1.0 - momentum) * variance
    new_x = float(new_z if placement == "before" else activation(new_z))
    inference_moving = gamma * (new_x - moving_mean) / np.sqrt(moving_variance + epsilon) + beta
    inference_batch = gamma * (new_x - mean) / std + beta
    return BatchNormStep(
        placement=placement,
        z=z,
        x=x,
        mean=mean,
        variance=variance,
        std=std,
        x_hat=x_hat,
        y=y,
        output=output,
        loss=loss,
        grad_output=grad_output,
        grad_y=grad_y,
        grad_gamma=grad_gamma,
        grad_beta=grad_beta,
        gamma=gamma,
        beta=beta,
        y_after=gamma * x_hat + beta,
        moving_mean=float(moving_mean),
        moving_variance=float(moving_variance),
        new_x=new_x,
        inference_moving=float(inference_moving),
        inference_batch=float(inference_batch),
    )


def steps_to_forget(momentum, fraction=0.99):
    """Training steps until the moving averages cover `fraction` of the way to steady statistics.

    After n updates the start value keeps the weight momentumⁿ, so
    n = ln(1 − fraction) / ln(momentum).
    Returns None for momentum 0 (one step) or 1 (never).
    """
    if momentum <= 0.0 or momentum >= 1.0:
        return None
    return float(np.log(1.0 - fraction) / np.log(momentum))
