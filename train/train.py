"""Trains one model and logs it to TensorBoard.

    python -m train.train                                   # digits, 3x100 sigmoid, kbn BN
    python -m train.train --bn none --lr 0.5 --epochs 30
    python -m train.train --dataset placement --bn keras --hidden 16,16
    python -m train.train --data my.csv --label-column placed
    python -m train.train --resume logs/train/20250101-120000-digits-kbn    # after Ctrl-C

The run folder (printed at the start) holds TensorBoard events, args.json,
metrics.csv, summary.json and a checkpoint; see train/runs.py.
"""

import argparse
import json
import os
import sys

from train import cli, runs
from train.datasets import DatasetError, load_dataset


def load_data(args):
    """The dataset the flags name, checked against `--model` before any run folder exists.

    Raises:
        DatasetError: the data cannot be loaded, or `--model cnn` was asked of
            data that are not images (one sample must be height × width × channels).
    """
    data = load_dataset(
        args.dataset,
        seed=args.seed,
        data_path=args.data,
        label_column=args.label_column,
        input_norm=args.input_norm,
        validation_split=args.validation_split,
    )
    if args.model == "cnn" and len(data.input_shape) != 3:
        shape = "×".join(map(str, data.input_shape))
        raise DatasetError(
            f"--model cnn needs images (height × width × channels per sample); {data.name}"
            f" samples are {shape}: use --model mlp"
        )
    return data


def main(argv=None, extra_callbacks=()):
    parser = cli.make_parser(__doc__, experiment="train", resume_flag=True)
    args = cli.parse(parser, argv)
    if args.resume:
        with open(os.path.join(args.resume, "args.json")) as f:
            saved = argparse.Namespace(**json.load(f))
        if not os.path.isfile(os.path.join(args.resume, "checkpoint.json")):
            cli.fail(parser.prog, f"--resume {args.resume}: no finished epoch to resume from")
    try:
        data = load_data(saved if args.resume else args)
    except DatasetError as error:
        cli.fail(parser.prog, error)

    if args.resume:
        print(f"resuming {args.resume}", flush=True)
        result = runs.resume(args.resume, data, extra_callbacks)
    else:
        run_name = args.run_name or f"{data.name}-{args.bn}"
        run_dir = runs.make_run_dir(args.logdir, args.experiment, run_name)
        print(f"run folder: {run_dir}", flush=True)
        result = runs.train_variant(args, data, args.bn, run_dir, extra_callbacks)

    summary = result.summary
    print(
        f"{summary['variant']}: epochs to {summary['target_accuracy']:.2f} val accuracy:"
        f" {summary['epochs_to_target'] or 'not reached'};"
        f" best {summary['best_val_accuracy']}; status {summary['status']}"
    )
    if "val_accuracy_recalibrated" in summary:
        print(
            f"recalibrated: val accuracy {summary['val_accuracy_ema']:.4f} with the moving"
            f" averages, {summary['val_accuracy_recalibrated']:.4f} recalibrated"
        )
    print(f"logs: {result.run_dir}  (tensorboard --logdir {os.path.dirname(result.run_dir)})")
    return {"interrupted": 130, "nan": 1}.get(summary["stopped_early"], 0)


if __name__ == "__main__":
    sys.exit(main())
