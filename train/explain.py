"""Batch norm by hand: Algorithm 1 step by step on one neuron and a batch of four students.

    python -m train.explain                                   # the lecture's cgpa/iq table
    python -m train.explain --batch "8.9,100;6.2,89;9.1,76" --placed 1,0,1
    python -m train.explain --weights 0.3,0.05,-7 --activation tanh --momentum 0.9

Prints every step with its formula and its numbers, so that each line can be
checked with a calculator: z = w₁·cgpa + w₂·iq + b per student, μ_B, σ²_B,
sqrt(σ²_B + ε), x̂, y = γ·x̂ + β, one SGD step on γ and β for a tiny loss, the
moving mean and variance, and inference on a new student with the moving
statistics vs this batch's statistics. It does so for both placements of the
lecture: BN before the activation (z → BN → g) and after it (z → g → BN).
Finally the same batch goes through kbn.BatchNormalization and
keras.layers.BatchNormalization; exit status 1 if either disagrees with the
printed numbers. A bad flag is one line on stderr and exit status 2.
"""

import argparse
import math
import sys

import numpy as np

from train.lesson import algorithm1
from train.options import cli, settings
from train.options.cli import UsageError, OneLineParser
from train.reports.numbers import plural

# The lecture's table shows cgpa 8.9, 6.2, 9.1, 7.7, iq 100, 89, 76 and a placed
# column that the OCR lost; the fourth iq and the placed labels are illustrative.
DEFAULT_BATCH = "8.9,100;6.2,89;9.1,76;7.7,95"
DEFAULT_PLACED = "1,0,1,0"
DEFAULT_WEIGHTS = "0.5,0.02,-5"
DEFAULT_STUDENT = "8.0,90"
# float32 layers vs float64 arithmetic: the float32 results carry ~7 significant
# digits and pass through a dozen operations, so 1e-5 relative (1e-5 absolute
# below 1) leaves a margin of ~10× and is still far below the printed 4 decimals.
TOLERANCE = 1e-5


def make_parser():
    parser = OneLineParser(
        prog="python -m train.explain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show = " (default: %(default)s)"
    parser.add_argument(
        "--batch",
        default=DEFAULT_BATCH,
        metavar="CGPA,IQ;...",
        help="the students, one 'cgpa,iq' row each, rows separated by ';' (m >= 2)" + show,
    )
    parser.add_argument(
        "--placed",
        metavar="T,T,...",
        help="the tiny loss's targets, one per student (default: 1,0,1,0 for the default "
        "batch, else alternating 1,0,...)",
    )
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        metavar="W1,W2,B",
        help="the neuron: z = w1*cgpa + w2*iq + b" + show,
    )
    parser.add_argument(
        "--epsilon", type=float, default=settings.DEFAULTS["bn_epsilon"], help="BN's ε" + show
    )
    parser.add_argument(
        "--momentum",
        type=float,
        default=settings.DEFAULTS["bn_momentum"],
        help="BN's moving-average momentum" + show,
    )
    parser.add_argument(
        "--activation",
        default="sigmoid",
        choices=tuple(algorithm1.ACTIVATIONS),
        help="the neuron's non-linearity g" + show,
    )
    parser.add_argument("--lr", type=float, default=1.0, help="SGD learning rate for γ, β" + show)
    parser.add_argument(
        "--student",
        default=DEFAULT_STUDENT,
        metavar="CGPA,IQ",
        help="the new student seen at inference" + show,
    )
    cli.add_backend_flag(parser)
    return parser


def parse(argv=None):
    """Parses and checks the flags; on a bad value prints one line and exits 2."""
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        args.features = parse_batch(args.batch)
        m = len(args.features)
        if args.placed is None:
            args.placed = DEFAULT_PLACED if args.batch == DEFAULT_BATCH else _alternating(m)
        args.targets = _numbers(args.placed, "--placed", m, "one target per student")
        args.weight_values = _numbers(args.weights, "--weights", 3, "w1,w2,b")
        args.new_student = _numbers(args.student, "--student", 2, "cgpa,iq")
        settings.check_value("bn_epsilon", args.epsilon, "--epsilon")
        settings.check_value("bn_momentum", args.momentum, "--momentum")
        settings.check_value("lr", args.lr)
        cli.resolve_backend(args)
    except UsageError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    args.activation_function = algorithm1.ACTIVATIONS[args.activation]
    return args


