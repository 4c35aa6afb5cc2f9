"""alpha-CROWN and beta-CROWN bounds: optimise the relaxation unsoundly, certify it soundly.

CROWN's lower line alpha * z <= relu(z) holds on any interval for every alpha in [0, 1] (Xu et al.,
ICLR 2021), so the lower slopes of unstable ReLUs are free parameters, one per neuron and per spec
row. In a branch-and-bound domain, each split constraint s_j z_j >= 0 enters the back-substitution
with a multiplier beta_j >= 0 (Wang et al., NeurIPS 2021): min over the split domain of c . f is at
least min over the relaxed set of c . f - sum_j beta_j s_j z_j, for every beta >= 0 (weak duality).

Both are optimised by projected gradient ascent (Adam) on the plain float32 bound of the
differentiable twin (certify.bounds.reference, sound=False), where gradients are cheap; the bound
that is returned comes from one more pass of the same back-substitution with sound=True and the
optimised parameters (clamped into their valid ranges), so it keeps the exact-arithmetic guarantee
of every other bound in certify. Optimising unsoundly cannot make it wrong: any alpha in [0, 1] and
beta >= 0 give a valid bound, and the sound pass accounts for its own rounding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from certify.bounds import activations
from certify.bounds.graph import Activation, Graph, ReLU
from certify.bounds.reference import InputSet, backward, ibp, identity_spec, tighten_intermediate

__all__ = ["Optimized", "AlphaEngine", "relu_nodes", "initial_slopes", "optimize", "optimize_intermediate", "split_terms"]


@dataclass
class Optimized:
    lower: torch.Tensor  # (B, K) sound lower bounds
    plain: torch.Tensor  # (B, K) the best plain float32 bounds seen while optimising (not sound)
    slopes: dict  # ReLU node -> (B, K, *shape) lower slopes, the optimised ones
    record: dict  # node -> coefficients of the sound pass (ReLU outputs, and node 0: the input)


def relu_nodes(graph: Graph) -> list[int]:
    return [i for i, node in enumerate(graph.nodes) if isinstance(node.layer, ReLU)]


def activation_nodes(graph: Graph) -> list[int]:
    return [i for i, node in enumerate(graph.nodes) if isinstance(node.layer, Activation)]


def initial_slopes(graph: Graph, boxes: list, rows: int, through: int | None = None) -> dict:
    """CROWN's adaptive choice (1 where u > -l, else 0), one copy per spec row: the starting point,
    so the first iterate is CROWN's bound and the optimum is never looser. through: only the ReLUs
    up to this node (the ones a back-substitution from it meets: from a ReLU's own output node, that
    ReLU is relaxed first)."""
    slopes = {}
    for i in relu_nodes(graph):
        if through is not None and i > through:
            continue
        lower, upper = boxes[graph.nodes[i].inputs[0]]
        slope = (upper > -lower).to(torch.float32)
        slopes[i] = slope.unsqueeze(1).expand(-1, rows, *slope.shape[1:]).clone()
    # smooth activations: both lines' slopes, (B, K, 2, *shape), from CROWN's lines
    for i in activation_nodes(graph):
        if through is not None and i > through:
            continue
        lower, upper = boxes[graph.nodes[i].inputs[0]]
        a_l, _, a_u, _ = activations.relaxation(graph.nodes[i].layer.fn, lower, upper, sound=False)
        slope = torch.stack([a_l, a_u], 1)
        slopes[i] = slope.unsqueeze(1).expand(-1, rows, *slope.shape[1:]).clone()
    return slopes


def split_terms(betas: dict, signs: dict) -> dict:
    """-beta * s for each split node: signs (B, *shape) in {-1, 0, 1}, betas (B, K, *shape) >= 0."""
    return {k: -betas[k].clamp(min=0) * signs[k].unsqueeze(1) for k in signs}


def optimize(graph: Graph, input_set: InputSet, spec: torch.Tensor, boxes: list, *, signs: dict | None = None,
             iterations: int = 20, lr: float = 0.1, deadline: float | None = None,
             slopes: dict | None = None, sound: bool = True, start: int | None = None,
             initial_const: torch.Tensor | None = None) -> Optimized:
    """Sound lower bounds of spec . f over the input set (and the split domains `signs`), with
    slopes (and multipliers beta for the splits) optimised for `iterations` Adam steps. start,
    initial_const: bound spec . value(start) + initial_const instead (an intermediate layer's rows).

    boxes: sound bounds of every node on the (split) domain, as tighten_intermediate gives them.
    signs: split ReLU input node k -> (B, *shape) in {-1, 0, +1} (+1: split active, z >= 0; -1:
    inactive, z <= 0; 0: not split). slopes: a warm start (e.g. the parent domain's). deadline: a
    time.monotonic() value after which the optimisation stops early (the sound pass still runs)."""
    batch, rows = spec.shape[:2]
    last = len(graph.nodes) - 1 if start is None else start
    signs = {k: s for k, s in (signs or {}).items() if k < last}
    first = initial_slopes(graph, boxes, rows, through=last)
    if slopes is not None:  # a warm start (a parent domain's), for the nodes it has
        first.update({i: s.detach().clone() for i, s in slopes.items() if i <= last})
    params = {i: s.requires_grad_() for i, s in first.items()}
    smooth = set(activation_nodes(graph))
    betas = {k: torch.zeros(batch, rows, *s.shape[1:], requires_grad=True) for k, s in signs.items()}
    best = torch.full((batch, rows), -float("inf"))
    best_slopes = {i: s.detach().clone() for i, s in params.items()}
    best_betas = {k: b.detach().clone() for k, b in betas.items()}
    # Adam moves each parameter by about lr per step: right for ReLU slopes in [0, 1], far too much
    # for a smooth activation's, whose useful range is a fraction of f's largest slope (measured:
    # 0.05 L lr gains 3-5 % on tanh / GELU networks where lr itself gains nothing)
    scales = [1.0 if i not in smooth else 0.05 * graph.nodes[i].layer.fn.lipschitz for i in params]
    optimiser = _Adam([*params.values(), *betas.values()], lr, scales=scales + [1.0] * len(betas))
    if not optimiser.params:  # no unstable ReLU and no split: nothing to optimise
        iterations = 0
    with torch.enable_grad():
        for step in range(iterations + 1):
            lower = backward(graph, last, spec, boxes, input_set, sound=False, slopes=params,
                             split_terms=split_terms(betas, signs), initial_const=initial_const)
            with torch.no_grad():
                better = lower > best
                best = torch.where(better, lower, best)
                for i, s in params.items():
                    best_slopes[i] = torch.where(_rows_like(better, s), s, best_slopes[i])
                for k, b in betas.items():
                    best_betas[k] = torch.where(_rows_like(better, b), b, best_betas[k])
            if step == iterations or (deadline is not None and time.monotonic() > deadline):
                break
            if not lower.requires_grad:  # these rows meet none of the slopes (another branch's ReLUs)
                break
            optimiser.step(torch.autograd.grad(-lower[torch.isfinite(lower)].sum(), optimiser.params,
                                               allow_unused=True))
            with torch.no_grad():  # the projection onto the valid parameters
                for i, s in params.items():
                    # ReLU lower slopes lie in [0, 1]; any slope of a smooth activation is valid
                    # (its intercepts follow it), kept to a sane range
                    s.clamp_(0, 1) if i not in smooth else s.clamp_(-4, 4)
                for b in betas.values():
                    b.clamp_(min=0)
    record: dict = {}
    with torch.no_grad():
        final = backward(graph, last, spec, boxes, input_set, sound=sound, slopes=best_slopes,
                         split_terms=split_terms(best_betas, signs), record=record, initial_const=initial_const)
    return Optimized(final, best, best_slopes, record)


def optimize_intermediate(graph: Graph, input_set: InputSet, boxes: list, *, iterations: int = 20, lr: float = 0.1,
                          deadline: float | None = None, signs: dict | None = None, clamp=None,
                          sound: bool = True) -> list:
    """alpha-CROWN for the intermediate layers: every ReLU input's unstable neurons bounded again,
    in order, with the earlier ReLUs' lower slopes optimised separately for each neuron's lower and
    upper bound (Xu et al. 2021, Sec. 3.1), and beta for the splits in `signs` below that layer;
    each later layer then sees the tighter boxes. The same per-layer loop as CROWN's
    (tighten_intermediate), with optimize in place of one back-substitution; every bound comes from
    optimize's sound final pass and only ever tightens a box (both are valid on the set).

    boxes: sound boxes of every node (e.g. CROWN's, tighten_intermediate). clamp: as for
    tighten_intermediate (branch and bound's splits)."""
    signs = signs or {}
    sloped = relu_nodes(graph) + activation_nodes(graph)  # the nodes with slopes to optimise

    def lower_bounds(start, spec, current, const):
        keep = torch.full(spec.shape[:2], -float("inf"))  # a bound that leaves the boxes as they are
        if not any(i <= start for i in sloped) or (deadline is not None and time.monotonic() > deadline):
            return keep  # no slope to optimise below this layer (CROWN's box is the same), or no time
        local = {k: s for k, s in signs.items() if k < start}
        return optimize(graph, input_set, spec, current, signs=local, iterations=iterations, lr=lr,
                        deadline=deadline, start=start, initial_const=const, sound=sound).lower

    return tighten_intermediate(graph, list(boxes), input_set, sound, clamp, lower_bounds=lower_bounds)


class AlphaEngine:
    """method="alpha-crown" behind the engines' interface (certify.bounds.BoundedModel): CROWN's
    intermediate bounds tightened by alpha-CROWN layer by layer (slopes optimised per neuron bound,
    optimize_intermediate), then the output's bound with slopes optimised per spec row, each
    finished in the sound path; the larger of that and CROWN's own sound bound, so never looser
    than CROWN. Runs on the differentiable twin (CPU)."""

    def __init__(self, graph: Graph, iterations: int = 20, lr: float = 0.1, baseline=None):
        """baseline: the engine whose CROWN bound alpha-CROWN must never fall below (the
        BoundedModel's own engine; by default the twin's CROWN)."""
        self.graph, self.iterations, self.lr, self.baseline = graph, iterations, lr, baseline

    def compute_bounds(self, input_set: InputSet, method: str, sound: bool = True, spec=None, grad: bool = False):
        if method != "alpha-crown":
            raise ValueError(f"AlphaEngine computes 'alpha-crown' bounds, not {method!r}")
        if grad:
            raise ValueError("alpha-crown bounds carry no gradients; use method='crown' for certified training")
        graph = self.graph
        if spec is None:
            spec = identity_spec(input_set.centre.shape[0], graph.output.shape, device=input_set.centre.device)
        with torch.no_grad():
            boxes = tighten_intermediate(graph, ibp(graph, input_set.box, sound), input_set, sound)
            boxes = optimize_intermediate(graph, input_set, boxes, iterations=self.iterations, lr=self.lr,
                                          sound=sound)
            if self.baseline is not None:
                crown = self.baseline.compute_bounds(input_set, "crown", sound, spec=spec)
            else:
                crown = backward(graph, len(graph.nodes) - 1, spec, boxes, input_set, sound)
        optimised = optimize(graph, input_set, spec, boxes, iterations=self.iterations, lr=self.lr, sound=sound)
        return torch.maximum(crown, optimised.lower)


class _Adam:
    """Adam (Kingma & Ba 2015) on a list of tensors, in place: torch.optim's first use imports
    torch._dynamo, seconds of start-up for a dozen lines of arithmetic."""

    def __init__(self, params: list, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, scales=None):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.scales = scales if scales is not None else [1.0] * len(params)  # per-parameter multiples of lr
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, g, m, v, scale in zip(self.params, grads, self.m, self.v, self.scales):
            if g is None:
                continue
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            step = scale * self.lr / (1 - b1**self.t)
            p.addcdiv_(m, (v / (1 - b2**self.t)).sqrt_().add_(self.eps), value=-step)


def _rows_like(mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, K) mask broadcast over t's (B, K, *shape)."""
    return mask.reshape(*mask.shape, *([1] * (t.dim() - 2)))
