"""The command-line flags shared by train, compare and lr_sweep, and their checks.

    from train.options import cli
    parser = cli.make_parser(__doc__, bn_flag=True, experiment="train")
    args = cli.parse(parser, argv)        # bad values: one line on stderr, exit 2

The defaults and the range checks are the settings' (train/options/settings.py);
here are the flags, and the checks of paths, data and strategy. Every check runs
before any data is loaded or any model trained; a failure is one line on stderr
(no traceback) and exit status 2.
"""

import argparse
import math
import os
import sys
import tempfile

from train.distribution import distributed
from train.data.datasets import DATASET_HELP, DATASETS, INPUT_NORMS
from train.options import backend, settings
from train.options.settings import DEFAULTS, JIT_COMPILE, UsageError
from train.data import variants

OPTIMIZERS = ("sgd", "adam", "rmsprop")
# NumPy's seeds (keras.utils.set_random_seed seeds NumPy too) are 0 … 2**32 − 1.
SEED_LIMIT = 2**32


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is a single line (no usage block) and exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser(doc, *, experiment, bn_flag=True, resume_flag=False):
    """The shared parser: data, model, batch norm, optimization, distribution, logging groups."""
    parser = OneLineParser(
        prog=f"python -m train.{experiment}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show = " (default: %(default)s)"

    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default=DEFAULTS["dataset"],
        choices=DATASETS,
        metavar="NAME",
        help="; ".join(f"{name}: {text}" for name, text in DATASET_HELP.items()) + show,
    )
    data.add_argument(
        "--data",
        metavar="PATH",
        help="your own .npz (x_train, y_train, x_test, y_test) or .csv; replaces --dataset",
    )
    data.add_argument(
        "--label-column",
        metavar="NAME",
        help="CSV column (name or 0-based index) with the labels (default: the last column)",
    )
    data.add_argument(
        "--input-norm",
        default=DEFAULTS["input_norm"],
        choices=INPUT_NORMS,
        help="unit: images / pixel range, tables min-max to [0, 1]; standard: every feature to "
        "mean 0, std 1 (training-split statistics); auto: unit for images, standard for "
        "tables" + show,
    )
    data.add_argument(
        "--validation-split",
        type=float,
        default=DEFAULTS["validation_split"],
        metavar="F",
        help="fraction held out (fixed by --seed) when the data has no test split" + show,
    )
    data.add_argument(
        "--train-samples",
        type=int,
        metavar="N",
        help="train on the first N samples of the training split (fixed by --seed), e.g. to "
        "see overfitting; validation keeps its whole split (default: all)",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", default=DEFAULTS["model"], choices=variants.MODELS, help="architecture" + show
    )
    model.add_argument(
        "--hidden",
        default=DEFAULTS["hidden"],
        metavar="W,W,...",
        help="mlp: hidden layer widths; cnn: conv filters" + show,
    )
    model.add_argument(
        "--activation", default=DEFAULTS["activation"], help="hidden non-linearity" + show
    )
    model.add_argument(
        "--dropout",
        type=float,
        default=DEFAULTS["dropout"],
        metavar="RATE",
        help="Dropout of this rate after each hidden block (activation, and BN after it); "
        "0: no Dropout layer" + show,
    )
    model.add_argument(
        "--init-scale",
        type=float,
        default=DEFAULTS["init_scale"],
        metavar="S",
        help="multiply every kernel's initial draws (Glorot uniform) by S" + show,
    )

    bn = parser.add_argument_group("batch norm")
    if bn_flag:
        bn.add_argument(
            "--bn",
            default=DEFAULTS["bn"],
            choices=variants.NAMES,
            help="; ".join(f"{v.name}: {v.label}" for v in variants.VARIANTS.values()) + show,
        )
    bn.add_argument(
        "--bn-position",
        default=DEFAULTS["bn_position"],
        choices=variants.BN_POSITIONS,
        help="BN before the non-linearity (paper) or after it" + show,
    )
    bn.add_argument(
        "--bn-momentum",
        type=float,
        default=DEFAULTS["bn_momentum"],
        help="moving-average momentum" + show,
    )
    bn.add_argument(
        "--bn-epsilon",
        type=float,
        default=DEFAULTS["bn_epsilon"],
        help="added to the variance" + show,
    )
    bn.add_argument(
        "--bn-sync",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="under a strategy, batch statistics over the global batch (--bn-sync) or over "
        "each replica's slice (--no-bn-sync) (default: sync under mirrored and multi-worker)",
    )
    bn.add_argument(
        "--recalibrate",
        action="store_true",
        help="after training, recompute BN's moving statistics over the training data "
        "(kbn.recalibrate, the paper's Algorithm 2); summary.json and the table get validation "
        "accuracy and loss with the moving averages and recalibrated",
    )

    optimization = parser.add_argument_group("optimization")
    optimization.add_argument(
        "--optimizer", default=DEFAULTS["optimizer"], choices=OPTIMIZERS, help=show.strip()
    )
    optimization.add_argument(
        "--lr", type=float, default=DEFAULTS["lr"], help="learning rate" + show
    )
    optimization.add_argument(
        "--momentum",
        type=float,
        default=DEFAULTS["momentum"],
        help="SGD momentum (not BN's)" + show,
    )
    optimization.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS["batch_size"],
        help="the global batch: all replicas together, under any --strategy" + show,
    )
    optimization.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help=show.strip())
    optimization.add_argument(
        "--drop-remainder",
        action="store_true",
        help="skip each epoch's last, shorter batch (data-parallel needs every batch to split"
        " evenly over the replicas)",
    )
    optimization.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS["seed"],
        help="fixes initial weights, data order and validation split" + show,
    )
    optimization.add_argument(
        "--target-accuracy",
        type=float,
        default=DEFAULTS["target_accuracy"],
        help="validation accuracy that counts as converged" + show,
    )

    optimization.add_argument(
        "--jit-compile",
        default=DEFAULTS["jit_compile"],
        choices=tuple(JIT_COMPILE),
        help="model.compile's jit_compile: auto is Keras's choice (XLA on JAX; on TensorFlow"
        " only with a GPU and no tf.distribute strategy; eager on PyTorch), on: XLA,"
        " off: none (op by op on JAX)" + show,
    )

    distribution = parser.add_argument_group("distribution (see docs/distributed.md)")
    distribution.add_argument(
        "--strategy",
        default=DEFAULTS["strategy"],
        choices=distributed.STRATEGIES,
        help="default: one process, one device; mirrored (TensorFlow): --devices N replicas in "
        "this process; multi-worker (TensorFlow): one replica per worker process (--workers N "
        "local processes, or the cluster TF_CONFIG names); data-parallel (JAX: "
        "keras.distribution.DataParallel): --devices N in this process, or several processes "
        "(--workers N, or --coordinator/--num-processes/--process-id); --batch-size stays the "
        "global batch" + show,
    )
    distribution.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="mirrored, data-parallel: N replicas (on a machine without GPUs the CPU is split "
        "into N logical devices)",
    )
    distribution.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="multi-worker without TF_CONFIG, data-parallel without --coordinator: start N "
        "worker processes on 127.0.0.1",
    )
    distribution.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="data-parallel on several machines: process 0's address, where "
        "jax.distributed.initialize's coordinator listens (with --num-processes, --process-id; "
        "give them again with --resume)",
    )
    distribution.add_argument(
        "--num-processes", type=int, metavar="N", help="data-parallel: processes in the cluster"
    )
    distribution.add_argument(
        "--process-id",
        type=int,
        metavar="I",
        help="data-parallel: this process's index, 0 … N-1; process 0 is the chief, which "
        "writes the run folder",
    )
    distribution.add_argument(
        "--join-timeout",
        type=float,
        metavar="SECONDS",
        help="data-parallel on several processes: how long to wait for the coordinator and "
        f"every process to join (default: {distributed.JOIN_TIMEOUT_SECONDS})",
    )
    add_backend_flag(parser)
    # Set by train/distribution/workers.py for the processes it starts: the run folders' time stamp.
    parser.add_argument("--stamp", help=argparse.SUPPRESS)

    logging = parser.add_argument_group("logging")
    logging.add_argument("--logdir", default=DEFAULTS["logdir"], help="root of all runs" + show)
    logging.add_argument(
        "--experiment",
        default=experiment,
        help="sub-folder grouping runs to compare in TensorBoard" + show,
    )
    logging.add_argument(
        "--run-name", help="run folder suffix after the timestamp (default: dataset, model unless"
        " mlp, variant: digits-kbn, digits-cnn-kbn)"
    )
    logging.add_argument(
        "--shift-every",
        type=int,
        default=DEFAULTS["shift_every"],
        metavar="STEPS",
        help="log the last hidden layer's activation input every STEPS steps" + show,
    )
    logging.add_argument(
        "--batch-log-every",
        type=int,
        default=DEFAULTS["batch_log_every"],
        metavar="STEPS",
        help="batch-level TensorBoard scalars every STEPS steps" + show,
    )
    logging.add_argument(
        "--no-batch-stats",
        action="store_true",
        help="do not log batch_stats/<bn layer>/mean_shift, variance_ratio, skipped "
        "(kbn.callbacks.BatchStatsMonitor, every --batch-log-every steps)",
    )
    if resume_flag:
        logging.add_argument(
            "--resume",
            metavar="RUN_DIR",
            help="continue a run from its last finished epoch, with its own settings; --epochs N"
            " continues it to N epochs in all (other flags are refused)",
        )
    return parser


