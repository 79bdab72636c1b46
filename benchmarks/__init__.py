"""Speed benchmarks: kbn's batch norm against `keras.layers.BatchNormalization`
(and tf.keras 2's layer for the options Keras 3 dropped).

    python -m benchmarks.suite           # everything; writes benchmarks/results.md (`make bench`)
    python -m benchmarks.suite --quick   # a smoke run in seconds, prints only
    python -m benchmarks.memory          # peak memory alone, each case in a fresh process
    python -m benchmarks.backends        # JAX and PyTorch alone, each in a fresh process

One module per measurement: `layer_steps` (TensorFlow training step and
inference), `ghost` (`virtual_batch_size`), `multi_axis` (`axis=[1, 3]`),
`fit_epochs`, `memory` (with `memory_probe`, one case in this process),
`backends` (with `backend_steps`, one backend in this process). Shared:
`timing` (interleaved rounds), `intervals` (paired confidence intervals, the
A/A control), `comparisons` (ratios judged against the A/A control and a
target), `shapes`, `machine` (machine description, copy bandwidth) and
`report` (the markdown report).
"""
