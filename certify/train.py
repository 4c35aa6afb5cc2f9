"""Training models that certify: noise augmentation (for smoothing) and certified training with
IBP and CROWN-IBP (for bound propagation), on the plain-PyTorch differentiable twins.

Schedules (Gowal et al. 2018, "On the effectiveness of interval bound propagation"; Zhang et al.
2020, "Towards stable and efficient training of verifiably robust neural networks"):
  - eps_schedule: eps = 0 for `warmup` steps, then a linear ramp to the target eps over `ramp`
    steps, then constant. Starting from a small eps is what makes IBP training train at all.
  - kappa_schedule: the weight of the natural loss in
        loss = kappa * CE(logits, y) + (1 - kappa) * CE(worst-case logits, y),
    1 during warm-up, linearly down to `kappa_end` (Gowal et al. use 0.5) over the ramp.
  - beta_schedule (CROWN-IBP): the margin lower bound is beta * CROWN-IBP + (1 - beta) * IBP,
    beta going from 1 to 0 over the ramp (Zhang et al. 2020): CROWN-IBP's tighter bounds early,
    IBP's cheaper, better-trained ones at the end.
The worst-case logits: with margin lower bounds m_j <= z_y - z_j for all j != y, the logits
(0 for y, -m_j for j) are a worst case of the true ones for cross-entropy (Wong & Kolter 2018).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from certify.bounds import BoundedModel
from certify.noise import Noise

__all__ = [
    "eps_schedule", "kappa_schedule", "beta_schedule", "noise_augment", "ibp_loss", "crown_ibp_loss",
    "robust_ce", "fit", "History",
]


def _ramp(step: int, warmup: int, ramp: int) -> float:
    """0 before warmup, then linear to 1 over `ramp` steps."""
    if step < warmup:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - warmup) / ramp)


def eps_schedule(step: int, eps: float, warmup: int, ramp: int) -> float:
    return eps * _ramp(step, warmup, ramp)


def kappa_schedule(step: int, warmup: int, ramp: int, kappa_end: float = 0.5) -> float:
    return 1.0 - (1.0 - kappa_end) * _ramp(step, warmup, ramp)


def beta_schedule(step: int, warmup: int, ramp: int) -> float:
    return 1.0 - _ramp(step, warmup, ramp)


def noise_augment(x: torch.Tensor, noise: Noise, generator: torch.Generator | None = None) -> torch.Tensor:
    """x plus one draw of `noise` per element (the same families as certify.Smoothed; Cohen et al.
    2019 train the base classifier on exactly the noise it is smoothed with)."""
    if not isinstance(noise, Noise):
        raise TypeError(f"noise must be certify.Gaussian / Laplace / Uniform, got {type(noise).__name__}")
    if generator is None:
        generator = torch.default_generator
    return x + noise.sample_torch(x.shape, generator, x.dtype).to(x.device)


# One traced graph per (model, input shape): the torch engine follows the live parameters.
_BOUNDED: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _bounded(model: torch.nn.Module, input_shape) -> BoundedModel:
    per_model = _BOUNDED.setdefault(model, {})
    key = tuple(input_shape)
    if key not in per_model:
        was_training = model.training
        model.eval()  # tracing reads batch norm / dropout in inference form
        try:
            per_model[key] = BoundedModel(model, key, engine="torch")
        finally:
            model.train(was_training)
    return per_model[key]


def robust_ce(margins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the worst-case logits (0 for the label, -m_j for the others), mean over the batch."""
    worst = torch.cat([torch.zeros_like(margins[:, :1]), -margins], dim=1)
    return F.cross_entropy(worst, torch.zeros(len(margins), dtype=torch.long, device=margins.device))


def ibp_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps, *, domain=None,
             norm: str = "linf") -> torch.Tensor:
    """Differentiable robust loss from IBP margin bounds (plain float; for training, not certificates)."""
    bounded = _bounded(model, x.shape[1:])
    margins = bounded.margins(x, y, eps, norm=norm, method="ibp", domain=domain, sound=False, grad=True)
    return robust_ce(margins)


def crown_ibp_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps, *, beta: float = 1.0,
                   domain=None, norm: str = "linf") -> torch.Tensor:
    """Differentiable robust loss from beta * CROWN-IBP + (1 - beta) * IBP margin bounds."""
    bounded = _bounded(model, x.shape[1:])
    margins = bounded.margins(x, y, eps, norm=norm, method="ibp", domain=domain, sound=False, grad=True)
    if beta > 0:
        tighter = bounded.margins(x, y, eps, norm=norm, method="crown-ibp", domain=domain, sound=False, grad=True)
        margins = beta * tighter + (1 - beta) * margins
    return robust_ce(margins)


@dataclass
class History:
    loss: list[float] = field(default_factory=list)
    natural_accuracy: list[float] = field(default_factory=list)


METHODS = ("natural", "noise", "ibp", "crown-ibp")


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str = "natural", epochs: int = 10,
        batch_size: int = 64, lr: float = 1e-3, eps: float = 0.1, noise: Noise | None = None,
        warmup_epochs: float = 1.0, ramp_epochs: float | None = None, kappa_end: float = 0.5, domain=None,
        seed: int = 0, progress: bool = False) -> History:
    """A small training loop: Adam, shuffled mini-batches, deterministic given `seed`.

    method: "natural"; "noise" (Gaussian/Laplace/uniform augmentation with `noise`); "ibp" or
    "crown-ibp" (certified training at l_inf radius `eps` with the schedules above; the ramp takes
    `ramp_epochs`, by default half the epochs after warm-up).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "noise" and noise is None:
        raise ValueError("method='noise' needs noise=certify.Gaussian(sigma) (or Laplace / Uniform)")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("x and y must be non-empty and of the same length")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(x) // batch_size)
    warmup = int(warmup_epochs * steps_per_epoch)
    ramp = int((ramp_epochs if ramp_epochs is not None else max(epochs - warmup_epochs, 0) / 2) * steps_per_epoch)
    history = History()
    step = 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total, correct, count = 0.0, 0, 0
        for batch in order.split(batch_size):
            xb, yb = x[batch], y[batch]
            if method == "noise":
                xb = noise_augment(xb, noise, generator)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if method in ("ibp", "crown-ibp"):
                current = eps_schedule(step, eps, warmup, ramp)
                kappa = kappa_schedule(step, warmup, ramp, kappa_end)
                if current > 0:
                    if method == "ibp":
                        robust = ibp_loss(model, xb, yb, current, domain=domain)
                    else:
                        robust = crown_ibp_loss(model, xb, yb, current, beta=beta_schedule(step, warmup, ramp),
                                                domain=domain)
                    loss = kappa * loss + (1 - kappa) * robust
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            total += loss.item() * len(batch)
            correct += int((logits.argmax(1) == yb).sum())
            count += len(batch)
        history.loss.append(total / count)
        history.natural_accuracy.append(correct / count)
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: loss {history.loss[-1]:.4f}, train accuracy "
                  f"{history.natural_accuracy[-1]:.3f}", flush=True)
    model.eval()
    return history
