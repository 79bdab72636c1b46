"""The PyTorch fast path (`kbn/_torch_fast.py`, ATen's native batch norm) against
the generic one.

`_torch_fast` must give `_generic`'s numbers wherever `supports` says it
serves: outputs, the returned batch mean / biased variance, and the gradients
with respect to x, γ and β (torch autograd). The layer parity suite runs on
both paths through `KBN_PATH`; these tests compare the two kernel modules
directly, on larger tensors too, and check the statistics against float64.

Tolerance: 1e-5 relative plus 1e-5 absolute, the absolute part scaled by the
tensor's largest magnitude (as in tests/test_fast_path.py): the two paths sum
in different orders (torch's pairwise reductions vs ATen's per-thread running
sums), and a float32 sum of m terms is only known to ~m·2⁻²⁴ of its terms'
size, so dβ = Σ dy over thousands of rows differs in its last digits while
being ~100 in size.

Runs under `make test-torch` (KERAS_BACKEND=torch); skipped on other backends,
whose environments need not have torch.
"""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.all_backends

if keras.backend.backend() != "torch":
    pytest.skip("the PyTorch fast path needs KERAS_BACKEND=torch", allow_module_level=True)

import torch  # noqa: E402

import kbn  # noqa: E402
import numpy_reference as ref  # noqa: E402
from kbn import _generic, _torch_fast  # noqa: E402

NATIVE = _torch_fast.always_fused  # ATen whatever the size
EPSILON = 1e-3

# (shape, channel axis): channels-last and channels-first, ranks 2 to 5.
CASES = [
    ((2, 5), 1), ((64, 100), 1), ((2048, 12), 1),
    ((3, 7, 9), 2), ((3, 7, 9), 1),
    ((8, 6, 6, 16), 3), ((8, 16, 6, 6), 1),
    ((2, 3, 4, 5, 6), 4), ((2, 6, 3, 4, 5), 1),
]
# About a million elements: thousands of rows per channel in ATen's running sums.
LARGE_CASES = [((16384, 64), 1), ((32, 32, 32, 32), 3), ((32, 32, 32, 32), 1)]


def _assert_close(actual, expected, name):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale, err_msg=name)


def _inputs(shape, axis, seed, center=True, scale=True, offset=2.0):
    rng = np.random.default_rng(seed)
    channels = shape[axis]
    x = torch.tensor(rng.normal(offset, 3.0, shape).astype("float32"))
    gamma = torch.tensor(rng.normal(1.0, 0.5, channels).astype("float32")) if scale else None
    beta = torch.tensor(rng.normal(0.0, 1.0, channels).astype("float32")) if center else None
    upstream = torch.tensor(rng.normal(size=shape).astype("float32"))
    return x, gamma, beta, upstream


def _forward_and_grads(module, x, gamma, beta, upstream, axis, training):
    """Outputs, statistics (training) and d(Σ y·upstream)/d(x, γ, β) through `module`."""
    axes = (axis,)
    reduction_axes = tuple(i for i in range(x.dim()) if i != axis)
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, gamma, beta)]
    x, gamma, beta = leaves
    if training:
        y, mean, variance, count = module.train_forward(
            x, gamma, beta, EPSILON, axes, reduction_axes, None
        )
        assert count is None  # no mask: the same count in every channel
        statistics = [mean, variance]
    else:
        channels = x.shape[axis]
        moving_mean = torch.linspace(-1.0, 1.0, channels)
        moving_variance = torch.linspace(0.5, 2.0, channels)
        y = module.infer_forward(x, moving_mean, moving_variance, gamma, beta, EPSILON, axes)
        statistics = []
    sources = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(torch.sum(y * upstream), sources)
    return [t.detach().numpy() for t in [y] + statistics + list(grads)]


def _compare(shape, axis, training, center=True, scale=True, seed=None):
    seed = sum(shape) + axis if seed is None else seed
    x, gamma, beta, upstream = _inputs(shape, axis, seed, center, scale)
    assert _torch_fast.supports(x, training, None, (axis,), EPSILON)
    got = _forward_and_grads(NATIVE, x, gamma, beta, upstream, axis, training)
    want = _forward_and_grads(_generic, x, gamma, beta, upstream, axis, training)
    names = ["y"] + (["mean", "variance"] if training else []) + ["dx"]
    names += ["dgamma"] * scale + ["dbeta"] * center
    assert len(got) == len(want) == len(names)
    for name, a, b in zip(names, got, want):
        assert a.shape == b.shape, name
        _assert_close(a, b, f"{shape} axis {axis}: {name}")


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False),
                                          (False, False)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("shape,axis", CASES, ids=str)