def parse_batch(text):
    """'8.9,100;6.2,89' → float64 array of shape (m, 2); raises UsageError naming --batch."""
    rows = [row for row in text.split(";") if row.strip()]
    _require(
        len(rows) >= 2,
        f"--batch {text!r}: needs at least 2 students (rows separated by ';'), got {len(rows)};"
        " the variance of one value is 0",
    )
    features = []
    for number, row in enumerate(rows, start=1):
        values = row.split(",")
        _require(
            len(values) == 2,
            f"--batch {text!r}: student {number} has {plural(len(values), 'value')}; each needs 2"
            " (cgpa,iq)",
        )
        features.append(_numbers(row, f"--batch student {number}", 2, "cgpa,iq"))
    return np.array(features, dtype=np.float64)


def _numbers(text, flag, count, expected):
    try:
        values = [float(value) for value in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: not numbers (expected {expected})") from None
    _require(len(values) == count, f"{flag} {text!r}: expected {count} numbers ({expected})")
    _require(all(math.isfinite(v) for v in values), f"{flag} {text!r}: numbers must be finite")
    return values


def _alternating(m):
    return ",".join(str(1 - i % 2) for i in range(m))


def _require(condition, message):
    if not condition:
        raise UsageError(message)


def walk_through(args):
    """The float64 numbers for both placements: {"before": BatchNormStep, "after": ...}."""
    z = algorithm1.neuron_inputs(args.features, args.weight_values)
    new_z = float(algorithm1.neuron_inputs([args.new_student], args.weight_values)[0])
    return {
        placement: algorithm1.batch_norm_step(
            z,
            args.targets,
            placement=placement,
            activation=args.activation_function,
            epsilon=args.epsilon,
            momentum=args.momentum,
            lr=args.lr,
            new_z=new_z,
        )
        for placement in algorithm1.PLACEMENTS
    }


# --- printing -------------------------------------------------------------------------------

SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _sub(i):
    return str(i).translate(SUBSCRIPTS)


def _f(value):
    """A number as printed everywhere: 4 decimals, negatives in brackets inside sums."""
    return f"{value + 0.0:.4f}".replace("-0.0000", "0.0000")


def _g(value):
    """A flag's value as typed (shortest form), bracketed when negative."""
    return f"({value:g})" if value < 0 else f"{value:g}"


def _term(value):
    return f"({_f(value)})" if value < 0 else _f(value)


def print_setup(args):
    w1, w2, b = args.weight_values
    m = len(args.features)
    default = " (the lecture's table; the 4th iq and the placed column are illustrative)"
    print(f"Batch normalization by hand: one neuron, a batch of m = {m} students"
          + (default if args.batch == DEFAULT_BATCH else ""))
    print()
    print(f"  student  cgpa {'':>4} iq {'':>5} placed")
    for i, ((cgpa, iq), target) in enumerate(zip(args.features, args.targets), start=1):
        print(f"  {i:<7}  {cgpa:<9g} {iq:<8g} {target:g}")
    print()
    print(f"  neuron      z = w₁·cgpa + w₂·iq + b   with w₁ = {w1:g}, w₂ = {w2:g}, b = {b:g}")
    print(f"  batch norm  ε = {args.epsilon:g}, momentum = {args.momentum:g};"
          " γ = 1 and β = 0 at the start; moving mean 0, moving variance 1")
    g = args.activation_function
    print(f"  activation  {g.name}: {g.formula},  {g.derivative_formula}")
    print(f"  tiny loss   L = (1/2m) Σ (p_i − placed_i)²,  p = the neuron's output;"
          f"  SGD lr = {args.lr:g}")
    print()
    print("1. Each student's z")
    z = algorithm1.neuron_inputs(args.features, args.weight_values)
    for i, ((cgpa, iq), value) in enumerate(zip(args.features, z), start=1):
        print(f"   z{_sub(i)} = {_g(w1)}·{_g(cgpa)} + {_g(w2)}·{_g(iq)} + {_g(b)} = {_f(value)}")


def print_placement(step, args):
    m = len(step.x)
    g = args.activation_function
    before = step.placement == "before"
    x = "z" if before else "a"
    if before:
        print("\n== BN before the activation: z → BN → g(BN(z))  (the paper's placement,"
              " the lecture's first approach)")
        print("   BN's input x_i is z_i")
    else:
        print("\n== BN after the activation: z → g(z) = a → BN(a)"
              "  (the lecture's second approach)")
        values = "  ".join(f"a{_sub(i)} = {_f(v)}" for i, v in enumerate(step.x, start=1))
        print(f"   BN's input x_i is a_i = g(z_i):  {values}")
    terms = " + ".join(_term(v) for v in step.x)
    print(f"2. batch mean       μ_B = (1/m) Σ {x}_i = ({terms}) / {m} = {_f(step.mean)}")
    squares = " + ".join(f"{_term(v - step.mean)}²" for v in step.x)
    print(f"3. batch variance   σ²_B = (1/m) Σ ({x}_i − μ_B)² = ({squares}) / {m}"
          f" = {_f(step.variance)}   (biased: 1/m, not 1/(m−1))")
    print(f"4. denominator      sqrt(σ²_B + ε) = sqrt({_f(step.variance)} + {args.epsilon:g})"
          f" = {_f(step.std)}")
    print(f"5. normalize        x̂_i = ({x}_i − μ_B) / sqrt(σ²_B + ε)")
    for i, (value, normalized) in enumerate(zip(step.x, step.x_hat), start=1):
        print(f"   x̂{_sub(i)} = ({_f(value)} − {_term(step.mean)}) / {_f(step.std)}"
              f" = {_f(normalized)}")
    print(f"   (x̂ has mean {_f(np.mean(step.x_hat))} and variance σ²_B / (σ²_B + ε)"
          f" = {_f(np.var(step.x_hat))}: just under 1 because of ε)")
    print("6. scale and shift  y_i = γ·x̂_i + β with γ = 1, β = 0, so y = x̂ in the first step")
    if before:
        print("7. activation       p_i = g(y_i):  "
              + "  ".join(f"p{_sub(i)} = {_f(v)}" for i, v in enumerate(step.output, start=1)))
    else:
        print("7. output           p_i = y_i (the next layer reads BN's output)")
    print(f"8. one SGD step on L = (1/2m) Σ (p_i − placed_i)² = {_f(step.loss)}")
    chain = "(p_i − placed_i)/m · g'(y_i)" if before else "(p_i − placed_i)/m"
    print(f"   ∂L/∂y_i = {chain}")
    for i, (out, target, grad) in enumerate(zip(step.output, args.targets, step.grad_y), start=1):
        factor = f" · {_f(g.derivative(step.y[i - 1]))}" if before else ""
        print(f"   ∂L/∂y{_sub(i)} = ({_f(out)} − {target:g}) / {m}{factor} = {_f(grad)}")
    products = " + ".join(f"{_term(gy)}·{_term(xh)}" for gy, xh in zip(step.grad_y, step.x_hat))
    print(f"   ∂L/∂γ = Σ ∂L/∂y_i · x̂_i = {products} = {_f(step.grad_gamma)}")
    sums = " + ".join(_term(gy) for gy in step.grad_y)
    print(f"   ∂L/∂β = Σ ∂L/∂y_i = {sums} = {_f(step.grad_beta)}")
    print(f"   γ ← 1 − {args.lr:g}·{_term(step.grad_gamma)} = {_f(step.gamma)}"
          f"      β ← 0 − {args.lr:g}·{_term(step.grad_beta)} = {_f(step.beta)}")
    print("   so the same batch would now give y_i = γ·x̂_i + β:  " + "  ".join(
        f"y{_sub(i)} = {_f(v)}" for i, v in enumerate(step.y_after, start=1)))
    keep, take = args.momentum, 1.0 - args.momentum
    print(f"9. moving statistics (what inference uses), one update with momentum {keep:g}:")
    print(f"   moving_mean     ← {keep:g}·0 + {take:g}·{_term(step.mean)} = {_f(step.moving_mean)}")
    print(f"   moving_variance ← {keep:g}·1 + {take:g}·{_f(step.variance)}"
          f" = {_f(step.moving_variance)}")
    cgpa, iq = args.new_student
    what = "z" if before else "a = g(z)"
    print(f"10. inference on a new student (cgpa {cgpa:g}, iq {iq:g}): {what} = {_f(step.new_x)},"
          f" with γ = {_f(step.gamma)}, β = {_f(step.beta)}")
    print(f"   moving statistics: y = γ·({_f(step.new_x)} − {_term(step.moving_mean)})"
          f" / sqrt({_f(step.moving_variance)} + {args.epsilon:g}) + β"
          f" = {_f(step.inference_moving)}")
    print(f"   batch statistics:  y = γ·({_f(step.new_x)} − {_term(step.mean)}) / {_f(step.std)}"
          f" + β = {_f(step.inference_batch)}")


def print_why_inference_differs(args):
    steps = algorithm1.steps_to_forget(args.momentum)
    print()
    if args.momentum == 0:
        print("With momentum 0 the moving statistics are the last batch's own, so inference with")
        print("them equals inference with this batch's statistics.")
        return
    if args.momentum == 1:
        print("With momentum 1 the moving statistics never leave (0, 1): inference normalizes")
        print("with them whatever the batches were.")
        return
    print("Why the two inference results differ: after one step the moving statistics have moved")
    print(f"only {100 * (1 - args.momentum):g} % of the way from (0, 1) towards this batch's"
          " (μ_B, σ²_B).")
    print(f"With momentum {args.momentum:g} the start keeps the weight momentumⁿ after n steps,"
          " so covering 99 %")
    print(f"takes ln(0.01)/ln({args.momentum:g}) = {plural(round(steps), 'step')}: early in"
          " training, inference lags the network")
    print("(kbn.recalibrate, the paper's Algorithm 2, recomputes them with the trained"
          " network).")


# --- the check through both layers ----------------------------------------------------------


def layer_results(layer_class, step, args):
    """The same step through a real BN layer (float32): the numbers `BatchNormStep` predicts.

    The gradients are the backend's own autodiff (train/lesson/autodiff.py) of
    L = Σ (output − target)² / 2m, through BN and, placed before it, the activation.
    """
    import keras

    from kbn._variables import restored_variables
    from train.lesson.autodiff import call_with_gradients

    layer = layer_class(momentum=args.momentum, epsilon=args.epsilon)
    after = [keras.layers.Activation(args.activation)] if step.placement == "before" else []
    model = keras.Sequential([keras.Input((1,)), layer, *after])
    x = step.x[:, None].astype("float32")
    targets = np.asarray(args.targets, dtype="float32")[:, None]
    with restored_variables(model):  # a first look, for y and dL/d(output)
        y = keras.ops.convert_to_numpy(layer(x, training=True))
        output = keras.ops.convert_to_numpy(model(x, training=True))
    upstream = (output - targets) / len(step.x)
    output, _, (grad_gamma, grad_beta) = call_with_gradients(model, x, upstream, training=True)
    loss = np.sum((output - targets) ** 2) / (2 * len(step.x))
    gradients = [keras.ops.convert_to_tensor(grad_gamma), keras.ops.convert_to_tensor(grad_beta)]
    keras.optimizers.SGD(learning_rate=args.lr).apply(gradients, [layer.gamma, layer.beta])
    new_x = np.asarray([[step.new_x]], dtype="float32")
    numbers = {
        "y": y,
        "loss": loss,
        "∂L/∂γ": grad_gamma,
        "∂L/∂β": grad_beta,
        "γ after SGD": layer.gamma,
        "β after SGD": layer.beta,
        "moving_mean": layer.moving_mean,
        "moving_variance": layer.moving_variance,
        "inference (moving)": layer(new_x, training=False),
    }
    return {name: np.ravel(keras.ops.convert_to_numpy(value)) for name, value in numbers.items()}


def expected_results(step):
    """The float64 values `layer_results` should reproduce, under the same names."""
    return {
        "y": step.y,
        "loss": step.loss,
        "∂L/∂γ": step.grad_gamma,
        "∂L/∂β": step.grad_beta,
        "γ after SGD": step.gamma,
        "β after SGD": step.beta,
        "moving_mean": step.moving_mean,
        "moving_variance": step.moving_variance,
        "inference (moving)": step.inference_moving,
    }


def relative_difference(expected, actual):
    """max |expected − actual| / max(1, |expected|), element by element."""
    expected = np.ravel(np.asarray(expected, dtype=np.float64))
    actual = np.asarray(actual, dtype=np.float64)
    return float(np.max(np.abs(expected - actual) / np.maximum(1.0, np.abs(expected))))


def check_with_layers(steps, args):
    """Runs both layers on both placements; prints the table; returns True when all agree."""
    import keras

    import kbn

    layers = {"kbn": kbn.BatchNormalization, "keras": keras.layers.BatchNormalization}
    print()
    print("Check: the same batch through kbn.BatchNormalization and"
          " keras.layers.BatchNormalization")
    print("(float32, same γ, β, ε, momentum; one gradient by the backend's autodiff and one"
          " keras SGD step)")
    print(f"   {'placement':<9}  {'quantity':<18}  {'explain':>13}  "
          f"{'kbn rel. diff':>13}  {'keras rel. diff':>15}")
    worst = 0.0
    for placement, step in steps.items():
        expected = expected_results(step)
        actual = {name: layer_results(cls, step, args) for name, cls in layers.items()}
        for quantity, value in expected.items():
            differences = [relative_difference(value, actual[name][quantity]) for name in layers]
            worst = max(worst, *differences)
            shown = _f(value) if np.ndim(value) == 0 else "(per student)"
            print(f"   {placement:<9}  {quantity:<18}  {shown:>13}  "
                  f"{differences[0]:>13.1e}  {differences[1]:>15.1e}")
    agree = worst <= TOLERANCE
    verdict = "all three agree" if agree else "DISAGREE"
    print(f"{verdict}: largest difference {worst:.1e} relative (tolerance {TOLERANCE:g},"
          " relative to max(1, |value|))")
    return agree


def main(argv=None):
    args = parse(argv)
    steps = walk_through(args)
    print_setup(args)
    for step in steps.values():
        print_placement(step, args)
    print_why_inference_differs(args)
    agree = check_with_layers(steps, args)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
