"""kbn vs Keras in whole `model.fit` epochs of the train/ pipeline's models.

Each round fits every model a few epochs, in a rotating order
(`benchmarks.timing.round_orders`); the medians are over every timed epoch,
and the paired intervals (`benchmarks.intervals`) compare each round's median
epoch. Besides kbn and Keras: a second Keras model (the A/A control) and the
same model without BN, which shows how much of an epoch BN takes at all.
"""

import statistics
import time

import keras

from benchmarks.intervals import CONTROL, paired_ci
from benchmarks.timing import round_orders

# The train/ pipeline's models with their defaults: `mlp` is 3 × (Dense(100) →
# BN → sigmoid), `cnn` 3 × (Conv2D(100, 3×3) → BN → sigmoid) with max pooling.
MODELS = {"MLP": "mlp", "CNN": "cnn"}
BN_NAMES = {"kbn": "kbn", "Keras": "keras", "no BN": "none"}  # table name -> train/ `bn`
BATCH_SIZE = 60


def digits():
    """The train/ pipeline's digits training split (80 %): 8×8×1 images in [0, 1], labels."""
    from train.data.datasets import load_dataset

    data = load_dataset("digits", seed=1)
    return data.x_train, data.y_train


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def compiled_model(model_name, layer_name):
    """The train/ model `MODELS[model_name]` with the BN layer `layer_name`
    (a key of `BN_NAMES`), compiled with SGD(0.1) for digits' 10 classes."""
    from train.data.models import build_model

    images, _ = digits()
    model = build_model(MODELS[model_name], input_shape=images.shape[1:], num_classes=10,
                        bn=BN_NAMES[layer_name], seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def bench_fit(model_names, rounds, epochs, log):
    """Median seconds per `fit` epoch with each layer, a second Keras model (the
    A/A control) and without BN, in interleaved rounds of `epochs` epochs each.

    The model without BN shows how much of an epoch BN takes at all: the
    kbn/Keras ratio of a whole epoch cannot go below no-BN/Keras.
    """
    images, labels = digits()
    rows = []
    for model_name in model_names:
        models = {}
        for name, layer_name in [(name, name) for name in BN_NAMES] + [(CONTROL, "Keras")]:
            model = compiled_model(model_name, layer_name)
            model.fit(images, labels, batch_size=BATCH_SIZE, epochs=1, verbose=0)  # traces
            models[name] = model
        seconds = {name: [] for name in models}
        per_round = {name: [] for name in models}
        orders = round_orders(models)
        for round_index in range(rounds):
            for name in orders[round_index % len(orders)]:
                timer = EpochTimer()
                models[name].fit(images, labels, batch_size=BATCH_SIZE, epochs=epochs, verbose=0,
                                 callbacks=[timer])
                seconds[name] += timer.seconds
                per_round[name].append(statistics.median(timer.seconds))
        medians = {name: statistics.median(s) for name, s in seconds.items()}
        row = {
            "model": model_name,
            "epochs": len(seconds["kbn"]),
            "jit_compile": models["kbn"].jit_compile,
            "keras_s": medians["Keras"],
            "kbn_s": medians["kbn"],
            "none_s": medians["no BN"],
            "ratio": medians["kbn"] / medians["Keras"],
            "ci": paired_ci(per_round, "kbn"),
            "aa_ci": paired_ci(per_round, CONTROL),
            "bn_share": (medians["Keras"] - medians["no BN"]) / medians["Keras"],
        }
        rows.append(row)
        log(f"{model_name:>16} fit   Keras {row['keras_s']:.3f} s/epoch  kbn {row['kbn_s']:.3f}"
            f" s/epoch  ratio {row['ratio']:.2f}")
    return rows
