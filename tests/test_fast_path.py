"""The TensorFlow fast path (`kbn/_tf_fast.py`) against the generic one.

Both of its kernels (the fused kernel, which `auto` takes with oneDNN, and the
compiled passes of `kbn/_tf_compiled.py`, which it takes without) are tested
on every CPU configuration. `_tf_fast` must give `_generic`'s numbers
wherever `supports` says it serves: outputs, the returned batch mean /
biased variance, and the gradients with respect to x, γ and β. The full layer
parity suite runs on every path through `KBN_PATH`; these tests compare the
kernel modules directly.

Tolerance: 1e-5 relative plus 1e-5 absolute, the absolute part scaled by the
tensor's largest magnitude. The two paths sum in different orders (Eigen's
reductions vs the fused kernel's), and a float32 sum of m terms is only known
to ~m·2⁻²⁴ of its terms' size: dβ = Σ dy over 2048 rows can differ by 1e-4
while being ~50 in size, so a purely element-wise rtol would flag rounding.
"""

import numpy as np
import pytest
import tensorflow as tf

from kbn import _generic, _tf_fast

# Each kernel whatever the size.
KERNELS = pytest.mark.parametrize("kernel", [_tf_fast.always_fused, _tf_fast.always_compiled],
                                  ids=["fused", "compiled"])

EPSILON = 1e-3
SHAPES = [(2, 5), (64, 100), (2048, 12), (8, 6, 6, 16), (3, 7, 9), (2, 3, 4, 5, 6)]


def _assert_close(actual, expected, name):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale, err_msg=name)


def _forward_and_grads(module, x, gamma, beta, upstream, training, graph):
    """Outputs, statistics and d(Σ y·upstream)/d(x, γ, β) through `module`."""
    rank = len(x.shape)
    axis, reduction_axes = (rank - 1,), list(range(rank - 1))
    channels = x.shape[-1]
    moving_mean = tf.linspace(-1.0, 1.0, channels)
    moving_variance = tf.linspace(0.5, 2.0, channels)

    def run(x, gamma, beta):
        with tf.GradientTape() as tape:
            tape.watch([x] + [w for w in (gamma, beta) if w is not None])
            if training:
                y, mean, variance, count = module.train_forward(
                    x, gamma, beta, EPSILON, axis, reduction_axes, None
                )
                assert count is None  # no mask: the same count in every channel
                statistics = [mean, variance]
            else:
                y = module.infer_forward(
                    x, moving_mean, moving_variance, gamma, beta, EPSILON, axis
                )
                statistics = []
            loss = tf.reduce_sum(y * upstream)
        sources = [x] + [w for w in (gamma, beta) if w is not None]
        return [y] + statistics + tape.gradient(loss, sources)

    if graph:
        # A dynamic batch dimension, as in `fit()` (where the last batch is smaller).
        signature = [tf.TensorSpec([None] + list(x.shape[1:]))]
        signature += [tf.TensorSpec([channels]) for w in (gamma, beta) if w is not None]
        traced = tf.function(
            lambda x, *weights: run(x, *_unpack(weights, gamma, beta)),
            input_signature=signature,
        )
        results = traced(x, *[w for w in (gamma, beta) if w is not None])
    else:
        results = run(x, gamma, beta)
    return [r.numpy() for r in results]


def _unpack(weights, gamma, beta):
    weights = list(weights)
    return (weights.pop(0) if gamma is not None else None,
            weights.pop(0) if beta is not None else None)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("center_scale", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@KERNELS
def test_fast_path_matches_generic(shape, center_scale, training, graph, kernel):
    rng = np.random.default_rng(sum(shape))
    center, scale = center_scale
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype("float32"))
    gamma = tf.constant(rng.normal(1.0, 0.5, shape[-1]).astype("float32")) if scale else None
    beta = tf.constant(rng.normal(0.0, 1.0, shape[-1]).astype("float32")) if center else None
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    assert _tf_fast.supports(x, training, None, (len(shape) - 1,), EPSILON)

    fast = _forward_and_grads(kernel, x, gamma, beta, upstream, training, graph)
    generic = _forward_and_grads(_generic, x, gamma, beta, upstream, training, graph)

    names = ["outputs"] + (["mean", "variance"] if training else [])
    names += ["dx"] + ["dgamma"] * scale + ["dbeta"] * center
    assert len(fast) == len(generic) == len(names)
    for name, a, b in zip(names, fast, generic):
        assert a.shape == b.shape, name
        _assert_close(a, b, name)


