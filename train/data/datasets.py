"""Datasets for the training scripts, as float32 arrays ready for `fit`.

    from train.data.datasets import load_dataset
    data = load_dataset("digits", seed=1)             # offline, bundled with scikit-learn
    data = load_dataset("mnist", seed=1)              # from Keras's cache, else downloaded
    data = load_dataset("csv", data_path="my.csv", label_column="label", seed=1)

Image data (digits, mnist, fashion_mnist, cifar10, an `.npz` with images) keeps
its (height, width, channels) shape; tabular data (breast_cancer, placement,
CSV) is (samples, features). Labels are integers 0 … num_classes − 1.

Validation data: the dataset's own test split where it has one (mnist,
fashion_mnist, cifar10, `.npz`), otherwise a stratified split of
`validation_split` of the samples, fixed by the seed.

Input preprocessing (`input_norm`), statistics from the training split only:
    unit      image data / its pixel range → [0, 1] (the paper's MNIST set-up);
              tabular data min-max scaled to [0, 1]
    standard  every feature (every pixel) to mean 0, standard deviation 1
    none      as loaded
`"auto"` picks `unit` for images and `standard` for tabular data.
"""

import csv
import dataclasses
import gzip
import os
import pickle
import typing
from typing import Optional

import numpy as np

from train.distribution import distributed
from train.options.settings import UsageError, check_value

# The files `keras.datasets` downloads, at the same places in Keras's cache
# (<cache_dir>/datasets/...), so a file Keras already fetched is used as is.
_KERAS_DATASETS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
ORIGINS = {
    "mnist": _KERAS_DATASETS_URL + "mnist.npz",
    "fashion_mnist": _KERAS_DATASETS_URL,
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
}
_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
_CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
_FASHION_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)
_CIFAR10_DIR = "cifar-10-batches-py-target"

IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
TABULAR_DATASETS = ("breast_cancer", "placement")
DATASETS = IMAGE_DATASETS[:1] + TABULAR_DATASETS + IMAGE_DATASETS[1:]
DATASET_HELP = {
    "digits": "scikit-learn's bundled 8x8 handwritten digits, 1797 images (offline)",
    "breast_cancer": "scikit-learn's bundled breast-cancer table, 569 x 30 (offline)",
    "placement": "SYNTHETIC cgpa/iq -> placed table from the lecture notes, made from the seed",
    "mnist": "28x28 handwritten digits via keras.datasets (download or Keras cache)",
    "fashion_mnist": "28x28 clothing images via keras.datasets (download or Keras cache)",
    "cifar10": "32x32 colour images via keras.datasets (download or Keras cache)",
}
INPUT_NORMS = ("auto", "unit", "standard", "none")


class Loaded(typing.NamedTuple):
    """What one loader returns, before labels are encoded and inputs normalized.

    `x_val`/`y_val` are None when the dataset has no test split of its own;
    `pixel_range` is None when the data are not pixels of a known range.
    """

    x: np.ndarray
    y: np.ndarray
    x_val: Optional[np.ndarray]
    y_val: Optional[np.ndarray]
    is_image: bool
    pixel_range: Optional[float]


class DatasetError(Exception):
    """A dataset cannot be loaded; the message is one line for the user."""


