"""Ctrl-C and --resume: an interrupted-and-resumed run ends equal to an uninterrupted one."""

import os
import shutil

import keras
import numpy as np
import pytest

from tensorboard_events import scalar_values
from tiny_runs import only_run, read_run_file
from train import train as train_command
from train.run import files

# Momentum gives the optimizer a state of its own that the checkpoint must carry.
FLAGS = ["--epochs", "4", "--hidden", "8,8", "--lr", "0.1", "--momentum", "0.9", "--bn", "kbn"]
INTERRUPTED_AFTER = 2


class PressCtrlC(keras.callbacks.Callback):
    """Presses Ctrl-C, deterministically: at the end of epoch `epochs`, or in
    the middle of the next epoch, after `mid_epoch_batches` of its batches."""

    def __init__(self, epochs, mid_epoch_batches=None):
        super().__init__()
        self.epochs = epochs
        self.mid_epoch_batches = mid_epoch_batches

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.epochs and batch + 1 == self.mid_epoch_batches:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs=None):
        if self.mid_epoch_batches is None and epoch + 1 == self.epochs:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    whole_logs = str(tmp_path_factory.mktemp("whole"))
    assert train_command.main([*FLAGS, "--logdir", whole_logs]) == 0
    return only_run(whole_logs)


# Ctrl-C at the end of epoch 2, or halfway through epoch 3 (24 batches an
# epoch): either way 2 epochs are finished, and the half epoch is redone.
@pytest.fixture(scope="module", params=[None, 12], ids=["after-epoch", "mid-epoch"])
def runs(request, whole_run, tmp_path_factory):
    split_logs = str(tmp_path_factory.mktemp("split"))
    status = train_command.main(
        [*FLAGS, "--logdir", split_logs],
        extra_callbacks=[PressCtrlC(INTERRUPTED_AFTER, mid_epoch_batches=request.param)],
    )
    split_dir = only_run(split_logs)
    after_interrupt = (read_run_file(split_dir, "summary.json"),
                       read_run_file(split_dir, "checkpoint.json"))
    resume_status = train_command.main(["--resume", split_dir])
    return whole_run, split_dir, status, after_interrupt, resume_status


def test_interrupt_keeps_summary_and_checkpoint(runs):
    _, _, status, (summary, checkpoint), _ = runs
    assert status == 130
    assert summary["status"] == "interrupted" and summary["stopped_early"] == "interrupted"
    assert summary["epochs_run"] == INTERRUPTED_AFTER
    assert checkpoint["epochs_done"] == INTERRUPTED_AFTER
    assert checkpoint["file"] == "checkpoint.keras" and len(checkpoint["sha256"]) == 64


def test_resumed_run_equals_uninterrupted_run(runs):
    whole_dir, split_dir, _, _, resume_status = runs
    assert resume_status == 0
    whole = keras.saving.load_model(os.path.join(whole_dir, "checkpoint.keras"))
    split = keras.saving.load_model(os.path.join(split_dir, "checkpoint.keras"))
    # Weights include BN's moving mean and variance.
    names = [variable.path for variable in whole.weights]
    assert any("moving_variance" in name for name in names)
    for name, a, b in zip(names, whole.get_weights(), split.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=name)
    optimizer_whole = [v.numpy() for v in whole.optimizer.variables]
    optimizer_split = [v.numpy() for v in split.optimizer.variables]
    assert int(optimizer_whole[0]) == int(optimizer_split[0]) == 4 * 24  # iterations
    assert len(optimizer_whole) > 2  # the momentum buffers are there
    for a, b in zip(optimizer_whole, optimizer_split):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_resumed_metrics_and_summary_continue_the_run(runs):
    whole_dir, split_dir, *_ = runs
    whole_rows = read_run_file(whole_dir, "metrics.csv")
    split_rows = read_run_file(split_dir, "metrics.csv")
    assert [row["epoch"] for row in split_rows] == ["1", "2", "3", "4"]
    for a, b in zip(whole_rows, split_rows):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6)
    summary = read_run_file(split_dir, "summary.json")
    assert summary["status"] == "finished" and summary["epochs_run"] == 4
    assert summary["best_val_accuracy"] == pytest.approx(
        read_run_file(whole_dir, "summary.json")["best_val_accuracy"]
    )
    # TensorBoard's epoch curve has all four epochs, two from each part of the run.
    steps = sorted(
        step for step, _ in scalar_values(os.path.join(split_dir, "validation"), "epoch_loss")
    )
    assert steps == [0, 1, 2, 3]