@KERNELS
def test_variance_is_biased_and_two_pass(kernel):
    """Guards the (m − 1)/m correction: the fused kernel reports Σ(x − μ)²/(m − 1).

    1e4 + noise also checks the variance is taken about the mean (E[x²] − E[x]²
    would lose it to cancellation in float32).
    """
    rng = np.random.default_rng(0)
    x = (1e4 + rng.normal(size=(6, 5, 4, 3))).astype("float32")
    _, mean, variance, _ = kernel.train_forward(
        tf.constant(x), None, None, EPSILON, (3,), [0, 1, 2], None
    )
    flat = x.astype("float64").reshape(-1, 3)
    np.testing.assert_allclose(mean.numpy(), flat.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(variance.numpy(), flat.var(axis=0), rtol=1e-4)


@pytest.mark.parametrize("batch", [0, 1], ids=["empty", "single"])
@KERNELS
def test_degenerate_batches_match_generic(batch, kernel):
    """m = 1: variance 0 (not 0/0); m = 0: NaN statistics on both paths, which
    the layer's NaN-safe update skips."""
    x = tf.ones([batch, 4])
    fast = kernel.train_forward(x, None, None, EPSILON, (1,), [0], None)
    generic = _generic.train_forward(x, None, None, EPSILON, (1,), [0], None)
    for a, b in zip(fast[:3], generic[:3]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    if batch == 1:
        np.testing.assert_array_equal(fast[2].numpy(), np.zeros(4))
    else:
        assert np.all(np.isnan(fast[1].numpy())) and np.all(np.isnan(fast[2].numpy()))


@KERNELS
def test_nan_stays_in_its_channel(kernel):
    """A NaN gives NaN statistics in its channel only, so the layer's NaN-safe
    update can skip exactly that channel."""
    x = np.arange(12, dtype="float32").reshape(4, 3)
    x[1, 1] = np.nan
    _, mean, variance, _ = kernel.train_forward(
        tf.constant(x), None, None, EPSILON, (1,), [0], None
    )
    assert np.isnan(mean.numpy()).tolist() == [False, True, False]
    assert np.isnan(variance.numpy()).tolist() == [False, True, False]


def _supports(shape=(4, 3), dtype="float32", training=True, mask=None, axes=None,
              epsilon=EPSILON, synchronized=False):
    x = tf.zeros(shape, dtype)
    axes = (len(shape) - 1,) if axes is None else axes
    return _tf_fast.supports(x, training, mask, axes, epsilon, synchronized=synchronized)


def test_supports_the_served_cases():
    assert _supports()
    assert _supports(shape=(2, 3, 4, 5))
    assert _supports(shape=(2, 3, 4, 5, 6), training=False)
    # Synchronized matters only for training statistics.
    assert _supports(training=False, synchronized=True)


@pytest.mark.parametrize(
    "case",
    [
        {"dtype": "float64"},
        {"dtype": "float16"},
        {"mask": tf.ones([4, 1], "bool")},
        {"synchronized": True},
        {"shape": (2, 3, 4, 5), "axes": (1,)},
        {"shape": (2, 3, 4, 5), "axes": (1, 3)},
        {"shape": (5,), "axes": (0,)},
        {"epsilon": 1e-6},
    ],
    ids=["float64", "float16", "mask", "synchronized", "channels_first", "two_axes", "rank1",
         "tiny_epsilon"],
)
def test_supports_rejects_what_it_cannot_serve(case):
    assert not _supports(**case)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("shape", [(64, 100), (6, 5, 4, 16), (2048, 12)], ids=str)
def test_matmul_statistics_match_generic(shape, jit):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype("float32"))
    gamma = tf.constant(rng.normal(1.0, 0.5, shape[-1]).astype("float32"))
    beta = tf.constant(rng.normal(0.0, 1.0, shape[-1]).astype("float32"))
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    axis, reduction_axes = (len(shape) - 1,), list(range(len(shape) - 1))

    def run(forward):
        @tf.function(jit_compile=jit)
        def step(x, gamma, beta):
            with tf.GradientTape() as tape:
                tape.watch([x, gamma, beta])
                y, mean, variance, _ = forward(x, gamma, beta, EPSILON, axis, reduction_axes,
                                               None)
                loss = tf.reduce_sum(y * upstream)
            return [y, mean, variance] + tape.gradient(loss, [x, gamma, beta])
        return [t.numpy() for t in step(x, gamma, beta)]

    names = ["outputs", "mean", "variance", "dx", "dgamma", "dbeta"]
    for name, a, b in zip(names, run(_tf_fast.matmul_train_forward),
                          run(_generic.train_forward)):
        _assert_close(a, b, name)


@pytest.mark.parametrize("shape,expected", [
    ((32, 14, 14, 16), "MatMul"),   # 392 rows per channel
    ((4096, 32), "MatMul"),         # 128 rows per channel
    ((None, 4, 4, 16), "MatMul"),   # fit()'s unknown batch counts as 32: 512 rows, 32 per channel
    ((None, 4, 4, 32), None),       # counted the same way: 16 rows per channel
    ((1024, 100), None),            # 10 rows per channel: XLA's own reductions
    ((16384, 300), None),           # over 256 channels
], ids=str)
def test_inside_xla_statistics_come_from_matrix_products_for_tall_tensors(shape, expected):
    rank = len(shape)

    def forward(x):
        return _tf_fast.train_forward(x, None, None, EPSILON, (rank - 1,), list(range(rank - 1)),
                                      None)[0]

    types_ = _op_types(forward, tf.TensorSpec(shape), jit_compile=True)
    assert "FusedBatchNormV3" not in types_  # XLA lowers it to plain math anyway
    assert ("MatMul" in types_) == (expected == "MatMul")


@pytest.mark.parametrize("shape", [(64, 7), (6, 5, 4, 3), (16, 300)], ids=str)
def test_layer_under_jit_compile_matches_keras(shape):
    """The layer's whole training step, compiled with XLA, against Keras's, compiled too."""
    import keras

    import kbn

    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(1.0, 2.0, shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    def compiled_step(layer):
        @tf.function(jit_compile=True)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True) * upstream)
            return [loss] + tape.gradient(loss, [x] + layer.trainable_weights)
        return step

    results = []
    for cls in (kbn.BatchNormalization, keras.layers.BatchNormalization):
        layer = cls(momentum=0.8)
        layer.build(shape)
        step = compiled_step(layer)
        outputs = [t.numpy() for t in step(x)] + [t.numpy() for t in step(x * 0.5 + 1.0)]
        results.append(outputs + [w.numpy() for w in layer.weights])
    for i, (a, b) in enumerate(zip(*results)):
        _assert_close(a, b, f"result {i}")