def test_native_matches_generic(shape, axis, training, center, scale):
    _compare(shape, axis, training, center, scale)


@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("shape,axis", LARGE_CASES, ids=str)
def test_native_matches_generic_on_large_tensors(shape, axis, training):
    _compare(shape, axis, training)


@pytest.mark.parametrize("shape,axis", [((4096, 8), 1), ((64, 8, 8, 8), 3), ((64, 8, 8, 8), 1)],
                         ids=str)
def test_statistics_match_float64(shape, axis):
    """Batch mean to 1e-6 and biased variance to 1e-5 (relative) of the float64
    two-pass values, on 1e4 + noise too (where E[x²] − E[x]² in float32 fails)."""
    rng = np.random.default_rng(5)
    for offset in (0.0, 1e4):
        x = (offset + rng.normal(size=shape)).astype("float32")
        _, mean, variance, _ = NATIVE.train_forward(
            torch.tensor(x), None, None, EPSILON, (axis,), None, None
        )
        want_mean, want_variance = ref.batch_moments(x, axis)
        np.testing.assert_allclose(mean.numpy(), want_mean, rtol=1e-6, err_msg=f"{offset}")
        np.testing.assert_allclose(variance.numpy(), want_variance, rtol=1e-5,
                                   err_msg=f"offset {offset}")
        # The outputs are within float32's spacing near the inputs (9.8e-4 at 1e4).
        y = NATIVE.infer_forward(torch.tensor(x), mean, variance, None, None, EPSILON, (axis,))
        want_y = ref.normalize(x, want_mean, want_variance, None, None, EPSILON, axis)
        np.testing.assert_allclose(y.numpy(), want_y, atol=1e-2 if offset else 1e-5)


