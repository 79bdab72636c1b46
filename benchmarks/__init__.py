"""Speed benchmarks: kbn's batch norm against `keras.layers.BatchNormalization`.

    python -m benchmarks.layer           # the full run, writes benchmarks/results.md
    python -m benchmarks.layer --quick   # a smoke run in seconds, prints only
"""