def add_backend_flag(parser):
    """`--backend`; None until `resolve_backend` fills it in (a resume takes the run's)."""
    parser.add_argument(
        "--backend",
        choices=backend.BACKENDS,
        help="the Keras backend (default: KERAS_BACKEND, else tensorflow; --resume: the run's)",
    )


def resolve_backend(args, saved=None):
    """Fills in `args.backend` and makes it this process's Keras backend.

    `saved`: a resumed run's settings; it continues on its own backend, and a
    different `--backend` is refused.

    Raises:
        UsageError: one line naming --backend.
    """
    if saved is not None:
        recorded = getattr(saved, "backend", None) or "tensorflow"  # runs before --backend
        if args.backend and args.backend != recorded:
            raise UsageError(f"--backend {args.backend}: {args.resume} was trained on"
                             f" {recorded}; a run resumes on its own backend (drop --backend)")
        args.backend = saved.backend = recorded
    args.backend = args.backend or backend.default()
    try:
        backend.activate(args.backend)
    except ValueError as error:
        raise UsageError(str(error)) from None


def parse(parser, argv=None, also=None):
    """Parses and checks; on a bad value prints one line and exits 2.

    Every check that needs no Keras runs first, so a usage error costs no
    Keras or TensorFlow import; then the backend is made this process's.
    `also(args)`: a command's own checks (UsageError), run before that import too.
    """
    args = parser.parse_args(argv)
    try:
        resuming = getattr(args, "resume", None)
        if not resuming:  # a resume takes its run's backend (train.train)
            args.backend = args.backend or backend.default()
            backend.check(args.backend)
        check(args)
        if also is not None:
            also(args)
        if not resuming:
            resolve_backend(args)
            _check_activation(args.activation)
    except (UsageError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return args


def check(args):
    """Raises UsageError for any unusable value; fills in `args.hidden_widths`."""
    if getattr(args, "resume", None):
        if not os.path.isfile(os.path.join(args.resume, "args.json")):
            raise UsageError(f"--resume {args.resume}: not a run folder (no args.json)")
        return

    settings.check(args)
    check_seed(args.seed)
    if args.data:
        _require(
            os.path.isfile(args.data) and os.access(args.data, os.R_OK),
            f"--data {args.data}: no such readable file",
        )
        extension = os.path.splitext(args.data)[1].lower()
        _require(extension in (".npz", ".csv"), f"--data {args.data}: expected a .npz or .csv file")
        args.dataset = extension[1:]
    elif args.label_column is not None:
        raise UsageError("--label-column needs --data PATH.csv")
    check_name(args.experiment, "--experiment")
    if args.run_name is not None:
        check_name(args.run_name, "--run-name")
    check_distribution(args)  # before Keras's import: it may set up JAX's devices
    check_logdir(os.path.join(args.logdir, args.experiment))


def check_seed(seed, flag="--seed"):
    """Raises UsageError for a seed NumPy refuses (below 0 or from 2**32 on)."""
    _require(0 <= seed < SEED_LIMIT, f"{flag} {seed}: seeds must be in [0, 2**32 - 1]")


def check_name(name, flag):
    """Raises UsageError unless `name` is one folder's name (it goes under --logdir)."""
    _require(name not in ("", ".", "..") and "/" not in name and os.sep not in name,
             f"{flag} {name!r}: expected a folder name, without '/' (it goes under --logdir)")


def check_distribution(settings):
    """Raises UsageError for bad strategy flags or TF_CONFIG; fills in `bn_sync`, `replicas`."""
    try:
        distributed.check(settings)
    except ValueError as error:
        raise UsageError(str(error)) from None


def start_distribution(prog, settings):
    """Starts the strategy the settings name; a failure is one line and exit 2."""
    try:
        distribution = distributed.start(settings)
    except ValueError as error:
        fail(prog, error)
    if not distribution.is_chief:
        print(f"worker {distribution.worker} of {distribution.workers}: training; worker 0,"
              " the chief, reports the progress and writes the run folder", flush=True)
    return distribution


def check_logdir(folder):
    """Creates `folder` if needed and makes sure runs can be written into it."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create log folder {folder}: {error.strerror}") from None
    try:  # a real write: permission bits alone say nothing for root or read-only mounts
        descriptor, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(descriptor)
        os.remove(probe)
    except OSError as error:
        raise UsageError(f"cannot write into log folder {folder}: {error.strerror}") from None


def parse_floats(text, flag):
    """'0.1,1,10' → (0.1, 1.0, 10.0); raises UsageError naming `flag`."""
    try:
        values = tuple(float(value) for value in text.split(","))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected numbers like 0.1,1,10") from None
    _require(all(0 < value < math.inf for value in values),
             f"{flag} {text!r}: values must be > 0 and finite")
    return values


def run_script(main, prog):
    """`sys.exit(main())` for a script's `__main__`, with a Ctrl-C that lands
    outside a run's own stop handling (between two runs, while data or a model
    is being built, or a second Ctrl-C) as one line and exit status 130
    instead of a traceback."""
    try:
        status = main()
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted (Ctrl-C). Runs that finished an epoch continue with "
            "python -m train.train --resume RUN_DIR (their folders are printed above).",
            file=sys.stderr,
        )
        status = 130
    sys.exit(status)


def fail(prog, message, status=2):
    """Prints one error line and exits."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(status)


def _check_activation(name):
    import keras

    try:
        keras.activations.get(name)
    except (ValueError, TypeError):
        raise UsageError(f"--activation {name!r} is not a Keras activation") from None


def _require(condition, message):
    if not condition:
        raise UsageError(message)
