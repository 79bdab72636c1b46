"""train/data/datasets.py: bundled, synthetic, Keras-cache and user-file data; splits."""

import gzip
import os
import pickle

import numpy as np
import pytest

from tiny_runs import run_python
from train.data import datasets
from train.data.datasets import DatasetError, load_dataset

# A proxy on a closed local port makes every download fail at once, online or not.
OFFLINE_ENV = {
    "https_proxy": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "",
}


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "placement"])
@pytest.mark.parametrize("seed", [1, 2])
def test_bundled_split_is_fixed_by_the_seed(name, seed):
    first = load_dataset(name, seed=seed)
    again = load_dataset(name, seed=seed)
    other = load_dataset(name, seed=seed + 10)
    np.testing.assert_array_equal(first.x_val, again.x_val)
    np.testing.assert_array_equal(first.y_train, again.y_train)
    assert not np.array_equal(first.y_val, other.y_val) or not np.array_equal(
        first.x_val, other.x_val
    )
    total = len(first.y_train) + len(first.y_val)
    assert abs(len(first.y_val) / total - 0.2) < 0.02
    # Stratified: every class is in both splits.
    assert set(first.y_val) == set(first.y_train) == set(range(first.num_classes))


def test_digits_default_is_images_in_unit_range():
    data = load_dataset("digits", seed=1)
    assert data.x_train.shape[1:] == (8, 8, 1) and data.x_train.dtype == np.float32
    assert data.num_classes == 10 and data.is_image and data.input_norm == "unit"
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0  # 16 / 16


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "placement"])
def test_standard_uses_training_statistics_only(name):
    data = load_dataset(name, seed=1, input_norm="standard")
    flat = data.x_train.reshape(len(data.x_train), -1)
    varying = flat.std(axis=0) > 0
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=0)[varying], 1.0, atol=1e-4)
    # The validation split is scaled with the training statistics, so it is not exactly standard.
    assert np.abs(data.x_val.reshape(len(data.x_val), -1).mean(axis=0)).max() > 1e-3


def test_tabular_defaults_to_standard_and_none_keeps_raw_values():
    assert load_dataset("breast_cancer", seed=1).input_norm == "standard"
    raw = load_dataset("placement", seed=1, input_norm="none")
    assert 4.0 <= raw.x_train[:, 0].min() and raw.x_train[:, 0].max() <= 10.0  # cgpa
    assert raw.x_train[:, 1].mean() > 80  # iq


def test_placement_is_synthetic_from_the_seed():
    first = datasets.make_placement(300, seed=3)
    again = datasets.make_placement(300, seed=3)
    np.testing.assert_array_equal(first.x, again.x)
    np.testing.assert_array_equal(first.y, again.y)
    assert first.x_val is None and not first.is_image
    x, y = first.x, first.y
    assert x.shape == (300, 2) and 0.2 < y.mean() < 0.8
    # Higher cgpa → placed more often: the generating rule is there.
    assert y[x[:, 0] > 8.5].mean() > y[x[:, 0] < 6.5].mean() + 0.3


