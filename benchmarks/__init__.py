"""Speed benchmarks: kbn's batch norm against `keras.layers.BatchNormalization`.

    python -m benchmarks.suite           # everything; writes benchmarks/results.md (`make bench`)
    python -m benchmarks.suite --quick   # a smoke run in seconds, prints only
    python -m benchmarks.memory          # peak memory alone, each case in a fresh process

One module per measurement (`layer_steps`, `fit_epochs`, `memory`), with
the shared timing (`timing`), confidence intervals (`intervals`), machine
description (`machine`) and report writer (`report`).
"""
