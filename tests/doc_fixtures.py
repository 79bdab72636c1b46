"""What the docs' python blocks take as given, for tests/test_doc_snippets.py.

A block marked `<!-- snippet: fixture NAME -->` runs after
`globals().update(NAME())`: each function here returns the names such a
block uses without defining them. They are small on purpose (one process,
seconds), and say what they stand for.
"""

def digits_model():
    """`model`: a compiled Sequential net with a kbn layer (64 → Dense 32 → BN →
    sigmoid → softmax over 10 digits, SGD) like `make run`'s, untrained; `x`, `y`:
    the offline scikit-learn digits (1797 × 64, pixels ÷ 16) and labels;
    `x_train` and `x_val`: the first 1437 and the last 360 of them."""
    import keras
    from sklearn.datasets import load_digits

    import kbn

    digits = load_digits()
    x, y = (digits.data / 16.0).astype("float32"), digits.target.astype("int64")
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, use_bias=False),
        kbn.BatchNormalization(),
        keras.layers.Activation("sigmoid"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return {"model": model, "x": x, "y": y, "x_train": x[:1437], "x_val": x[1437:]}


def overflowing_variance_table(path):
    """The table docs/tools.md calls `huge.npz`: tests/test_inference_gap.py's."""
    from test_inference_gap import overflowing_variance_data

    return overflowing_variance_data(path)


# Files a checked command names (`python -m train.compare --data huge.npz`), made in
# its working directory before it runs.
FILES = {"huge.npz": overflowing_variance_table}
