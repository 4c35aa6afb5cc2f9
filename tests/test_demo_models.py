"""The demo models train from their recipes and reproduce their reported clean accuracy."""

import os
from pathlib import Path

import pytest
import torch

from certify import models


@pytest.mark.parametrize("name", sorted(models.REPORTED_CLEAN_ACCURACY))
def test_demo_model_reproduces_reported_clean_accuracy(name):
    """Trained from its recipe in this session's cache (conftest: a recipe `certify demo` already
    trained there is loaded, trained the same way)."""
    cache = Path(os.environ["CERTIFY_CACHE"])
    model = models.load(name)
    assert abs(models.clean_accuracy(model) - models.REPORTED_CLEAN_ACCURACY[name]) <= 0.01
    # Cached: the second load reads the state dict (weights_only) and gives the same weights.
    again = models.load(name)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert list(cache.glob("models/*.pt"))


def test_unknown_demo_model_is_named():
    with pytest.raises(ValueError, match="unknown demo model"):
        models.load("resnet-1000")
