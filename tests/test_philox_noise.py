"""The noise kernel: Philox known answers, equality with the NumPy twin, distribution tests,
and noise as a pure function of (seed, input, stream, sample)."""

import numpy as np
import pytest
import scipy.stats as st

import certify
from certify import _core
from certify.smoothing import philox_reference as ref

# Random123 kat_vectors, "philox4x32 10" lines: counter, key, expected.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(v) for v in _core.philox4x32_10(*counter, *key)) == expected
    assert tuple(int(v) for v in ref.philox4x32_10(np.array(counter, dtype=np.uint32), key)) == expected


def fill(x, rows, kind, scale, seed=0, input_index=0, stream=0, start=0):
    out = np.empty((rows, x.size), dtype=x.dtype)
    _core.fill_noisy(x.reshape(-1), out, kind, scale, seed, input_index, stream, start)
    return out


@pytest.mark.parametrize("kind", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [1, 2, 3, 4, 5, 255, 256, 257, 1031])
def test_kernel_matches_numpy_twin(kind, dtype, dim):
    rng = np.random.default_rng(dim)
    x = rng.normal(size=dim).astype(dtype)
    # A seed above 2^32, an input index and a start that crosses the 2^32 sample boundary
    # exercise every word of the counter.
    args = dict(kind=kind, scale=0.7, seed=(7 << 40) + 12345, input_index=99, stream=3, start=2**32 - 3)
    got = fill(x, 6, **args)
    want = ref.noisy_copies(x, 6, **args)
    # The kernel's vector log/sin/cos differ from libm by a few ulps (float32: ~1e-6 relative).
    tol = 5e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize(
    "kind,dist",
    [(0, st.norm(scale=0.5)), (1, st.laplace(scale=0.5)), (2, st.uniform(loc=-0.5, scale=1.0))],
    ids=["gaussian", "laplace", "uniform"],
)
def test_noise_distribution(kind, dist):
    z = fill(np.zeros(1000, dtype=np.float32), 200, kind, 0.5, seed=2024).astype(np.float64).ravel()
    n = z.size
    mean, var = dist.mean(), dist.var()
    # Mean within 5 standard errors; variance within 5 of its standard errors (kurtosis-aware).
    assert abs(z.mean() - mean) < 5 * np.sqrt(var / n)
    fourth = dist.moment(4) if kind != 1 else 24 * 0.5**4
    assert abs(z.var() - var) < 5 * np.sqrt((fourth - var**2) / n)
    assert st.kstest(z, dist.cdf).pvalue > 1e-3
    # Coordinates within a copy are independent: neighbouring-coordinate correlation ~ 0.
    m = z.reshape(200, 1000)
    corr = np.corrcoef(m[:, :-1].ravel(), m[:, 1:].ravel())[0, 1]
    assert abs(corr) < 5 / np.sqrt(n)


def test_ks_detects_a_wrong_distribution():
    """The distribution test has power: uniform noise is not Gaussian."""
    z = fill(np.zeros(1000, dtype=np.float32), 200, 2, 1.0, seed=1).astype(np.float64).ravel()
    assert st.kstest(z, st.norm(scale=z.std()).cdf).pvalue < 1e-6


def test_same_noise_for_any_thread_count_and_repeat():
    x = np.linspace(-1, 1, 3072, dtype=np.float32)
    before = certify.get_num_threads()
    try:
        certify.set_num_threads(1)
        one = fill(x, 64, 0, 0.25, seed=5)
        certify.set_num_threads(2)
        two = fill(x, 64, 0, 0.25, seed=5)
        again = fill(x, 64, 0, 0.25, seed=5)
    finally:
        certify.set_num_threads(before)
    assert one.tobytes() == two.tobytes() == again.tobytes()


def test_noise_is_a_function_of_the_sample_index():
    """Cutting the rows differently (as a resumed or re-batched run does) changes nothing."""
    x = np.arange(37, dtype=np.float64)
    whole = fill(x, 100, 1, 1.0, seed=9, input_index=4, stream=1, start=1000)
    parts = np.concatenate([fill(x, 30, 1, 1.0, 9, 4, 1, 1000), fill(x, 70, 1, 1.0, 9, 4, 1, 1030)])
    assert whole.tobytes() == parts.tobytes()


def test_distinct_streams_for_distinct_seeds_inputs_streams():
    x = np.zeros(512, dtype=np.float64)
    base = fill(x, 50, 0, 1.0, seed=1, input_index=0, stream=0)
    variants = [
        fill(x, 50, 0, 1.0, seed=2, input_index=0, stream=0),
        fill(x, 50, 0, 1.0, seed=1, input_index=1, stream=0),
        fill(x, 50, 0, 1.0, seed=1, input_index=0, stream=1),
        fill(x, 50, 0, 1.0, seed=1 + 2**32, input_index=0, stream=0),  # high key word
        fill(x, 50, 0, 1.0, seed=1, input_index=0, stream=0, start=50),
    ]
    for other in variants:
        corr = np.corrcoef(base.ravel(), other.ravel())[0, 1]
        assert abs(corr) < 5 / np.sqrt(base.size)


def test_kernel_rejects_bad_buffers():
    x = np.zeros(8, dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        _core.fill_noisy(x, np.empty((3, 7), np.float32), 0, 1.0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="dtype"):
        _core.fill_noisy(x, np.empty((3, 8), np.float64), 0, 1.0, 0, 0, 0, 0)
    with pytest.raises(TypeError, match="float32 or float64"):
        _core.fill_noisy(x.astype(np.int32), np.empty((3, 8), np.int32), 0, 1.0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="2\\^48"):
        _core.fill_noisy(x, np.empty((3, 8), np.float32), 0, 1.0, 0, 0, 0, 2**48 - 1)
    with pytest.raises(ValueError, match="writable"):
        out = np.empty((3, 8), np.float32)
        out.setflags(write=False)
        _core.fill_noisy(x, out, 0, 1.0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.fill_noisy(x, np.empty((8, 3), np.float32).T, 0, 1.0, 0, 0, 0, 0)
