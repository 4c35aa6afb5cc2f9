"""The public smoothing API: results, reproducibility, batching, and clear errors for bad input."""

import numpy as np
import pytest
import torch
from conftest import threshold_model

import certify
from certify import _native


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return SmallCNN().eval()


def test_certify_result_fields(cnn):
    g = certify.Smoothed(cnn, 10, certify.Gaussian(0.25), input_shape=(1, 8, 8))
    r = g.certify(torch.rand(1, 8, 8), n0=50, n=500, alpha=0.01, batch_size=128, seed=4)
    assert r.norm == "l2" and r.num_samples == 550 and r.alpha == 0.01
    assert r.counts.shape == (10,) and r.counts.sum() == 500
    assert -1 <= r.prediction < 10
    if r.abstained:
        assert r.radius == 0.0 and r.p_lower <= 0.5
    else:
        assert r.radius > 0 and r.p_lower > 0.5
        assert r.radius == pytest.approx(float(certify.Gaussian(0.25).radius(r.p_lower)), rel=1e-12)


def test_same_seed_same_certificate_and_batching_does_not_matter(cnn):
    g = certify.Smoothed(cnn, 10, certify.Gaussian(0.5))
    xs = torch.rand(5, 1, 8, 8)
    a = g.certify_batch(xs, n0=30, n=200, batch_size=1000, seed=7, start_index=10)
    b = g.certify_batch(xs, n0=30, n=200, batch_size=33, seed=7, start_index=10)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.radius, b.radius)
    for i in range(5):  # one input at a time, as a resumed run would do
        single = g.certify(xs[i], n0=30, n=200, batch_size=64, seed=7, input_index=10 + i)
        assert single.prediction == a.prediction[i] and single.radius == a.radius[i]
        np.testing.assert_array_equal(single.counts, a.counts[i])
    other_seed = g.certify_batch(xs, n0=30, n=200, seed=8, start_index=10)
    assert not np.array_equal(other_seed.counts, a.counts)


def test_results_iterate_and_index(cnn):
    g = certify.Smoothed(cnn, 10, certify.Laplace(0.3))
    rs = g.certify_batch(torch.rand(3, 1, 8, 8), n0=10, n=100, seed=1)
    assert len(rs) == 3 and rs.norm == "l1"
    assert [r.prediction for r in rs] == rs.prediction.tolist()
    assert rs.counts.shape == (3, 10) and (rs.counts.sum(axis=1) == 100).all()


def test_progress_is_reported(cnn):
    seen = []
    g = certify.Smoothed(cnn, 10, certify.Uniform(0.5))
    g.certify_batch(torch.rand(2, 1, 8, 8), n0=10, n=90, batch_size=40, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (200, 200)
    assert all(a[0] < b[0] for a, b in zip(seen, seen[1:]))


def test_predict(cnn):
    g = certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.25))
    far = torch.tensor([3.0, 0.0])
    assert g.predict(far, n=200, alpha=0.001) == 1
    assert g.predict(-far, n=200, alpha=0.001) == 0
    assert g.predict(torch.zeros(2), n=200, alpha=0.001) == certify.ABSTAIN  # p = 1/2 exactly
    gt = certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.25), backend="torch")
    assert gt.predict(far, n=200) == 1


def test_torch_backend_and_float32(cnn):
    g = certify.Smoothed(cnn, 10, certify.Gaussian(0.25), backend="torch")
    r = g.certify(torch.rand(1, 8, 8), n0=20, n=100, seed=0)
    assert r.counts.sum() == 100 and r.num_samples == 120


def test_numpy_input_is_accepted():
    g = certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.25))
    r = g.certify(np.array([2.0, 0.0]), n0=10, n=100)
    assert r.prediction == 1


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(x=torch.tensor([float("nan"), 0.0])), ValueError, "NaN or infinite"),
        (dict(x=torch.tensor([float("inf"), 0.0])), ValueError, "NaN or infinite"),
        (dict(x=torch.tensor([1, 2])), TypeError, "float32 or float64"),
        (dict(x=torch.tensor([1.0, 2.0], dtype=torch.float16)), TypeError, "float32 or float64"),
        (dict(x=torch.zeros(3)), ValueError, r"shape \(2,\)"),
        (dict(x="not a tensor"), TypeError, "torch.Tensor"),
        (dict(alpha=0.0), ValueError, "alpha"),
        (dict(alpha=1.0), ValueError, "alpha"),
        (dict(alpha=1.5), ValueError, "alpha"),
        (dict(n0=0), ValueError, "n0"),
        (dict(n=0), ValueError, "n must"),
        (dict(n=10.5), TypeError, "n must be an integer"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=2**64), ValueError, "seed"),
    ],
)
def test_bad_certify_arguments(kwargs, error, match):
    g = certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.25), input_shape=(2,))
    args = dict(x=torch.zeros(2), n0=10, n=100, alpha=0.01, batch_size=100, seed=0) | kwargs
    with pytest.raises(error, match=match):
        g.certify(**args)


