"""Projected gradient descent (Madry et al. 2018): the observed side of robustness.

A successful attack is a point inside the ball that the model misclassifies, confirmed by running
the model on it, so the accuracy under attack is an *upper* bound on the true robust accuracy,
while a verified certificate is a *lower* bound; a report shows both and the gap between them.
An input both verified and attacked would prove a bound wrong: runs check that it never happens.
"""

from __future__ import annotations

import hashlib

import torch

from certify.bounds.reference import to_f32_down, to_f32_up

__all__ = ["pgd"]


def pgd(model, x: torch.Tensor, labels: torch.Tensor, eps: float, norm: str = "linf", *, domain=None,
        steps: int = 50, restarts: int = 2, seed: int = 0, indices=None, points: bool = False):
    """True per input where PGD found x' with ||x' - x|| <= eps (and x' in the domain box, l_inf)
    on which the model's top class is not the label. x: (B, *shape) float32; labels: (B,).

    Loss: the largest other logit minus the label's (Carlini-Wagner margin). Steps of 2.5 eps /
    steps (sign of the gradient for l_inf, the normalised gradient for l2), random starts drawn
    per input from (seed, indices[i], restart), so an input's attack does not depend on the
    others in its batch (indices default to 0..B-1).

    points=True returns (found, where): `where` (B, *shape) float32 holds the misclassified point
    for each input found (the input itself when the model misclassifies it), the input elsewhere."""
    x = x.float()
    lower, upper = _box(x, eps, norm, domain)
    indices = list(range(len(x))) if indices is None else [int(i) for i in indices]
    found = _misclassified(model, x, labels)
    where = x.clone()
    step = 2.5 * eps / steps
    for restart in range(restarts):
        todo = ~found
        if not bool(todo.any()):
            break
        xs, ys, lo, hi = x[todo], labels[todo], lower[todo], upper[todo]
        start = lo + (hi - lo) * torch.stack([
            torch.rand(xs.shape[1:], generator=torch.Generator().manual_seed(_start_seed(seed, indices[j], restart)))
            for j in todo.nonzero().flatten().tolist()])
        adv = _project(start, xs, lo, hi, eps, norm)
        for _ in range(steps):
            adv.requires_grad_(True)
            logits = model(adv)
            grad, = torch.autograd.grad(_margin(logits, ys).sum(), adv)
            with torch.no_grad():
                if norm == "linf":
                    adv = adv + step * grad.sign()
                else:
                    flat = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
                    adv = adv + step * grad / flat
                adv = _project(adv, xs, lo, hi, eps, norm)
        hit = _misclassified(model, adv, ys) & _inside(adv, xs, lo, hi, eps, norm)
        found[todo.nonzero().squeeze(1)[hit]] = True
        where[todo.nonzero().squeeze(1)[hit]] = adv[hit]
    return (found, where) if points else found


def _start_seed(seed: int, index: int, restart: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{index}/{restart}".encode()).digest()[:8], "little")


def _box(x, eps, norm, domain):
    """The l_inf box rounded inward (every float32 point in it is in the real ball); for l2 the
    whole cube, with the ball enforced by _project / _inside."""
    x64 = x.double()
    lower, upper = to_f32_up(x64 - eps), to_f32_down(x64 + eps)
    if domain is not None and norm == "linf":
        lower = lower.clamp(min=float(to_f32_up(torch.tensor(float(domain[0]), dtype=torch.float64))))
        upper = upper.clamp(max=float(to_f32_down(torch.tensor(float(domain[1]), dtype=torch.float64))))
    return lower, upper


def _project(adv, x, lower, upper, eps, norm):
    if norm == "l2":
        delta = adv - x
        size = delta.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
        adv = x + delta * torch.clamp(eps * (1 - 1e-6) / size.clamp_min(1e-30), max=1.0)
    return torch.minimum(torch.maximum(adv, lower), upper).detach()


def _inside(adv, x, lower, upper, eps, norm) -> torch.Tensor:
    inside = ((adv >= lower) & (adv <= upper)).flatten(1).all(dim=1)
    if norm == "l2":
        inside &= (adv.double() - x.double()).flatten(1).norm(dim=1) <= eps
    return inside


def _margin(logits, labels):
    own = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf"))
    return others.amax(dim=1) - own


@torch.no_grad()
def _misclassified(model, x, labels) -> torch.Tensor:
    return model(x).argmax(dim=1) != labels
