import numpy as np
import pytest
import torch


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
