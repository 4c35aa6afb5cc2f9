"""Complete verification of one input: attack, alpha-CROWN, then beta-CROWN branch and bound.

Decides whether every point of the input set keeps the label (all margins logit[label] -
logit[j] > 0), with three outcomes:
  - "verified": every leaf domain of the search has a sound lower bound > 0 on its margin (or is
    empty), so the margin is > 0 on the whole set, in exact arithmetic for the network with its
    stored float32 weights (the same guarantee as every bound in certify);
  - "falsified": a point of the set on which the model, run in float32 and in float64, puts another
    class at least as high as the label (strictly higher in float64): a counterexample anyone can
    replay;
  - "unknown": the deadline or the domain budget ran out first.

The search (Wang et al., NeurIPS 2021, beta-CROWN): one domain per unproven margin row, holding a
set of ReLU split decisions. Domains are bounded in batches (one call of the engine for many
domains): intermediate bounds by CROWN with the splits clamped in, then the margin's bound with
slopes alpha and split multipliers beta optimised (certify.verify.alpha; sound final pass). A
domain whose bound is > 0 is done; otherwise the minimiser of its linear lower bound is run through
the model (a free counterexample candidate, as in alpha,beta-CROWN), and the domain is split on
the ReLU chosen by certify.verify.branching. Domains wait in a queue ordered by their bound (the
worst first: where a counterexample is likeliest); beyond `max_queue_bytes` of queued state the
search goes depth-first (newest first), which bounds the queue by depth x batch instead of dying.
A domain with no unstable ReLU left is linear; if its bound is still <= 0 after more beta steps and
its minimiser is not a counterexample, the input is left "unknown" (never guessed).
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field

import torch

from certify.attack import descend, inner_box
from certify.bounds.graph import Graph
from certify.bounds.reference import InputSet, ibp, margin_spec, tighten_intermediate, to_f32_up
from certify.verify import branching
from certify.verify.alpha import optimize, relu_nodes

__all__ = ["Decision", "SearchSettings", "decide_one"]


@dataclass
class SearchSettings:
    timeout: float = 30.0  # seconds per input, checked in every loop (answers within ~one batch more)
    batch: int = 64  # domains bounded per engine call
    iterations: int = 20  # alpha/beta Adam steps per bounding
    root_iterations: int = 50
    lr: float = 0.1
    max_queue_bytes: int = 1 << 30  # beyond this much queued state: depth-first
    attack_steps: int = 50
    attack_restarts: int = 5
    seed: int = 0
    input_split_dims: int = 20  # split the input box instead of ReLUs up to this many input dimensions
    refine_steps: int = 10  # targeted PGD steps from each batch's bound minimisers (0: none)
    max_domains: int | None = None  # a budget in domains bounded, beside the time (deterministic: tests, audits)

    def __post_init__(self):
        counts = ("batch", "root_iterations", "attack_steps", "attack_restarts")
        for name in counts:
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"SearchSettings.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("iterations", "refine_steps", "input_split_dims"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 0):
                raise ValueError(f"SearchSettings.{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if not (self.timeout > 0 and self.lr > 0 and self.max_queue_bytes >= 1):
            raise ValueError("SearchSettings: timeout and lr must be > 0, max_queue_bytes >= 1")


@dataclass
class Decision:
    status: str  # "verified" | "falsified" | "unknown"
    counterexample: torch.Tensor | None = None  # (*input_shape) float32, when falsified
    seconds: float = 0.0
    domains: int = 0  # domains bounded
    lower: float = -float("inf")  # the root's sound lower bound on the smallest margin (alpha-CROWN)
    reason: str = ""  # why unknown


@dataclass(order=True)
class _Domain:
    lower: float
    order: int
    row: int = field(compare=False)  # the margin row (class index among the non-label classes)
    splits: tuple = field(compare=False)  # ((node k, flat index, sign +1/-1), ...)
    box: tuple | None = field(compare=False)  # input splitting: the sub-box (lower, upper), (1, *shape)
    slopes: dict = field(compare=False)  # warm start: ReLU node -> (1, 1, *shape)
    branch: tuple | None = field(compare=False)  # ReLU split (node k, flat index) or input split (None, dim)


class _Search:
    def __init__(self, model, graph: Graph, x, label: int, eps: float, norm: str, domain, settings: SearchSettings):
        self.model, self.graph, self.settings = model, graph, settings
        self.x = x.reshape(1, *graph.input_shape).float()
        self.label, self.eps, self.norm, self.domain = label, float(eps), norm, domain
        self.num_classes = int(torch.tensor(graph.output.shape).prod())
        self.input_set = InputSet.make(self.x, torch.tensor([self.eps], dtype=torch.float64), norm, domain, True)
        self.relus = relu_nodes(graph)
        self.relu_inputs = {i: graph.nodes[i].inputs[0] for i in self.relus}
        self.spec = margin_spec(torch.tensor([label]), self.num_classes)  # (1, C-1, C)
        self.inside = inner_box(self.x, self.eps, norm, domain)  # every float32 point in it is in the set
        # Input splitting for low-dimensional l_inf sets (control networks, ACAS Xu style), ReLU
        # splitting otherwise: halving one of few input widths shrinks every relaxation at once.
        self.input_split = norm == "linf" and self.x[0].numel() <= settings.input_split_dims
        self.bounded = 0
        self.deadline = time.monotonic() + settings.timeout
        self.counter = itertools.count()

    # ------------------------------------------------------------------ counterexamples
    def confirm(self, points: torch.Tensor) -> torch.Tensor | None:
        """The first of `points` (N, *shape), moved inside the set, that the model misclassifies in
        float32 (argmax not the label) and in float64 (another logit strictly above the label's)."""
        points = self.project(points)
        with torch.no_grad():
            wrong32 = self.model(points).argmax(1) != self.label
            if not bool(wrong32.any()):
                return None
            candidates = points[wrong32]
            logits = self.model64(candidates.double())
            others = logits.clone()
            others[:, self.label] = -float("inf")
            wrong64 = others.amax(1) > logits[:, self.label]
            for point in candidates[wrong64]:  # replayed alone, as an audit will (batches can round otherwise)
                point = point.unsqueeze(0)
                logits = self.model64(point.double())[0]
                others = torch.cat([logits[:self.label], logits[self.label + 1:]])
                if int(self.model(point).argmax(1)) != self.label and float(others.max()) > float(logits[self.label]):
                    return point[0].clone()
        return None

    def project(self, points: torch.Tensor) -> torch.Tensor:
        lower, upper = self.inside
        points = torch.minimum(torch.maximum(points.float(), lower), upper)
        if self.norm == "l2":
            delta = (points.double() - self.x.double()).flatten(1)
            size = delta.norm(dim=1, keepdim=True)
            scale = torch.clamp(self.eps * (1 - 1e-6) / size.clamp_min(1e-300), max=1.0)
            points = (self.x.double().flatten(1) + delta * scale).float().reshape(points.shape)
            outside = (points.double() - self.x.double()).flatten(1).norm(dim=1) > self.eps
            points[outside] = self.x[0]
        return points

    def falsify(self, candidates: tuple | None) -> torch.Tensor | None:
        """A counterexample among the bounds' minimisers ((N, *shape) points, one per domain, and
        the domains' margin rows), or among the points a short targeted PGD reaches from them (each
        pushing its domain's class above the label): the search's free candidates, refined as
        alpha,beta-CROWN does during BaB."""
        if candidates is None:
            return None
        candidates, rows = candidates
        found = self.confirm(candidates)
        if found is not None or self.settings.refine_steps == 0:
            return found
        targets = torch.tensor([r if r < self.label else r + 1 for r in rows]).view(-1, 1)

        def gain(points):  # each domain's class above the label: the violation to maximise
            logits = self.model(points)
            return (logits.gather(1, targets).squeeze(1) - logits[:, self.label]).sum(), None

        points, _ = descend(self.project(candidates), gain, self.project, self.settings.refine_steps,
                            2.5 * self.eps / self.settings.refine_steps, norm=self.norm, maximize=True)
        return self.confirm(points)

    def attack(self) -> torch.Tensor | None:
        from certify.attack import pgd

        s = self.settings
        found, where = pgd(self.model, self.x, torch.tensor([self.label]), self.eps, self.norm, domain=self.domain,
                           steps=s.attack_steps, restarts=s.attack_restarts, seed=s.seed, points=True)
        return self.confirm(where) if bool(found[0]) else None

    # ------------------------------------------------------------------ bounding
    def bound(self, rows: list[int], splits: list[tuple], slopes: list[dict] | None, iterations: int,
              sub_boxes: list | None = None):
        """Sound lower bounds for len(rows) domains (the margin row, split set and input sub-box of
        each), their branching choices, warm-start slopes and minimiser candidates. Empty domains
        get +inf."""
        count = len(rows)
        if sub_boxes is None:
            iset = InputSet(self.norm, self.x.expand(count, *self.x.shape[1:]), self.input_set.eps.expand(count),
                            tuple(b.expand(count, *b.shape[1:]) for b in self.input_set.box))
        else:  # l_inf only: the engines concretise over `box`; centre and eps merely describe it
            lower, upper = (torch.cat(parts) for parts in zip(*sub_boxes))
            centre = 0.5 * lower + 0.5 * upper
            eps = to_f32_up(torch.maximum(upper.double() - centre.double(), centre.double() - lower.double())
                            .flatten(1).amax(1))
            iset = InputSet("linf", centre, eps, (lower, upper))
        signs = {}
        for d, domain_splits in enumerate(splits):
            for k, flat, sign in domain_splits:
                if k not in signs:
                    signs[k] = torch.zeros(count, self.graph.nodes[k].size)
                signs[k][d, flat] = sign
        signs = {k: s.reshape(count, *self.graph.nodes[k].shape) for k, s in signs.items()}

        def clamp(k, box):
            if k not in signs:
                return box
            lower, upper = box
            return (torch.where(signs[k] > 0, lower.clamp(min=0), lower),
                    torch.where(signs[k] < 0, upper.clamp(max=0), upper))

        with torch.no_grad():
            boxes = tighten_intermediate(self.graph, ibp(self.graph, iset.box, True), iset, True, clamp)
        empty = torch.zeros(count, dtype=torch.bool)
        for lower, upper in boxes:
            empty |= (lower > upper).flatten(1).any(1) | torch.isnan(lower).flatten(1).any(1)
        lower = torch.full((count,), float("inf"))
        picks: list = [None] * count
        new_slopes: list = [None] * count
        candidates = None
        live = (~empty).nonzero().flatten()
        if len(live):
            idx = live
            live_boxes = [(lo[idx], hi[idx]) for lo, hi in boxes]
            sub_set = InputSet(self.norm, iset.centre[idx], iset.eps[idx], (iset.box[0][idx], iset.box[1][idx]))
            spec = self.spec[0, torch.tensor(rows)[idx]].unsqueeze(1)  # (L, 1, C)
            warm = None
            if slopes is not None:
                warm = {i: torch.cat([slopes[d][i] for d in idx.tolist()]) for i in self.relus}
            result = optimize(self.graph, sub_set, spec, live_boxes, signs={k: s[idx] for k, s in signs.items()},
                              iterations=iterations, lr=self.settings.lr, deadline=self.deadline, slopes=warm)
            self.bounded += len(idx)
            lower[idx] = result.lower[:, 0]
            coefficients = result.record[0][:, 0]  # on the input: the bound's minimiser is a free candidate
            if self.input_split:
                chosen = [(None, dim) for dim in branching.input_dimension(coefficients, sub_set.box)]
            else:
                chosen = branching.choose(branching.scores(result.record, live_boxes, self.relu_inputs))
            for j, d in enumerate(idx.tolist()):
                picks[d] = chosen[j] if chosen else None
                new_slopes[d] = {i: result.slopes[i][j:j + 1].detach() for i in self.relus}
            candidates = (self.minimiser(coefficients, sub_set), [rows[d] for d in idx.tolist()])
        return lower, picks, new_slopes, candidates

    def minimiser(self, lam: torch.Tensor, iset: InputSet) -> torch.Tensor:
        if self.norm == "linf":
            return torch.where(lam > 0, iset.box[0], iset.box[1])
        direction = lam / lam.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (lam.dim() - 1))
        return self.x - self.eps * direction

    def _boxes(self, domains: list) -> list | None:
        return [d.box for d in domains] if self.input_split else None

    # ------------------------------------------------------------------ the search
    def run(self) -> Decision:
        started = time.monotonic()

        def done(status, counterexample=None, lower=-float("inf"), reason=""):
            return Decision(status, counterexample, time.monotonic() - started, self.bounded, lower, reason)

        counterexample = self.confirm(self.x)
        if counterexample is not None:
            return done("falsified", counterexample)
        rows = list(range(self.num_classes - 1))
        lower, picks, slopes, candidates = self.bound(rows, [()] * len(rows), None, self.settings.root_iterations)
        root = float(lower.min())
        if root > 0:
            return done("verified", lower=root)
        # An attack before the search: most falsifiable inputs fall to it (alpha,beta-CROWN does the same).
        if (found := self.attack()) is not None or (found := self.falsify(candidates)) is not None:
            return done("falsified", found, root)
        root_box = self.input_set.box if self.input_split else None
        queue: list[_Domain] = []
        for row in rows:
            if not lower[row] > 0:
                heapq.heappush(queue, _Domain(float(lower[row]), next(self.counter), row, (), root_box, slopes[row],
                                              picks[row]))
        per_domain = sum(4 * self.graph.nodes[i].size for i in self.relus) + 8 * self.x.numel() + 200
        stack_mode = False
        while queue:
            if time.monotonic() > self.deadline:
                return done("unknown", lower=root, reason=f"timeout with {len(queue)} domains open")
            if self.settings.max_domains is not None and self.bounded >= self.settings.max_domains:
                return done("unknown", lower=root, reason=f"{self.bounded} domains bounded, the budget")
            stack_mode = stack_mode or len(queue) * per_domain > self.settings.max_queue_bytes
            take = []
            while queue and len(take) < max(1, self.settings.batch // 2):
                take.append(queue.pop() if stack_mode else heapq.heappop(queue))
            leaves = [d for d in take if d.branch is None]
            if leaves:  # linear on the domain: one more, longer optimisation of beta, else give up
                lower_l, _, _, cands = self.bound([d.row for d in leaves], [d.splits for d in leaves],
                                                  [d.slopes for d in leaves], 5 * self.settings.iterations,
                                                  self._boxes(leaves))
                if (found := self.falsify(cands)) is not None:
                    return done("falsified", found, root)
                if not bool((lower_l > 0).all()):
                    return done("unknown", lower=root, reason="a fully split domain stayed unproven")
            children = [child for d in take if d.branch is not None for child in _children(d)]
            if not children:
                continue
            parents = [parent for parent, _, _ in children]
            lower_c, picks_c, slopes_c, cands = self.bound(
                [d.row for d in parents], [splits for _, splits, _ in children], [d.slopes for d in parents],
                self.settings.iterations, [box for _, _, box in children] if self.input_split else None)
            if (found := self.falsify(cands)) is not None:
                return done("falsified", found, root)
            for j, (parent, splits, box) in enumerate(children):
                if lower_c[j] > 0:
                    continue
                domain = _Domain(float(lower_c[j]), next(self.counter), parent.row, splits, box, slopes_c[j],
                                 picks_c[j])
                if stack_mode:
                    queue.append(domain)
                else:
                    heapq.heappush(queue, domain)
        return done("verified", lower=root)


def _children(d: _Domain) -> list[tuple]:
    """The two halves of a domain: (parent, splits, box) each. A ReLU split adds z >= 0 / z <= 0;
    an input split halves the box along one dimension (the halves share the float32 midpoint, so
    they cover the parent exactly)."""
    kind, index = d.branch
    if kind is not None:
        return [(d, d.splits + ((kind, index, sign),), d.box) for sign in (1, -1)]
    lower, upper = d.box
    mid = (0.5 * lower.flatten()[index] + 0.5 * upper.flatten()[index]).item()
    left_upper, right_lower = upper.clone(), lower.clone()
    left_upper.view(-1)[index] = mid
    right_lower.view(-1)[index] = mid
    return [(d, d.splits, (lower, left_upper)), (d, d.splits, (right_lower, upper))]


def decide_one(model, graph: Graph, x, label: int, eps: float, norm: str = "linf", domain=None,
               settings: SearchSettings | None = None, model64=None) -> Decision:
    """The three-valued decision for one input x (*input_shape, float32 values) and its label
    (module docstring). model64: the model's float64 copy (float64_copy), made here if not given."""
    search = _Search(model, graph, x, int(label), eps, norm, domain, settings or SearchSettings())
    search.model64 = model64 if model64 is not None else float64_copy(model)
    return search.run()


def float64_copy(model):
    """A float64 copy of the model: the second execution a counterexample must fail in."""
    import copy

    return copy.deepcopy(model).double().eval()