@pytest.mark.parametrize("noise", [lambda: certify.Gaussian(0), lambda: certify.Gaussian(-1.0),
                                   lambda: certify.Laplace(float("nan")), lambda: certify.Uniform(float("inf"))])
def test_bad_noise_parameters(noise):
    with pytest.raises(ValueError, match="finite and > 0"):
        noise()


def test_bad_models_and_constructor_arguments():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match=r"expected \(batch, num_classes\) = \(\d+, 3\)"):
        certify.Smoothed(threshold_model(), 3, certify.Gaussian(0.5)).certify(x, n0=5, n=10)
    nan_model = lambda z: torch.full((len(z), 2), float("nan"))  # noqa: E731
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        certify.Smoothed(nan_model, 2, certify.Gaussian(0.5)).certify(x, n0=5, n=10)
    with pytest.raises(TypeError, match="tensor of logits"):
        certify.Smoothed(lambda z: [0, 1], 2, certify.Gaussian(0.5)).certify(x, n0=5, n=10)
    with pytest.raises(ValueError, match="training mode"):
        certify.Smoothed(torch.nn.Linear(2, 2), 2, certify.Gaussian(0.5)).certify(x, n0=5, n=10)
    with pytest.raises(TypeError, match="callable"):
        certify.Smoothed(42, 2, certify.Gaussian(0.5))
    with pytest.raises(TypeError, match="noise must be"):
        certify.Smoothed(threshold_model(), 2, 0.5)
    with pytest.raises(ValueError, match="num_classes"):
        certify.Smoothed(threshold_model(), 1, certify.Gaussian(0.5))
    with pytest.raises(ValueError, match="backend"):
        certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.5), backend="jax")
    with pytest.raises(ValueError, match="batch of inputs"):
        certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.5)).certify_batch(torch.zeros(2))


def test_native_kernels_refuse_other_devices():
    with pytest.raises(ValueError, match="CPU only"):
        _native.require_cpu(torch.empty(2, device="meta"), "x")


def test_installed_package_not_the_source_tree():
    """The tests run against the installed wheel: the extension must be there."""
    assert certify._core.__file__.endswith((".so", ".pyd"))
    assert isinstance(certify._core.built_with_cuda(), bool)
    assert certify._core.cuda_device_count() >= 0  # no driver here is 0, not an error
    assert certify.get_num_threads() >= 1


def test_submodule_in_training_mode_is_refused():
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)).eval()
    net[1].train()
    with pytest.raises(ValueError, match="training mode.*1"):
        certify.Smoothed(net, 2, certify.Gaussian(0.5)).certify(torch.zeros(2), n0=5, n=10)


def test_dtype_mismatch_with_model_is_refused():
    net = torch.nn.Linear(2, 2).eval()
    with pytest.raises(TypeError, match="float64.*float32"):
        certify.Smoothed(net, 2, certify.Gaussian(0.5)).certify(torch.zeros(2, dtype=torch.float64), n0=5, n=10)


def test_model_failure_names_the_batch_shape(cnn):
    g = certify.Smoothed(cnn, 10, certify.Gaussian(0.5))
    with pytest.raises(RuntimeError, match=r"shape \(5, 1, 1, 8, 8\).*without the batch dimension"):
        g.certify(torch.rand(1, 1, 8, 8), n0=5, n=10, batch_size=5)


def test_input_with_requires_grad_is_accepted():
    g = certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.25))
    assert g.certify(torch.tensor([2.0, 0.0], requires_grad=True), n0=10, n=100).prediction == 1


def test_input_index_is_named_in_errors():
    g = certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.25))
    with pytest.raises(ValueError, match="input_index"):
        g.certify(torch.zeros(2), n0=5, n=10, input_index=2**32)


def test_sampler_tail_mass_is_taken_from_p_lower():
    """The ideal mass the sampler cannot draw (2^-33 per Gaussian pair, 2^-32 per Laplace
    coordinate) comes off p_lower before the radius."""
    gaussian, laplace = certify.Gaussian(0.5), certify.Laplace(0.5)
    assert gaussian.tail_mass(3072) == 1536 * 2.0**-33
    assert gaussian.tail_mass(3) == 2 * 2.0**-33  # the padded pair counts
    assert laplace.tail_mass(10) == 10 * 2.0**-32
    assert certify.Uniform(0.5).tail_mass(10**6) == 0.0
    hits = np.array([999_990])
    from certify.smoothing.smoothed import smoothing_bounds

    p0, r0 = smoothing_bounds(gaussian, hits, 10**6, 0.001, 0.0)
    mass = gaussian.tail_mass(150_528)  # an ImageNet-sized input
    p1, r1 = smoothing_bounds(gaussian, hits, 10**6, 0.001, mass)
    assert p1[0] <= p0[0] - mass and p1[0] == pytest.approx(p0[0] - mass, abs=1e-15)
    assert r1[0] < r0[0] and r1[0] == pytest.approx(float(gaussian.radius(p1[0])), rel=1e-9)
    # A tail mass that eats the margin above 1/2 makes CERTIFY abstain.
    _, r2 = smoothing_bounds(gaussian, np.array([520]), 1000, 0.5, 0.03)
    assert r2[0] == 0.0