def _write_mnist(cache, n=12):
    rng = np.random.default_rng(0)
    os.makedirs(cache / "datasets", exist_ok=True)
    np.savez(
        cache / "datasets" / "mnist.npz",
        x_train=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        y_train=np.arange(n) % 10,
        x_test=rng.integers(0, 256, (n // 2, 28, 28), dtype=np.uint8),
        y_test=np.arange(n // 2) % 10,
    )


def _write_fashion_mnist(cache, n=10):
    folder = cache / "datasets" / "fashion-mnist"
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n), ("t10k", n // 2)):
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes(8) + (np.arange(count) % 10).astype(np.uint8).tobytes())
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(bytes(16) + rng.integers(0, 256, count * 784, dtype=np.uint8).tobytes())


def _write_cifar10(cache, n=4):
    folder = cache / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": list(range(n)),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


CACHE_WRITERS = {
    "mnist": (_write_mnist, (28, 28, 1), 12, 6),
    "fashion_mnist": (_write_fashion_mnist, (28, 28, 1), 10, 5),
    "cifar10": (_write_cifar10, (32, 32, 3), 20, 4),
}


@pytest.mark.parametrize("name", sorted(CACHE_WRITERS))
def test_keras_datasets_load_from_the_cache(name, tmp_path, monkeypatch):
    write, shape, train_size, val_size = CACHE_WRITERS[name]
    write(tmp_path)
    # Would fail if the loader tried the network instead of the cached file.
    monkeypatch.setitem(datasets.ORIGINS, name, "http://127.0.0.1:9/")
    data = load_dataset(name, seed=1, cache_dir=str(tmp_path))
    assert data.x_train.shape == (train_size, *shape) and data.x_val.shape == (val_size, *shape)
    assert data.is_image and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.x_train.max() > 0.9  # divided by 255, not by something larger


@pytest.mark.parametrize("name", sorted(CACHE_WRITERS))
def test_keras_datasets_offline_fail_with_the_file_to_place(name, tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.ORIGINS, name, "http://127.0.0.1:9/")
    with pytest.raises(DatasetError) as error:
        load_dataset(name, seed=1, cache_dir=str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"{name}: cannot download") and "\n" not in message
    assert f"place the file at {tmp_path}" in message


def test_offline_download_is_one_line_from_the_command(tmp_path):
    env = {**OFFLINE_ENV, "KERAS_HOME": str(tmp_path / "keras")}
    done = run_python("-m", "train.train", "--dataset", "mnist", "--logdir", str(tmp_path),
                      env=env, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "mnist: cannot download" in lines[0]
    assert os.path.join(str(tmp_path / "keras"), "datasets", "mnist.npz") in lines[0]
    assert "Traceback" not in done.stderr


def test_user_npz_uses_its_test_split(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "own.npz"
    np.savez(
        path,
        x_train=rng.normal(size=(30, 5)),
        y_train=np.arange(30) % 3,
        x_test=rng.normal(size=(9, 5)),
        y_test=np.arange(9) % 3,
    )
    data = load_dataset("npz", seed=1, data_path=str(path))
    assert data.x_train.shape == (30, 5) and data.x_val.shape == (9, 5) and data.num_classes == 3


@pytest.mark.parametrize("label_column", ["placed", "2", None])
def test_user_csv_with_label_column(tmp_path, label_column):
    path = tmp_path / "placement.csv"
    rows = ["cgpa,iq,placed"] + [
        f"{6 + i % 4},{90 + i},{'yes' if i % 2 else 'no'}" for i in range(40)
    ]
    path.write_text("\n".join(rows) + "\n")
    data = load_dataset("csv", seed=1, data_path=str(path), label_column=label_column)
    assert data.x_train.shape[1] == 2 and data.num_classes == 2
    assert len(data.y_train) + len(data.y_val) == 40


@pytest.mark.parametrize(
    "content, label_column, expected",
    [
        ("a,b\n1,x\n", None, "single class"),
        ("a,b\n1,0\n2,1\n", "zzz", "--label-column 'zzz'"),
        ("a,b\nfoo,0\nbar,1\n", None, "non-numeric"),
    ],
)
def test_bad_csv_is_one_clear_error(tmp_path, content, label_column, expected):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=expected):
        load_dataset("csv", seed=1, data_path=str(path), label_column=label_column)


def test_missing_file_and_unknown_name():
    with pytest.raises(DatasetError, match="no such readable file"):
        load_dataset("npz", seed=1, data_path="/nonexistent/x.npz")
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet", seed=1)


def test_train_samples_takes_the_first_of_the_seed_fixed_split_and_keeps_validation():
    """Guards --train-samples (E8): a prefix of the same split, not a new draw."""
    whole = load_dataset("digits", seed=2)
    subset = datasets.take_training_samples(whole, 300)
    np.testing.assert_array_equal(subset.x_train, whole.x_train[:300])
    np.testing.assert_array_equal(subset.y_train, whole.y_train[:300])
    np.testing.assert_array_equal(subset.x_val, whole.x_val)
    assert set(subset.y_train) == set(range(10))  # a few hundred digits hold every class
    available = len(whole.x_train)  # 1438 with the default split
    assert len(datasets.take_training_samples(whole, available).x_train) == available
    for count in (0, available + 1):
        with pytest.raises(DatasetError, match=rf"--train-samples must be in \[1, {available}\]"
                                               rf" \(the digits training split\), got {count}"):
            datasets.take_training_samples(whole, count)