@pytest.fixture
def two_threads():
    """ATen's per-thread running sums depend on the thread count: pin it to this
    project's machine's 2 cores for the test, then restore it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_aten_channels_last_statistics_are_why_two_passes_are_used(two_threads):
    """Regression guard for the channels-last design: ATen's own statistics on the
    (rows, C) layout (float32 running sums, one per thread) miss the float64
    variance of 1e4 + noise by far more than the 1e-5 the module holds (6e-3
    with 2 threads over 65536 rows; 2e-5 with 16 threads), so `_torch_fast`
    must not take them."""
    rng = np.random.default_rng(6)
    x = (1e4 + rng.normal(size=(65536, 8))).astype("float32")
    _, _, invstd = torch.native_batch_norm(torch.tensor(x), None, None, None, None, True,
                                           0.0, EPSILON)
    aten_variance = 1.0 / invstd.double().numpy() ** 2 - EPSILON
    _, want_variance = ref.batch_moments(x, 1)
    assert np.max(np.abs(aten_variance / want_variance - 1.0)) > 1e-4
    _, _, variance, _ = NATIVE.train_forward(torch.tensor(x), None, None, EPSILON, (1,),
                                             None, None)
    np.testing.assert_allclose(variance.numpy(), want_variance, rtol=1e-5)


def test_variance_from_invstd_precision():
    """Channels-first takes σ²_B = 1/invstd² − ε from ATen's float32 invstd: within
    2⁻²² · (σ²_B + ε) of the float64 two-pass value, also for channels whose
    variance is far below ε (absolute error ~1e-10 there), and never negative."""
    rng = np.random.default_rng(8)
    scales = np.array([1e-4, 1e-2, 1.0, 30.0, 0.0], "float32")  # the last channel is constant
    x = (5.0 + rng.normal(size=(64, 5, 7)) * scales[None, :, None]).astype("float32")
    _, _, variance, _ = NATIVE.train_forward(torch.tensor(x), None, None, EPSILON, (1,),
                                             None, None)
    _, want = ref.batch_moments(x, 1)
    error = np.abs(variance.numpy().astype("float64") - want)
    assert np.all(error <= 2.0**-22 * (want + EPSILON)), (error, want)
    assert np.all(variance.numpy() >= 0.0)


def test_size_threshold(monkeypatch):
    """`train_forward` / `infer_forward` take ATen from MIN_NATIVE_ELEMENTS elements
    and the generic ops below (see the constant's comment for why)."""
    calls = []
    for name in ("native_train_forward", "native_infer_forward"):
        original = getattr(_torch_fast, name)
        monkeypatch.setattr(_torch_fast, name,
                            lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    channels = 16
    rows = _torch_fast.MIN_NATIVE_ELEMENTS // channels
    for n, native in ((rows - 1, False), (rows, True)):
        x = torch.randn(n, channels)
        ones, zeros = torch.ones(channels), torch.zeros(channels)
        calls.clear()
        _torch_fast.train_forward(x, None, None, EPSILON, (1,), (0,), None)
        _torch_fast.infer_forward(x, zeros, ones, None, None, EPSILON, (1,))
        expected = ["native_train_forward", "native_infer_forward"] if native else []
        assert calls == expected, (n * channels, calls)


def test_views_are_not_copies():
    """Channels-last reaches ATen as a (rows, C) view, channels-first as (N, C, L):
    both share the input's memory."""
    x = torch.randn(4, 5, 6, 7)
    assert _torch_fast._as_rows(x).data_ptr() == x.data_ptr()
    assert _torch_fast._as_rows(x).shape == (120, 7)
    assert _torch_fast._as_ncl(x).data_ptr() == x.data_ptr()
    assert _torch_fast._as_ncl(x).shape == (4, 5, 42)


def _supports(shape=(4, 3), dtype=torch.float32, training=True, mask=None, axes=None,
              synchronized=False):
    x = torch.zeros(shape, dtype=dtype)
    axes = (len(shape) - 1,) if axes is None else axes
    return _torch_fast.supports(x, training, mask, axes, EPSILON, synchronized=synchronized)


def test_supports_what_it_serves():
    assert _supports()
    assert _supports(shape=(2, 3, 4, 5))
    assert _supports(shape=(2, 3, 4, 5), axes=(1,))
    assert _supports(shape=(2, 3, 4, 5), axes=1)  # an int is one axis
    assert _supports(shape=(2, 3, 4, 5, 6), training=False)
    assert _supports(shape=(2, 3, 4), axes=(1,), training=False)


@pytest.mark.parametrize("kwargs", [
    {"mask": torch.ones(4, 1, dtype=torch.bool)},
    {"dtype": torch.float64},
    {"dtype": torch.float16},
    {"shape": (2, 3, 4, 5), "axes": (2,)},  # a middle axis
    {"shape": (2, 3, 4, 5), "axes": (1, 3)},  # several axes
    {"shape": (2, 3, 4, 5), "axes": (0,)},
    {"shape": (5,), "axes": (0,)},
    {"shape": (0, 3)},  # an empty batch
    {"synchronized": True},
], ids=str)
def test_supports_refuses(kwargs):
    assert not _supports(**kwargs)


def test_ghost_batches_take_the_generic_function():
    x, gamma, beta, _ = _inputs((8, 3, 4), 2, seed=3)
    got = NATIVE.ghost_train_forward(x, gamma, beta, EPSILON, (2,), None, 4)
    want = _generic.ghost_train_forward(x, gamma, beta, EPSILON, (2,), None, 4)
    for a, b in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_takes_the_native_path_with_torch_autograd(axis, monkeypatch):
    """In the layer (default `KBN_PATH=auto`), a tensor over the threshold goes
    through ATen, its gradients reach the torch Parameters behind γ and β, and
    they equal the generic path's."""
    monkeypatch.delenv("KBN_PATH", raising=False)
    calls = []
    original = _torch_fast.native_train_forward
    monkeypatch.setattr(_torch_fast, "native_train_forward",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    shape = (64, 16, 8, 8) if axis == 1 else (64, 8, 8, 16)
    rng = np.random.default_rng(4)
    x = rng.normal(1.0, 2.0, shape).astype("float32")
    upstream = torch.tensor(rng.normal(size=shape).astype("float32"))
    results = []
    for path in ("auto", "generic"):
        monkeypatch.setenv("KBN_PATH", path)
        layer = kbn.BatchNormalization(axis=axis, momentum=0.5)
        layer.build(shape)
        inputs = torch.tensor(x, requires_grad=True)
        y = layer(inputs, training=True)
        torch.sum(y * upstream).backward()
        results.append([y.detach().numpy(), inputs.grad.numpy(),
                        layer.gamma.value.grad.numpy(), layer.beta.value.grad.numpy(),
                        keras.ops.convert_to_numpy(layer.moving_mean.value),
                        keras.ops.convert_to_numpy(layer.moving_variance.value)])
    assert calls == [1]  # the auto layer took ATen, the generic one did not
    names = ["y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"]
    for name, a, b in zip(names, *results):
        _assert_close(a, b, name)
