"""Inference accuracy with BN's moving averages vs recalibrated (`kbn.recalibrate`), step by step.

    python -m train.recalibration                        # docs/tools.md's experiment (~2 min)
    python -m train.recalibration --steps 50,150 --seeds 1,2 --bn-momentums 0.99

Trains the `make run` network (digits, 3 hidden Dense layers of 100 sigmoid
units, BN before each sigmoid, SGD lr 1, batch 60) and, after each number of
steps in --steps, measures validation accuracy in inference mode twice: with
the moving averages the layer kept, and after recomputing the statistics
over the training data with the trained network (the paper's Algorithm 2).
The recalibrated statistics are measured on the side and put back, so
training continues exactly as without them. One row per BN momentum and
step count; median and range over --seeds.
"""

import argparse
import statistics
import sys
import time

from train.options import cli, settings
from train.data.datasets import load_dataset
from train.reports.numbers import plural


def parse_args(argv):
    parser = cli.OneLineParser(prog="python -m train.recalibration", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="50,150,500", help="step counts (default: %(default)s)")
    parser.add_argument("--bn-momentums", default="0.99,0.9",
                        help="BN momentums (default: %(default)s)")
    parser.add_argument("--seeds", default="1,2,3,4,5", help="seeds (default: %(default)s)")
    parser.add_argument("--bn", default="kbn", choices=("kbn", "keras"),
                        help="BN layer (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1.0, help="SGD learning rate (default: 1)")
    parser.add_argument("--batch-size", type=int, default=60, help="(default: %(default)s)")
    cli.add_backend_flag(parser)
    args = parser.parse_args(argv)
    try:
        args.steps = sorted(set(_numbers(args.steps, "--steps", int, "step counts like 50,150")))
        args.bn_momentums = _numbers(args.bn_momentums, "--bn-momentums", float,
                                     "momentums like 0.99,0.9")
        args.seeds = _numbers(args.seeds, "--seeds", int, "seeds like 1,2,3")
        _check(args.steps[0] >= 1, f"--steps {','.join(map(str, args.steps))}: counts must be >= 1")
        in_range, words = settings.RANGES["bn_momentum"]  # --bn-momentum's own range
        _check(all(in_range(m) for m in args.bn_momentums),
               f"--bn-momentums {','.join(map(str, args.bn_momentums))}: each must be {words}")
        _check(args.batch_size >= 2, f"--batch-size must be >= 2, got {args.batch_size}")
        settings.check_value("lr", args.lr)
        for seed in args.seeds:
            cli.check_seed(seed, "--seeds")
        cli.resolve_backend(args)
    except cli.UsageError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return args


def _numbers(text, flag, kind, expected):
    try:
        return [kind(value) for value in text.split(",")]
    except ValueError:
        raise cli.UsageError(f"{flag} {text!r}: expected {expected}") from None


def _check(condition, message):
    if not condition:
        raise cli.UsageError(message)


def batches(x, y, batch_size, seed):
    """Endless batches, each epoch in the pipeline's `epoch_order(seed, epoch)`."""
    from train.run.trainer import epoch_order

    epoch = 0
    while True:
        order = epoch_order(seed, epoch, len(x))
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size]
            yield x[index], y[index]
        epoch += 1


def one_run(data, args, momentum, seed):
    """{steps: (accuracy with the moving averages, recalibrated accuracy, seconds to
    recalibrate, loss with the moving averages)}."""
    import keras

    import kbn
    from kbn._variables import restored_variables
    from train.data.models import build_model

    keras.utils.set_random_seed(seed)
    model = build_model("mlp", input_shape=data.input_shape, num_classes=data.num_classes,
                        bn=args.bn, seed=seed, bn_momentum=momentum)
    model.compile(keras.optimizers.SGD(args.lr), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    stream = batches(data.x_train, data.y_train, args.batch_size, seed)
    results, done = {}, 0
    for steps in args.steps:
        for _ in range(steps - done):
            model.train_on_batch(*next(stream))
        done = steps
        loss, moving = model.evaluate(data.x_val, data.y_val, verbose=0)
        with restored_variables(model):  # training goes on from the moving averages it kept
            start = time.perf_counter()
            kbn.recalibrate(model, data.x_train, batch_size=args.batch_size)
            seconds = time.perf_counter() - start
            recalibrated = model.evaluate(data.x_val, data.y_val, verbose=0)[1]
        results[steps] = (moving, recalibrated, seconds, loss)
    return results


def cell(values):
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def main(argv=None):
    args = parse_args(argv)
    data = load_dataset("digits", seed=1, input_norm="unit")
    rows, seconds = [], []
    for momentum in args.bn_momentums:
        runs = [one_run(data, args, momentum, seed) for seed in args.seeds]
        for steps in args.steps:
            moving = [run[steps][0] for run in runs]
            recalibrated = [run[steps][1] for run in runs]
            seconds += [run[steps][2] for run in runs]
            rows.append((f"{momentum:g}", str(steps), cell(moving), cell(recalibrated)))
            print(f"momentum {momentum:g}, {plural(steps, 'step')}: {cell(moving)} ->"
                  f" {cell(recalibrated)}",
                  flush=True)
    from train.reports.report import format_table

    print()
    print(f"digits: mlp 100,100,100 sigmoid, BN ({args.bn}) before, sgd lr {args.lr:g}, batch"
          f" {args.batch_size}; validation accuracy, median (min–max) over seeds"
          f" {','.join(map(str, args.seeds))}")
    print(format_table(("BN momentum", "steps", "moving averages", "recalibrated"), rows))
    print(f"recalibrate over the {len(data.x_train)} training digits: median"
          f" {statistics.median(seconds):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