@dataclasses.dataclass
class Dataset:
    """Training and validation arrays plus what the model builders need."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    is_image: bool
    input_norm: str

    @property
    def input_shape(self):
        return self.x_train.shape[1:]


def load_dataset(
    name,
    *,
    seed,
    data_path=None,
    label_column=None,
    input_norm="auto",
    validation_split=0.2,
    placement_samples=1000,
    cache_dir=None,
):
    """Loads, splits and normalizes one dataset.

    Args:
        name: One of `DATASETS`, or "npz" / "csv" for a user's file.
        seed: Fixes the validation split (and the synthetic placement data).
        data_path: The user's `.npz` (x_train, y_train, x_test, y_test) or CSV.
        label_column: CSV column (name or 0-based index) holding the label;
            None means the last column.
        input_norm: One of `INPUT_NORMS`.
        validation_split: Fraction held out when the data has no test split.
        placement_samples: Rows of the synthetic placement table.
        cache_dir: Keras's cache directory (None: `$KERAS_HOME` or ~/.keras).

    Returns:
        A `Dataset`.

    Raises:
        DatasetError: with a one-line message naming what to fix.
    """
    if name in ("npz", "csv"):
        if not data_path:
            raise DatasetError(f"dataset {name!r} needs --data PATH")
        loaded = _load_user_file(name, data_path, label_column)
    elif name == "digits":
        loaded = _load_digits()
    elif name == "breast_cancer":
        loaded = _load_breast_cancer()
    elif name == "placement":
        loaded = make_placement(placement_samples, seed)
    elif name in ORIGINS:
        loaded = _KERAS_LOADERS[name](cache_dir)
    else:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    y, y_val, num_classes = _encode_labels(loaded.y, loaded.y_val)
    x, x_val = loaded.x, loaded.x_val
    if x_val is None:
        x, y, x_val, y_val = _stratified_split(x, y, validation_split, seed)
    if input_norm == "auto":
        input_norm = "unit" if loaded.is_image else "standard"
    x, x_val = _normalize(
        x.astype("float64"), x_val.astype("float64"), input_norm, loaded.pixel_range
    )
    return Dataset(
        name=name,
        x_train=x.astype("float32"),
        y_train=y,
        x_val=x_val.astype("float32"),
        y_val=y_val,
        num_classes=num_classes,
        is_image=loaded.is_image,
        input_norm=input_norm,
    )


def make_placement(samples, seed):
    """The lecture's toy table, synthetic: does a student with this cgpa and iq get placed?

    cgpa ~ N(7.5, 1.2) clipped to [4, 10], iq ~ N(100, 15); placed when
    1.6·(cgpa − 7.5) + 0.06·(iq − 100) + N(0, 1) > 0. The raw columns have
    very different scales (≈7 vs ≈100), which is why input normalization matters.
    """
    rng = np.random.default_rng(seed)
    cgpa = np.clip(rng.normal(7.5, 1.2, samples), 4.0, 10.0).round(1)
    iq = rng.normal(100.0, 15.0, samples).round()
    score = 1.6 * (cgpa - 7.5) + 0.06 * (iq - 100.0) + rng.normal(0.0, 1.0, samples)
    x = np.stack([cgpa, iq], axis=1)
    return Loaded(x, (score > 0).astype("int64"), None, None, False, None)


def _load_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return Loaded(digits.images[..., None], digits.target, None, None, True, 16.0)


def _load_breast_cancer():
    from sklearn.datasets import load_breast_cancer

    table = load_breast_cancer()
    return Loaded(table.data, table.target, None, None, False, None)


def _cached_or_download(
    name, fname, origin, cache_dir, file_hash=None, subdir="datasets", extract=False
):
    """The path of a Keras-cache file: used as is when present, else downloaded.

    A file already in the cache is not re-hashed, so a user can place the file
    by hand; a download is checked against `file_hash`.
    """
    import keras

    base = os.path.expanduser(cache_dir or os.environ.get("KERAS_HOME") or "~/.keras")
    cached = os.path.join(base, subdir, fname)
    if os.path.exists(cached):
        return cached
    try:
        return keras.utils.get_file(
            fname,
            origin=origin,
            file_hash=file_hash,
            cache_subdir=subdir,
            cache_dir=base,
            extract=extract,
        )
    except Exception as error:  # urllib and Keras raise many kinds; all mean "not there"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(
            f"{name}: cannot download {origin} ({reason}); offline? place the file at {cached}"
        ) from None


def _load_mnist(cache_dir):
    path = _cached_or_download("mnist", "mnist.npz", ORIGINS["mnist"], cache_dir, _MNIST_SHA256)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    except (OSError, KeyError, ValueError) as error:
        raise DatasetError(f"mnist: cannot read {path}: {error}") from None
    x, y, x_val, y_val = arrays
    return Loaded(x[..., None], y, x_val[..., None], y_val, True, 255.0)


def _read_idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def _load_fashion_mnist(cache_dir):
    subdir = os.path.join("datasets", "fashion-mnist")
    paths = [
        _cached_or_download(
            "fashion_mnist", f, ORIGINS["fashion_mnist"] + f, cache_dir, subdir=subdir
        )
        for f in _FASHION_FILES
    ]
    try:
        y = _read_idx(paths[0], 8)
        x = _read_idx(paths[1], 16).reshape(len(y), 28, 28, 1)
        y_val = _read_idx(paths[2], 8)
        x_val = _read_idx(paths[3], 16).reshape(len(y_val), 28, 28, 1)
    except (OSError, ValueError) as error:
        raise DatasetError(
            f"fashion_mnist: cannot read {os.path.dirname(paths[0])}: {error}"
        ) from None
    return Loaded(x, y, x_val, y_val, True, 255.0)


def _read_cifar_batch(path):
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(batch[b"labels"])


def _load_cifar10(cache_dir):
    # Keras extracts the archive into datasets/cifar-10-batches-py-target/.
    root = _cached_or_download(
        "cifar10", _CIFAR10_DIR, ORIGINS["cifar10"], cache_dir, _CIFAR10_SHA256, extract=True
    )
    folder = os.path.join(root, "cifar-10-batches-py")
    try:
        train = [_read_cifar_batch(os.path.join(folder, f"data_batch_{i}")) for i in range(1, 6)]
        x_val, y_val = _read_cifar_batch(os.path.join(folder, "test_batch"))
    except (OSError, KeyError, ValueError, pickle.UnpicklingError) as error:
        raise DatasetError(f"cifar10: cannot read {folder}: {error}") from None
    x = np.concatenate([images for images, _ in train])
    y = np.concatenate([labels for _, labels in train])
    return Loaded(x, y, x_val, y_val, True, 255.0)


_KERAS_LOADERS = {
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
}


def _load_user_file(kind, path, label_column):
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise DatasetError(f"cannot read --data {path}: no such readable file")
    try:
        if kind == "npz":
            return _load_npz(path)
        return _load_csv(path, label_column)
    except DatasetError:
        raise
    except Exception as error:  # any parse failure becomes one line for the user
        raise DatasetError(f"cannot read --data {path}: {error}") from None


def _load_npz(path):
    with np.load(path, allow_pickle=False) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise DatasetError(f"--data {path} lacks the arrays {', '.join(sorted(missing))}")
        x, y, x_val, y_val = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    is_image = x.ndim >= 3
    if x.ndim == 3:  # grayscale images without a channel axis
        x, x_val = x[..., None], x_val[..., None]
    pixel_range = 255.0 if x.dtype == np.uint8 else float(np.max(np.abs(x))) or 1.0
    return Loaded(x, y.reshape(-1), x_val, y_val.reshape(-1), is_image, pixel_range)


def _load_csv(path, label_column):
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    header, rows = rows[0], rows[1:]
    if not rows:
        raise DatasetError(f"--data {path} has a header but no rows")
    if label_column is None:
        column = len(header) - 1
    elif label_column in header:
        column = header.index(label_column)
    elif str(label_column).isdigit() and int(label_column) < len(header):
        column = int(label_column)
    else:
        raise DatasetError(f"--label-column {label_column!r} is not a column of {path}")
    labels = np.array([row[column] for row in rows])
    features = [[value for i, value in enumerate(row) if i != column] for row in rows]
    try:
        x = np.array(features, dtype="float64")
    except ValueError as error:
        raise DatasetError(f"--data {path}: non-numeric feature ({error})") from None
    return Loaded(x, labels, None, None, False, None)


def _encode_labels(y, y_val):
    """Maps any label values to 0 … num_classes − 1 (same map for both splits)."""
    y = np.asarray(y).reshape(-1)
    classes = np.unique(y if y_val is None else np.concatenate([y, np.asarray(y_val).reshape(-1)]))
    if len(classes) < 2:
        raise DatasetError("the labels hold a single class; nothing to classify")
    encode = {value: index for index, value in enumerate(classes.tolist())}
    y = np.array([encode[v] for v in y.tolist()], dtype="int64")
    if y_val is not None:
        y_val = np.array([encode[v] for v in np.asarray(y_val).reshape(-1).tolist()], "int64")
    return y, y_val, len(classes)


def _stratified_split(x, y, fraction, seed):
    """Holds out `fraction` of every class, chosen by the seed."""
    try:
        check_value("validation_split", fraction)  # for callers that skipped the flags' check
    except UsageError as error:
        raise DatasetError(str(error)) from None
    rng = np.random.default_rng(seed)
    val_index = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        val_index.extend(members[: max(1, round(fraction * len(members)))])
    is_val = np.zeros(len(y), bool)
    is_val[val_index] = True
    return x[~is_val], y[~is_val], x[is_val], y[is_val]


def _normalize(x, x_val, input_norm, pixel_range):
    if input_norm == "none":
        return x, x_val
    if input_norm == "unit":
        if pixel_range is not None:
            return x / pixel_range, x_val / pixel_range
        low, span = x.min(axis=0), np.ptp(x, axis=0)
        span[span == 0] = 1.0
        return (x - low) / span, (x_val - low) / span
    if input_norm == "standard":
        mean, std = x.mean(axis=0), x.std(axis=0)
        std[std == 0] = 1.0  # constant pixels (digits' borders) stay 0
        return (x - mean) / std, (x_val - mean) / std
    raise DatasetError(
        f"unknown --input-norm {input_norm!r}; choose one of {', '.join(INPUT_NORMS)}"
    )


def load_data(args):
    """The dataset the flags name, checked against `--model` before any run folder exists.

    Raises:
        DatasetError: the data cannot be loaded, `--train-samples` exceeds the
            training split, `--model cnn` was asked of
            data that are not images (one sample must be height × width × channels),
            or a data-parallel run's batches do not split evenly.
    """
    data = load_dataset(
        args.dataset,
        seed=args.seed,
        data_path=args.data,
        label_column=args.label_column,
        input_norm=args.input_norm,
        validation_split=args.validation_split,
    )
    train_samples = getattr(args, "train_samples", None)  # absent from older callers' settings
    if train_samples is not None:
        data = take_training_samples(data, train_samples)
    if args.model == "cnn" and len(data.input_shape) != 3:
        shape = "×".join(map(str, data.input_shape))
        raise DatasetError(
            f"--model cnn needs images (height × width × channels per sample); {data.name}"
            f" samples are {shape}: use --model mlp"
        )
    try:
        distributed.check_batches(args, len(data.x_train), "training")
        distributed.check_batches(args, len(data.x_val), "validation")
    except ValueError as error:
        raise DatasetError(str(error)) from None
    return data


def take_training_samples(data, count):
    """`data` with only the first `count` training samples; validation is unchanged.

    The first of the seed-fixed split, not a new draw: the same seed gives the
    same subset, and a larger `count` holds every sample of a smaller one.
    Normalization keeps the statistics of the whole training split.

    Raises:
        DatasetError: `count` is not in [1, the training split's size].
    """
    available = len(data.x_train)
    if not 1 <= count <= available:
        raise DatasetError(f"--train-samples must be in [1, {available}] (the {data.name}"
                           f" training split), got {count}")
    return dataclasses.replace(data, x_train=data.x_train[:count], y_train=data.y_train[:count])
