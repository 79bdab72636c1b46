"""Trains one model and logs it to TensorBoard.

    python -m train.train                                   # digits, 3x100 sigmoid, kbn BN
    python -m train.train --bn none --lr 0.5 --epochs 30
    python -m train.train --dataset placement --bn keras --hidden 16,16
    python -m train.train --data my.csv --label-column placed
    python -m train.train --resume logs/train/20250101-120000-digits-kbn    # after Ctrl-C
    python -m train.train --resume logs/train/20250101-120000-digits-kbn --epochs 90  # on to 90
    python -m train.train --strategy mirrored --devices 2        # 2 replicas in this process
    python -m train.train --strategy multi-worker --workers 2    # 2 local worker processes
    python -m train.train --backend jax                          # or KERAS_BACKEND=jax
    python -m train.train --backend jax --strategy data-parallel --workers 2 \
        --drop-remainder --validation-split 0.25                 # 2 JAX processes

The run folder (printed at the start) holds TensorBoard events, args.json,
metrics.csv, summary.json and a checkpoint; see train/run/runs.py. Ctrl-C or
SIGTERM stops after the current step; --resume continues from the last
finished epoch, with the run's own settings (--epochs N: to N epochs in all;
other flags are refused). Exit status: 0 finished, 1 NaN loss, 2 bad usage, 130 after
Ctrl-C, 143 after SIGTERM.
"""

import os
import sys

from train.options import cli, explicit
from train.options.settings import CLUSTER_FLAGS
from train.distribution import distributed, workers
from train.reports.numbers import number, plural
from train.run import run_folder
from train.data.datasets import DatasetError, load_data


def main(argv=None, extra_callbacks=()):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = cli.make_parser(__doc__, experiment="train", resume_flag=True)
    args = cli.parse(parser, argv)
    settings = args
    checkpoint = None  # a resume's, checked once here (it reads the whole model file)
    try:
        if args.resume:
            explicit.check_resume(parser, argv)
            checkpoint = run_folder.check_resumable(args.resume)
            epochs_done = checkpoint.epochs_done
            settings = run_folder.read_settings(args.resume)
            epochs = explicit.resume_epochs(parser, argv, args, settings, epochs_done)
            for name in CLUSTER_FLAGS:  # where this process is, not the run's
                setattr(settings, name, getattr(args, name))
            cli.resolve_backend(args, settings)
            cli.check_distribution(settings)
            if epochs_done >= epochs:
                print(f"{args.resume} has finished all its {plural(epochs_done, 'epoch')};"
                      " nothing to resume (--epochs N continues it to N epochs in all)")
                return 0
        data = load_data(settings)
        if args.resume and getattr(settings, "process_id", None) in (None, 0):
            run_folder.set_epochs(args.resume, epochs)  # the chief alone writes the run folder
            settings.epochs = epochs
    except (run_folder.RunFolderError, cli.UsageError, DatasetError) as error:
        cli.fail(parser.prog, error)
    if distributed.needs_local_workers(settings):
        return workers.launch("train.train", settings, argv, parser.prog, resume=args.resume)
    from train.run import runs  # imports Keras: after the backend is chosen

    distribution = cli.start_distribution(parser.prog, settings)
    say = print if distribution.is_chief else _silent

    try:
        if args.resume:
            say(f"resuming {args.resume} after epoch {epochs_done}, to epoch {epochs}", flush=True)
            result = runs.resume(args.resume, data, extra_callbacks, distribution=distribution,
                                 writes=distribution.is_chief, checkpoint=checkpoint)
        else:
            run_dir = None
            if distribution.is_chief:
                run_name = args.run_name or run_folder.run_name(data.name, args.model, args.bn)
                run_dir = run_folder.make_run_dir(
                    args.logdir, args.experiment, run_name, args.stamp
                )
                print(f"run folder: {run_dir}", flush=True)
            result = runs.train_variant(args, data, args.bn, run_dir, extra_callbacks,
                                        distribution=distribution)
    except run_folder.RunFolderError as error:
        cli.fail(parser.prog, error)

    summary = result.summary
    say(
        f"{summary['variant']}: epochs to {summary['target_accuracy']:.2f} val accuracy:"
        f" {summary['epochs_to_target'] or 'not reached'};"
        f" best {number(summary['best_val_accuracy'])}; status {summary['status']}"
    )
    if "val_accuracy_recalibrated" in summary:
        say(
            f"recalibrated: val accuracy {number(summary['val_accuracy_ema'])} with the moving"
            f" averages, {number(summary['val_accuracy_recalibrated'])} recalibrated"
        )
    if result.run_dir:
        say(f"logs: {result.run_dir}  (tensorboard --logdir {os.path.dirname(result.run_dir)})")
    return distributed.leave(distribution, result.exit_status, result.lost_worker is not None)


def _silent(*args, **kwargs):
    """Workers other than the chief print nothing: the chief speaks for the run."""


if __name__ == "__main__":
    cli.run_script(main, "python -m train.train")