def _op_types(function, *specs, jit_compile=False):
    graph = tf.function(function, jit_compile=jit_compile).get_concrete_function(*specs).graph
    types_ = {op.type for op in graph.get_operations()}
    for op in graph.get_operations():  # the branches of a tf.cond are graphs of their own
        for name in ("then_branch", "else_branch"):
            if name in op.node_def.attr:
                branch = graph._functions[op.get_attr(name).name].graph
                types_ |= {o.type for o in branch.get_operations()}
    return types_


@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "no-onednn"])
@pytest.mark.parametrize("training", [True, False])
def test_size_decides_kernel_or_generic(monkeypatch, training, onednn):
    """Large shapes trace to the configuration's kernel (fused with oneDNN,
    compiled without, in training; inference without oneDNN stays generic),
    small ones to generic ops; an unknown batch axis counts
    as NOMINAL_BATCH samples; with other axes unknown too a tf.cond holding
    both decides at run time. Both configurations' choices are checked on
    every CPU (the choice reads `_tf_fast.ONEDNN` while tracing)."""
    monkeypatch.setattr(_tf_fast, "ONEDNN", onednn)

    def forward(x):
        channels, last = x.shape[-1], len(x.shape) - 1
        axis = (last,)
        if training:
            return _tf_fast.train_forward(x, None, None, EPSILON, axis, list(range(last)), None)[0]
        return _tf_fast.infer_forward(x, tf.zeros([channels]), tf.ones([channels]), None,
                                      None, EPSILON, axis)

    def fused(*shape):
        types_ = _op_types(forward, tf.TensorSpec(shape))
        kernels = {"fused": "FusedBatchNormV3" in types_,
                   "compiled": bool({"PartitionedCall", "StatefulPartitionedCall"} & types_)}
        expected, other = ("fused", "compiled") if onednn else ("compiled", "fused")
        assert not kernels[other], types_
        return kernels[expected], bool({"If", "StatelessIf"} & types_)

    if not (onednn or training):  # inference without oneDNN: the generic multiply-add
        for shape in ((1 << 22, 8), (None, 1 << 20, 8), (None, None, 8)):
            assert fused(*shape) == (False, False)
        return
    threshold = _tf_fast.MIN_COMPILED_ELEMENTS
    if onednn:
        threshold = _tf_fast.MIN_FUSED_ELEMENTS if training else _tf_fast.MIN_FUSED_INFER_ELEMENTS
    rows = threshold // 8
    assert fused(rows, 8) == (True, False)
    assert fused(rows - 1, 8) == (False, False)
    per_sample = threshold // _tf_fast.NOMINAL_BATCH
    assert fused(None, per_sample // 8, 8) == (True, False)
    assert fused(None, per_sample // 8 - 1, 8) == (False, False)
    assert fused(None, None, 8) == (True, True)
    if onednn and not training:  # very large inference tensors stream better on the generic ops
        rows = _tf_fast.MAX_FUSED_INFER_ELEMENTS // 8
        assert fused(rows, 8) == (True, False)
        assert fused(rows + 1, 8) == (False, False)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "no-onednn"])
