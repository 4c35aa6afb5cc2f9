"""Demo models on scikit-learn's bundled 8x8 digits, trained at first use and cached.

Why train instead of shipping weights: every model here trains in seconds on 2 cores from data
that ships inside the scikit-learn wheel, so the recipe below *is* the artefact: anyone can
reproduce a model exactly (same seed, same torch build and thread count) or within float
noise elsewhere. The trained state dict is cached in $CERTIFY_CACHE (default ~/.cache/certify)
and loaded with torch.load(weights_only=True): no pickled code is ever run.

Data: load_digits() pixels / 16 in [0, 1], shape (1, 8, 8); the first 1,500 images train, the
remaining 297 test. Architecture: Conv(1->16, 3x3, pad 1), ReLU, Conv(16->32, 3x3, stride 2,
pad 1), ReLU, Flatten, Linear(512->64), ReLU, Linear(64->10).

Run `python -m certify.models` for the table of clean, smoothing-certified and bound-verified
accuracy of every model (README, "Demo models").
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

import certify
from certify import train

__all__ = ["RECIPES", "REPORTED_CLEAN_ACCURACY", "digits", "architecture", "load", "clean_accuracy", "table"]

TRAIN_SIZE = 1500

# name -> training recipe (arguments of certify.train.fit; "sigma" becomes Gaussian noise).
RECIPES = {
    "natural": {"method": "natural", "epochs": 20, "lr": 2e-3},
    "noise-0.25": {"method": "noise", "sigma": 0.25, "epochs": 20, "lr": 2e-3},
    "noise-0.5": {"method": "noise", "sigma": 0.5, "epochs": 20, "lr": 2e-3},
    "ibp-0.1": {"method": "ibp", "eps": 0.1, "epochs": 30, "lr": 2e-3, "domain": (0.0, 1.0)},
    "crown-ibp-0.1": {"method": "crown-ibp", "eps": 0.1, "epochs": 30, "lr": 2e-3, "domain": (0.0, 1.0)},
}

# Clean test accuracy measured with the recipes above on this project's machine (2 cores,
# torch 2.13.0 CPU); tests check a fresh training reproduces them within 1 point.
REPORTED_CLEAN_ACCURACY: dict[str, float] = {
    "natural": 0.916, "noise-0.25": 0.933, "noise-0.5": 0.923, "ibp-0.1": 0.906, "crown-ibp-0.1": 0.899,
}


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y) of scikit-learn's digits, pixels in [0, 1], (N, 1, 8, 8)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the digits demo data needs scikit-learn: pip install 'certify[demo]'") from exc
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.int64)
    return x[:TRAIN_SIZE], y[:TRAIN_SIZE], x[TRAIN_SIZE:], y[TRAIN_SIZE:]


def architecture() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def _recipe_key(name: str) -> str:
    text = json.dumps({"recipe": RECIPES[name], "torch": torch.__version__, "version": 1}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _cache_dir() -> Path:
    return Path(os.environ.get("CERTIFY_CACHE", Path.home() / ".cache" / "certify")) / "models"


def load(name: str, *, retrain: bool = False, progress: bool = False) -> nn.Module:
    """The demo model `name` (a key of RECIPES) in eval mode, trained now if not cached."""
    if name not in RECIPES:
        raise ValueError(f"unknown demo model {name!r}; choose one of {sorted(RECIPES)}")
    path = _cache_dir() / f"digits-{name}-{_recipe_key(name)}.pt"
    model = architecture()
    if path.exists() and not retrain:
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    recipe = dict(RECIPES[name])
    sigma = recipe.pop("sigma", None)
    if sigma is not None:
        recipe["noise"] = certify.Gaussian(sigma)
    train_x, train_y, _, _ = digits()
    torch.manual_seed(0)
    model = architecture()
    train.fit(model, train_x, train_y, seed=0, progress=progress, **recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written model
    return model.eval()


def clean_accuracy(model: nn.Module) -> float:
    _, _, test_x, test_y = digits()
    with torch.no_grad():
        return float((model(test_x).argmax(1) == test_y).float().mean())


def table(n: int = 10_000, alpha: float = 0.001) -> list[dict]:
    """Clean accuracy, smoothing-certified accuracy (l2 radii 0, 0.25, 0.5, 1.0; sigma = the model's
    noise level, 0.25 for the others) and IBP / CROWN verified accuracy (l_inf 0.05, 0.1, pixels in
    [0, 1]) on the 297 test digits, for every demo model."""
    _, _, test_x, test_y = digits()
    rows = []
    for name, recipe in RECIPES.items():
        model = load(name)
        sigma = recipe.get("sigma", 0.25)
        smoothed = certify.Smoothed(model, 10, certify.Gaussian(sigma), input_shape=(1, 8, 8))
        certs = smoothed.certify_batch(test_x, n0=100, n=n, alpha=alpha, batch_size=20_000, seed=0)
        correct = certs.prediction == test_y.numpy()
        bounded = certify.BoundedModel(model, (1, 8, 8))
        row = {"model": name, "clean": clean_accuracy(model), "sigma": sigma}
        for r in (0.0, 0.25, 0.5, 1.0):
            row[f"smooth@{r}"] = float((correct & (certs.radius >= r)).mean())
        for method in ("ibp", "crown"):
            for eps in (0.05, 0.1):
                ok = bounded.verify(test_x, test_y, eps, method=method, domain=(0.0, 1.0))
                row[f"{method}@{eps}"] = float(ok.float().mean())
        rows.append(row)
    return rows


if __name__ == "__main__":
    rows = table()
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
