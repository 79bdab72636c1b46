"""After a BN run: the train/inference gap, and `--recalibrate`.

    from train.run import inference_gap
    summary.update(inference_gap.after_training(model, data, args, "kbn"))

Inference mode normalizes with the moving averages, training mode with the
batch's own statistics. When the moving averages lag the network (early in
training, after a change of data, with a momentum close to 1), validation
accuracy in inference mode falls behind what the network does with batch
statistics. This module measures both and, with `--recalibrate`, recomputes
the moving statistics over the training data (`kbn.recalibrate`, the paper's
Algorithm 2) and measures again.
"""

import keras
import numpy as np

import kbn
from kbn._variables import restored_variables

# A gap larger than this (in accuracy points) is announced at the end of the run.
GAP_POINTS = 5.0


def inference_metrics(model, x, y, batch_size, part=None):
    """Loss and accuracy on (x, y) in inference mode: Keras's `evaluate` with the metric
    the model is compiled with, the numbers `fit` logs as val_loss and val_accuracy.

    `part`: under JAX over several processes, this process's share of a batch
    (`Distribution.part`); every process calls this with the same (x, y).
    """
    if part is None:
        results = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    else:
        from train.run.trainer import Batches

        results = model.evaluate(Batches(x, y, batch_size, part), verbose=0, return_dict=True)
    return results["loss"], results["accuracy"]


def batch_statistics_accuracy(model, x, y, batch_size):
    """Accuracy on (x, y) with every BN layer normalizing with batch statistics.

    The batches run in training mode, which moves BN's moving statistics (and
    kbn's skip counters): every variable is restored afterwards.
    """
    correct = 0
    with restored_variables(model):
        for start in range(0, len(x), batch_size):
            probabilities = model(x[start:start + batch_size], training=True)
            predicted = np.argmax(keras.ops.convert_to_numpy(probabilities), axis=-1)
            correct += int(np.sum(predicted == y[start:start + batch_size]))
    return correct / len(x)


def after_training(model, data, args, label, part=None):
    """The gap check and, with `args.recalibrate`, the recalibration; returns summary entries.

    Prints one line when the gap exceeds `GAP_POINTS`, and one line with the
    recalibrated numbers. `part`: see `inference_metrics` (the other checks call
    the model on whole batches, which every process computes alike).
    """
    loss, accuracy = inference_metrics(model, data.x_val, data.y_val, args.batch_size, part)
    # The last batch may hold a single sample, whose batch variance is 0: batches of at
    # least 2 (the layer refuses 1 with an unbiased variance).
    batch_stats = batch_statistics_accuracy(model, data.x_val, data.y_val,
                                            max(args.batch_size, 2))
    gap = 100.0 * (batch_stats - accuracy)
    entries = {"val_accuracy_batch_stats": batch_stats, "train_inference_gap": gap / 100.0}
    recalibrate = getattr(args, "recalibrate", False)
    if gap > GAP_POINTS:
        advice = "" if recalibrate else "; --recalibrate recomputes them over the training data"
        print(f"[{label}] train/inference gap: validation accuracy {accuracy:.4f} with the moving"
              f" averages, {batch_stats:.4f} with batch statistics ({gap:.1f} points): the"
              f" moving averages lag the network{advice}", flush=True)
    if recalibrate:
        entries.update(val_accuracy_ema=accuracy, val_loss_ema=loss)
        try:
            kbn.recalibrate(model, data.x_train, batch_size=max(args.batch_size, 2))
        except ValueError as error:
            print(f"[{label}] --recalibrate skipped: {error}", flush=True)
            return entries
        loss, accuracy = inference_metrics(model, data.x_val, data.y_val, args.batch_size, part)
        entries.update(val_accuracy_recalibrated=accuracy, val_loss_recalibrated=loss)
        print(f"[{label}] recalibrated: validation accuracy {entries['val_accuracy_ema']:.4f}"
              f" → {accuracy:.4f}, loss {entries['val_loss_ema']:.4f} → {loss:.4f}", flush=True)
    return entries
