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

Under a tf.distribute strategy every replica holds a copy of each variable,
and Keras creates BN's moving statistics with aggregation "none": each
replica updates its own copy from its own batch statistics. With --bn-sync
those are the global batch's, the same on every replica; with --no-bn-sync
the copies drift apart, and `fit`'s validation (val_acc) normalizes each
replica's share of a batch with that replica's copy. checkpoint.keras, and
any read of the model, has replica 0's. The check measures the model as the
checkpoint keeps it (it makes every copy replica 0's) and, where that changes
the number, says so next to the number `fit`'s way gives.
"""

import keras
import numpy as np

import kbn
from kbn._variables import restored_variables
from train.reports.numbers import number

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


def replica_spread(model):
    """The largest difference between the replicas' copies of a non-trainable variable.

    0.0 without a tf.distribute strategy of several replicas (one copy), or
    when every replica's moving statistics are the same (--bn-sync).
    """
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow's trainer only
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return 0.0
    spread = 0.0
    for variable in model.non_trainable_variables:
        copies = [np.asarray(copy, dtype=np.float64)
                  for copy in strategy.experimental_local_results(variable.value)]
        spread = max([spread, *(float(np.max(np.abs(copy - copies[0]))) for copy in copies)])
    return spread


def make_replicas_agree(model):
    """Gives every replica replica 0's copy of each non-trainable variable: the model
    as checkpoint.keras holds it (an assignment outside a replica writes every copy)."""
    for variable in model.non_trainable_variables:
        variable.assign(keras.ops.convert_to_numpy(variable))


def after_training(model, data, args, label, part=None):
    """The gap check and, with `args.recalibrate`, the recalibration; returns summary entries.

    Prints one line when the gap exceeds `GAP_POINTS`, and one line with the
    recalibrated numbers. `part`: see `inference_metrics` (the other checks call
    the model on whole batches, which every process computes alike).
    """
    spread = replica_spread(model)
    if spread > 0:
        _, per_replica = inference_metrics(model, data.x_val, data.y_val, args.batch_size, part)
        make_replicas_agree(model)
    loss, accuracy = inference_metrics(model, data.x_val, data.y_val, args.batch_size, part)
    if spread > 0 and per_replica != accuracy:
        print(f"[{label}] validation accuracy with the moving averages: {number(accuracy)} as"
              f" checkpoint.keras keeps them (replica 0's), {number(per_replica)} with each"
              f" replica's own on its share of a batch (fit's val_acc): without --bn-sync the"
              f" replicas' moving averages drift apart (up to {spread:.1e})", flush=True)
    # The last batch may hold a single sample, whose batch variance is 0: batches of at
    # least 2 (the layer refuses 1 with an unbiased variance).
    batch_stats = batch_statistics_accuracy(model, data.x_val, data.y_val,
                                            max(args.batch_size, 2))
    gap = 100.0 * (batch_stats - accuracy)
    entries = {"val_accuracy_batch_stats": batch_stats, "train_inference_gap": gap / 100.0}
    if spread > 0:
        entries.update(moving_statistics_replica_spread=spread,
                       val_accuracy_replicas_own_statistics=per_replica)
    recalibrate = getattr(args, "recalibrate", False)
    if gap > GAP_POINTS:
        advice = "" if recalibrate else "; --recalibrate recomputes them over the training data"
        print(f"[{label}] train/inference gap: validation accuracy {number(accuracy)} with the"
              f" moving averages, {number(batch_stats)} with batch statistics ({gap:.1f}"
              f" points): the moving averages lag the network{advice}", flush=True)
    if recalibrate:
        entries.update(val_accuracy_ema=accuracy, val_loss_ema=loss)
        try:
            kbn.recalibrate(model, data.x_train, batch_size=max(args.batch_size, 2))
        except ValueError as error:
            print(f"[{label}] --recalibrate skipped: {error}", flush=True)
            return entries
        loss, accuracy = inference_metrics(model, data.x_val, data.y_val, args.batch_size, part)
        entries.update(val_accuracy_recalibrated=accuracy, val_loss_recalibrated=loss)
        print(f"[{label}] recalibrated: validation accuracy {number(entries['val_accuracy_ema'])}"
              f" → {number(accuracy)}, loss {number(entries['val_loss_ema'])} → {number(loss)}",
              flush=True)
    return entries
