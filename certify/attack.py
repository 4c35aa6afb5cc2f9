"""Projected gradient descent (Madry et al. 2018): the observed side of robustness.

A successful attack is a point inside the ball that the model misclassifies, confirmed by running
the model on it, so the accuracy under attack is an *upper* bound on the true robust accuracy,
while a verified certificate is a *lower* bound; a report shows both and the gap between them.
An input both verified and attacked would prove a bound wrong: runs check that it never happens.

One stepping loop serves every gradient attack on inputs: `descend` (projected gradient steps on
a loss the caller gives, projected by a function the caller gives). `pgd` uses it with the
Carlini-Wagner margin over an l_inf or l2 ball; the VNN-LIB property checker
(certify.verify.property_check) with the violation of linear output constraints over a box.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

import torch

from certify._exact import f32_at_least, f32_at_most
from certify.bounds.reference import down, up

__all__ = ["pgd", "inner_box", "descend"]


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
    lower, upper = inner_box(x, eps, norm, domain)
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
        adv, _ = descend(adv, lambda p: (_margin(model(p), ys).sum(), None),
                         lambda p: _project(p, xs, lo, hi, eps, norm), steps, step, norm=norm, maximize=True)
        hit = _misclassified(model, adv, ys) & _inside(adv, xs, lo, hi, eps, norm)
        found[todo.nonzero().squeeze(1)[hit]] = True
        where[todo.nonzero().squeeze(1)[hit]] = adv[hit]
    return (found, where) if points else found


def descend(x: torch.Tensor, loss, project, steps: int, step_size, *, norm: str = "linf",
            maximize: bool = False, visit=None):
    """Projected gradient steps from x: the stepping loop of every attack in certify.

    loss(points) -> (total, state): `total` a scalar tensor to minimise (maximise with
    maximize=True), computed with gradients enabled; `state` is handed to `visit`.
    project(points) -> the points moved back into the set (called without gradients).
    step_size: a number, or a function of the step t -> a number or a tensor broadcasting against x.
    norm: "linf" steps along the gradient's sign, "l2" along the gradient normalised per input
    (the first dimension of x indexes inputs).
    visit(t, points, state), optional: called on every iterate after its loss, t = 0 (x itself)
    ... steps (the last); a result other than None ends the descent there. Without visit the last
    iterate's loss is not computed (nothing would look at it).
    The descent also ends when `total` does not depend on the points (no gradient to follow).

    Returns (the last iterate, detached; visit's result or None)."""
    for t in range(steps + 1):
        if t == steps and visit is None:
            break
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            total, state = loss(x)
        if visit is not None:
            found = visit(t, x, state)
            if found is not None:
                return x.detach(), found
        if t == steps or not total.requires_grad:
            break
        grad, = torch.autograd.grad(total, x)
        with torch.no_grad():
            size = step_size(t) if callable(step_size) else step_size
            if norm == "linf":
                delta = size * grad.sign()
            else:
                norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
                delta = size * grad / norms
            x = project(x + delta if maximize else x - delta)
    return x.detach(), None


def _start_seed(seed: int, index: int, restart: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{index}/{restart}".encode()).digest()[:8], "little")


def inner_box(x, eps, norm, domain):
    """The l_inf box rounded inward: the smallest float32 >= x - eps to the largest <= x + eps, so
    every float32 point in it is in the real ball (and no closer to x than it must be: for eps below
    one float32 spacing the box is x itself, not an inverted one); for l2 the whole cube, with the
    ball enforced by _project / _inside. x: float32 values; eps: a float.

    Exactness: r = round-to-nearest(x - eps) is within one float32 spacing of x - eps, and the test
    (r - x) + eps >= 0 is exact in float64 (r - x is a difference of nearby float32 numbers, exact
    in float64; adding eps rounds once and rounding keeps the sign), so one step fixes the side."""
    x64, eps = x.double(), float(eps)
    lower, upper = (x64 - eps).float(), (x64 + eps).float()
    lower = torch.where((lower.double() - x64) + eps < 0, up(lower), lower)
    upper = torch.where((x64 - upper.double()) + eps < 0, down(upper), upper)
    if domain is not None and norm == "linf":
        lower = lower.clamp(min=f32_at_least(Fraction(float(domain[0]))))
        upper = upper.clamp(max=f32_at_most(Fraction(float(domain[1]))))
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