def test_dynamic_batch_on_both_sides_of_the_size_threshold(monkeypatch, training, onednn):
    """One traced function (all but the channel axis unknown: a run-time tf.cond)
    serves small and large batches alike."""
    channels = 8
    rows = max(_tf_fast.MIN_FUSED_ELEMENTS, _tf_fast.MIN_FUSED_INFER_ELEMENTS) // channels
    mean, variance = tf.linspace(-1.0, 1.0, channels), tf.linspace(0.5, 2.0, channels)

    def run(module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, channels])])
        def forward(x):
            if training:
                return module.train_forward(x, None, None, EPSILON, (2,), [0, 1], None)[:3]
            return (module.infer_forward(x, mean, variance, None, None, EPSILON, (2,)),)
        return forward

    fast, generic = run(_tf_fast), run(_generic)
    rng = np.random.default_rng(0)
    for batch in (60, rows + 3):
        x = tf.constant(rng.normal(1.0, 2.0, (batch, 1, channels)).astype("float32"))
        for a, b in zip(fast(x), generic(x)):
            _assert_close(a.numpy(), b.numpy(), f"batch {batch}")


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("shape,k", [((64, 100), 16), ((32, 6, 6, 16), 8), ((24, 5, 7), 4),
                                     ((16, 3, 4, 5, 6), 8)])
@KERNELS
def test_ghost_batches_match_generic(shape, k, unbiased, kernel):
    """Each ghost kernel (the fused one on a transposed view whose channels are
    the (ghost batch, channel) pairs; the compiled one on the strided view)
    against `_generic.ghost_train_forward`, eager and in a graph with an
    unknown batch size."""
    rng = np.random.default_rng(len(shape) * k)
    x = tf.constant(rng.normal(1.0, 2.0, shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    gamma = tf.constant(rng.uniform(0.5, 1.5, shape[-1]).astype("float32"))
    beta = tf.constant(rng.normal(size=shape[-1]).astype("float32"))
    axes = (len(shape) - 1,)

    def run(module, x):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y, mean, variance, _ = module.ghost_train_forward(
                x, gamma, beta, EPSILON, axes, None, k, unbiased=unbiased)
            loss = tf.reduce_sum(y * upstream)
        return [y, mean, variance] + tape.gradient(loss, [x, gamma, beta])

    dynamic = tf.TensorSpec((None,) + shape[1:])
    for fused, generic, how in (
        (run(kernel, x), run(_generic, x), "eager"),
        (tf.function(lambda x: run(kernel, x), input_signature=[dynamic])(x),
         run(_generic, x), "graph"),
    ):
        for name, a, b in zip(("y", "mean", "variance", "dx", "dgamma", "dbeta"), fused, generic):
            _assert_close(a, b, f"{how}: {name}")