def test_a_resume_hashes_the_checkpoint_once(whole_run, tmp_path, monkeypatch):
    """Guards the one check: train.train verifies checkpoint.keras before Keras is
    imported and hands that on to `runs.load_run`, which used to hash it again."""
    run_dir = str(tmp_path / "run")
    shutil.copytree(whole_run, run_dir)  # finished: the resume trains no epoch, saves nothing
    hashed = []
    sha256 = files.sha256
    monkeypatch.setattr(files, "sha256", lambda path: hashed.append(path) or sha256(path))
    assert train_command.main(["--resume", run_dir]) == 0
    assert hashed == [os.path.join(run_dir, "checkpoint.keras")]


def test_resume_of_a_folder_without_checkpoint_is_refused(tmp_path, capsys):
    (tmp_path / "args.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        train_command.main(["--resume", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no finished epoch to resume from" in capsys.readouterr().err


def test_the_checkpoint_evaluates_with_its_metric(whole_run):
    """The model is compiled with its loss and accuracy: the saved checkpoint.keras
    reports both, equal to the last epoch's validation row."""
    from train import train as command

    settings = type("Settings", (), read_run_file(whole_run, "args.json"))()
    data = command.load_data(settings)
    model = keras.saving.load_model(os.path.join(whole_run, "checkpoint.keras"))
    results = model.evaluate(data.x_val, data.y_val, batch_size=60, verbose=0, return_dict=True)
    last = read_run_file(whole_run, "metrics.csv")[-1]
    assert results["accuracy"] == pytest.approx(float(last["val_accuracy"]), abs=1e-7)
    assert results["loss"] == pytest.approx(float(last["val_loss"]), rel=1e-5)


def _files(run_dir):
    """Every file of a run folder and its bytes: to show that nothing was written."""
    found = {}
    for folder, _, names in os.walk(run_dir):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                found[os.path.relpath(os.path.join(folder, name), run_dir)] = f.read()
    return found


@pytest.fixture
def finished_run(whole_run, tmp_path):
    """A copy of the finished 4-epoch run, to resume without touching `whole_run`."""
    copy = str(tmp_path / os.path.basename(whole_run))
    shutil.copytree(whole_run, copy)
    return copy


def test_resume_with_epochs_continues_a_finished_run_to_the_new_total(finished_run, tmp_path,
                                                                        capsys):
    """Regression: --resume RUN --epochs 6 on a finished 4-epoch run did nothing, silently."""
    assert train_command.main(["--resume", finished_run, "--epochs", "6"]) == 0
    assert f"resuming {finished_run} after epoch 4, to epoch 6" in capsys.readouterr().out
    assert read_run_file(finished_run, "args.json")["epochs"] == 6
    summary = read_run_file(finished_run, "summary.json")
    assert summary["epochs_run"] == 6 and summary["hyperparameters"]["epochs"] == 6
    assert [row["epoch"] for row in read_run_file(finished_run, "metrics.csv")] == [
        "1", "2", "3", "4", "5", "6"]
    # It ends where an uninterrupted 6-epoch run ends.
    six_logs = str(tmp_path / "six")
    flags = [*FLAGS[:FLAGS.index("--epochs")], *FLAGS[FLAGS.index("--epochs") + 2:]]
    assert train_command.main([*flags, "--epochs", "6", "--logdir", six_logs]) == 0
    six = keras.saving.load_model(os.path.join(only_run(six_logs), "checkpoint.keras"))
    continued = keras.saving.load_model(os.path.join(finished_run, "checkpoint.keras"))
    for a, b in zip(six.get_weights(), continued.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_resume_of_a_finished_run_without_epochs_says_so_and_writes_nothing(finished_run,
                                                                            capsys):
    before = _files(finished_run)
    assert train_command.main(["--resume", finished_run]) == 0
    assert capsys.readouterr().out == (
        f"{finished_run} has finished all its 4 epochs; nothing to resume"
        " (--epochs N continues it to N epochs in all)\n")
    assert _files(finished_run) == before


@pytest.mark.parametrize("flags, named", [
    (["--lr", "0.5"], "--lr with --resume"),
    (["--lr", "1.0"], "--lr with --resume"),  # the default value, given: refused all the same
    (["--hidden", "8,8", "--bn", "none", "--epochs", "6"], "--hidden, --bn with --resume"),
    (["--no-bn-sync"], "--bn-sync with --resume"),
    (["--epochs", "3"], "--epochs 3: "),
    (["--epochs", "0"], "--epochs 0: "),
])
def test_resume_refuses_flags_it_would_ignore(finished_run, flags, named, capsys):
    before = _files(finished_run)
    with pytest.raises(SystemExit) as exit_info:
        train_command.main(["--resume", finished_run, *flags])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("python -m train.train: error: ")
    assert named in err
    assert _files(finished_run) == before
