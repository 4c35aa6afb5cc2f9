import numpy as np
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    """One demo-model cache for the whole session (and the commands it runs): each recipe trains
    once however many tests load it (`certify demo` and the demo-model tests share two), and
    nothing is written to the user's ~/.cache."""
    import os

    saved = os.environ.get("CERTIFY_CACHE")
    os.environ["CERTIFY_CACHE"] = str(tmp_path_factory.mktemp("certify-cache"))
    yield
    if saved is None:
        os.environ.pop("CERTIFY_CACHE", None)
    else:
        os.environ["CERTIFY_CACHE"] = saved


@pytest.fixture
def files(tmp_path):
    """A small ONNX model and .npz data set (run_files.make_files): the run and CLI tests' inputs."""
    from run_files import make_files

    return make_files(tmp_path)


@pytest.fixture
def one_thread():
    """The networks in the VNN-LIB tests are tiny; with OpenMP threads on every core, the bound
    engine and torch slow down many times over when other work shares the machine."""
    import certify

    before = certify.get_num_threads(), torch.get_num_threads()
    certify.set_num_threads(1)
    torch.set_num_threads(1)
    yield
    certify.set_num_threads(before[0])
    torch.set_num_threads(before[1])


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


def threshold_model(coordinate: int = 0, threshold: float = 0.0):
    """f(x) = 1 if x[coordinate] > threshold else 0, as logits (batch, 2).

    Under any noise, the smoothed classifier's decision boundary is the hyperplane
    x[coordinate] = threshold, so the true certified radius of x is |x[coordinate] - threshold|
    in every lp norm, and p_A has a closed form for each noise (see test_validity.py).
    """

    def model(z):
        margin = z.reshape(len(z), -1)[:, coordinate] - threshold
        return torch.stack([torch.zeros_like(margin), margin], dim=1)

    return model
