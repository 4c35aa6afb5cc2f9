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

The search (Wang et al., NeurIPS 2021, beta-CROWN) runs on a goal: `Robustness` here (targets
are the margin rows, one per other class), or a VNN-LIB property's cases (PropertyCases in
certify.verify.property_check: a target per case, its constraint rows together). One domain per
unproven target, holding a set of ReLU split decisions. The root's intermediate bounds are
alpha-CROWN's (slopes optimised per neuron bound: certify.verify.alpha.optimize_intermediate);
every child starts from its parent's node boxes (valid on the child, a subset), clamps its splits
in, re-derives by CROWN only the ReLU inputs after its new split's node and keeps the tighter
bounds. Domains are bounded in batches (one engine call for many domains), the target's bound
with slopes alpha and split multipliers beta optimised (certify.verify.alpha; sound final pass).
A domain whose bound proves its target is done; otherwise the minimiser of its linear lower bound
is run through the model (a free counterexample candidate, as in alpha,beta-CROWN), and the
domain is split on the ReLU chosen by certify.verify.branching. Domains wait in a queue ordered
by their score (the worst first: where a counterexample is likeliest); beyond `max_queue_bytes`
of queued state the search goes depth-first (newest first), which bounds the queue by depth x
batch instead of dying. A domain with no unstable ReLU left is linear: more beta steps, then the
exact multipliers of its linear program (certify.verify.leaf), each finished by the sound pass;
if none proves it and no minimiser is a counterexample, the input is left "unknown" (never
guessed). That happens for a VNN-LIB case of several constraints that only their conjunction
excludes from such a domain: each target row is proven on its own.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field

import torch

from certify.attack import descend, inner_box
from certify.bounds.graph import Graph
from certify.bounds.native import NativeEngine
from certify.bounds.reference import InputSet, backward, ibp, margin_spec, split_clamp, tighten_intermediate
from certify.verify import branching, leaf
from certify.verify.alpha import optimize, optimize_intermediate, relu_nodes, split_terms

__all__ = ["Decision", "Robustness", "SearchSettings", "decide_one", "search"]


@dataclass
class SearchSettings:
    timeout: float = 30.0  # seconds per input, checked in every loop (answers within ~one batch more)
    batch: int = 64  # domains bounded per engine call
    iterations: int = 20  # alpha/beta Adam steps per bounding
    root_iterations: int = 50
    lr: float = 0.1
    max_queue_bytes: int = 1 << 30  # beyond this much queued state: depth-first
    native: bool = True  # intermediate bounds of each batch of domains by the C++ engine (else the twin)
    attack_steps: int = 50
    attack_restarts: int = 5
    seed: int = 0
    input_split_dims: int = 20  # split the input box instead of ReLUs up to this many input dimensions
    refine_steps: int = 10  # targeted PGD steps from each batch's bound minimisers (0: none)
    max_domains: int | None = None  # a budget in domains bounded, beside the time (deterministic: tests, audits)
    retighten: bool = True  # children re-derive the layers after their split by CROWN (else: clamps only)

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
    score: float  # the goal's score of the domain's bound (the queue's order: the worst first)
    order: int
    target: int = field(compare=False)  # the goal's target (robustness: the class among the non-label ones)
    splits: tuple = field(compare=False)  # ((node k, flat index, sign +1/-1), ...)
    box: tuple | None = field(compare=False)  # input splitting: the sub-box (lower, upper), (1, *shape)
    slopes: dict = field(compare=False)  # warm start: ReLU node -> (1, 1, *shape)
    branch: tuple | None = field(compare=False)  # ReLU split (node k, flat index) or input split (None, dim)
    boxes: list = field(compare=False)  # sound (lower, upper) of every node on the domain, (1, *shape) each


class Robustness:
    """The goal of decide_one: every point of the ball keeps the label. Targets are the margin rows
    logit[label] - logit[j], one row each (T = classes - 1, R = 1), proven where the sound lower
    bound is > 0; a counterexample is a point of the ball the model misclassifies in float32
    (argmax not the label) and in float64 (another logit strictly above the label's).

    The interface the search uses (PropertyCases in certify.verify.property_check is the other):
    input_set (batch 1, sound), inside (float32 box of points in the set), spec (T, R, classes),
    proven / score / confirm / gain / project / opening_counterexample."""

    def __init__(self, model, model64, graph: Graph, x, label: int, eps: float, norm: str, domain, settings):
        self.model, self.model64, self.settings = model, model64, settings
        self.x = x.reshape(1, *graph.input_shape).float()
        self.label, self.eps, self.norm, self.domain = label, float(eps), norm, domain
        self.num_classes = int(torch.tensor(graph.output.shape).prod())
        self.input_set = InputSet.make(self.x, torch.tensor([self.eps], dtype=torch.float64), norm, domain, True)
        self.spec = margin_spec(torch.tensor([label]), self.num_classes)[0].unsqueeze(1)  # (C-1, 1, C)
        self.inside = inner_box(self.x, self.eps, norm, domain)  # every float32 point in it is in the set

    def proven(self, targets: list, lower: torch.Tensor) -> torch.Tensor:
        return lower[:, 0] > 0

    def score(self, targets: list, lower: torch.Tensor) -> torch.Tensor:
        """How far from proven (< 0) or past it: the queue's order, the worst first."""
        return lower[:, 0]

    def confirm(self, points: torch.Tensor) -> torch.Tensor | None:
        """The first of `points` (N, *shape), moved inside the set, that the model misclassifies in
        float32 and float64 (class docstring)."""
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

    def gain(self, points: torch.Tensor, targets: list) -> torch.Tensor:
        """Each domain's class above the label, summed: the violation a refining attack maximises."""
        classes = torch.tensor([t if t < self.label else t + 1 for t in targets]).view(-1, 1)
        logits = self.model(points)
        return (logits.gather(1, classes).squeeze(1) - logits[:, self.label]).sum()

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

    def opening_counterexample(self, before_search: bool) -> torch.Tensor | None:
        """The input itself (before_search False: before any bound), then PGD with restarts on the
        margin (before the search: most falsifiable inputs fall to it, as in alpha,beta-CROWN)."""
        if not before_search:
            return self.confirm(self.x)
        from certify.attack import pgd

        s = self.settings
        found, where = pgd(self.model, self.x, torch.tensor([self.label]), self.eps, self.norm, domain=self.domain,
                           steps=s.attack_steps, restarts=s.attack_restarts, seed=s.seed, points=True)
        return self.confirm(where) if bool(found[0]) else None


class _Search:
    def __init__(self, goal, graph: Graph, settings: SearchSettings, deadline: float | None = None):
        self.goal, self.graph, self.settings = goal, graph, settings
        self.input_set = goal.input_set
        self.norm = goal.input_set.norm
        self.relus = relu_nodes(graph)
        self.relu_inputs = {i: graph.nodes[i].inputs[0] for i in self.relus}
        self.spec = goal.spec  # (T, R, C)
        # Input splitting for low-dimensional l_inf sets (control networks, ACAS Xu style), ReLU
        # splitting otherwise: halving one of few input widths shrinks every relaxation at once.
        self.input_split = self.norm == "linf" and self.input_set.centre[0].numel() <= settings.input_split_dims
        self.bounded = 0
        self.deadline = time.monotonic() + settings.timeout if deadline is None else deadline
        self.counter = itertools.count()
        # the intermediate bounds of each batch of domains: the C++ engine's batched query, or the
        # plain-PyTorch twin where the engine is unavailable (settings.native False, for comparison)
        self.native = NativeEngine(graph) if settings.native else None

    # ------------------------------------------------------------------ counterexamples
    def falsify(self, candidates: tuple | None):
        """A counterexample among the bounds' minimisers ((N, *shape) points, one per domain, and
        the domains' targets), or among the points a short PGD on the goal's violation reaches from
        them: the search's free candidates, refined as alpha,beta-CROWN does during BaB."""
        if candidates is None:
            return None
        candidates, targets = candidates
        goal = self.goal
        found = goal.confirm(candidates)
        if found is not None or self.settings.refine_steps == 0:
            return found
        radius = (self.input_set.box[1] - self.input_set.box[0]).double().amax().item() / 2
        points, _ = descend(goal.project(candidates), lambda p: (goal.gain(p, targets), None), goal.project,
                            self.settings.refine_steps, 2.5 * radius / self.settings.refine_steps, norm=self.norm,
                            maximize=True)
        return goal.confirm(points)

    # ------------------------------------------------------------------ bounding
    def bound(self, targets: list[int], splits: list[tuple], slopes: list[dict] | None, iterations: int,
              sub_boxes: list | None = None, inherited: list | None = None, keep_through: int = -1,
              intermediate_iterations: int = 0):
        """Bounds len(targets) domains (the goal's target, split set and input sub-box of each):
        which are proven (from sound lower bounds, by goal.proven; an empty domain is), their
        scores (goal.score; +inf when empty), branching choices, warm-start slopes, node boxes and
        minimiser candidates.

        inherited: each domain's parent's node boxes (valid on the child, a subset): the child
        starts from them, re-derives only the ReLU inputs after node keep_through (its new split's
        node: nothing at or before it changed), and keeps the tighter of old and new bounds, as
        beta-CROWN does. intermediate_iterations > 0: intermediate bounds by alpha-CROWN (the root)."""
        count = len(targets)
        if sub_boxes is None:
            root = self.input_set
            iset = InputSet(self.norm, root.centre.expand(count, *root.centre.shape[1:]), root.eps.expand(count),
                            tuple(b.expand(count, *b.shape[1:]) for b in root.box))
        else:  # l_inf only (input splitting)
            iset = InputSet.of_box(*(torch.cat(parts) for parts in zip(*sub_boxes)))
        signs = self.split_signs(splits)
        clamp = split_clamp(signs)

        with torch.no_grad():
            given = None
            if inherited is not None:
                given = [(torch.cat([b[n][0] for b in inherited]), torch.cat([b[n][1] for b in inherited]))
                         for n in range(len(self.graph.nodes))]
                if sub_boxes is not None:  # a new input box: every layer again, within the parents' boxes
                    keep_through = -1
            if self.native is not None:
                # CROWN on every domain's ReLU inputs in one call to the C++ engine (its batched
                # subproblem query), split constraints clamped in; past the deadline it stops
                # adding rows and the boxes so far stand (sound)
                boxes = self.native.tighten(iset, given, signs, keep_through,
                                            seconds=self.deadline - time.monotonic())
            else:
                if given is None:
                    boxes = ibp(self.graph, iset.box, True)
                else:
                    boxes = given
                    if sub_boxes is not None:
                        boxes[0] = iset.box
                        boxes = ibp(self.graph, None, True, start=1, boxes=boxes)

                def crown_rows(start, spec, current, const):  # CROWN, or (past the deadline) the boxes kept
                    if time.monotonic() > self.deadline:
                        return torch.full(spec.shape[:2], -float("inf"))
                    return backward(self.graph, start, spec, current, iset, True, initial_const=const)

                boxes = tighten_intermediate(self.graph, boxes, iset, True, clamp, keep_through, crown_rows)
            if intermediate_iterations:
                boxes = optimize_intermediate(self.graph, iset, boxes, iterations=intermediate_iterations,
                                              lr=self.settings.lr, deadline=self.deadline, clamp=clamp)
        empty = torch.zeros(count, dtype=torch.bool)
        for lower, upper in boxes:
            empty |= (lower > upper).flatten(1).any(1) | torch.isnan(lower).flatten(1).any(1)
        proven = torch.ones(count, dtype=torch.bool)
        score = torch.full((count,), float("inf"))
        picks: list = [None] * count
        new_slopes: list = [None] * count
        new_boxes: list = [None] * count
        candidates = None
        live = (~empty).nonzero().flatten()
        if len(live):
            idx = live
            live_boxes = [(lo[idx], hi[idx]) for lo, hi in boxes]
            sub_set = InputSet(self.norm, iset.centre[idx], iset.eps[idx], (iset.box[0][idx], iset.box[1][idx]))
            chosen_targets = [targets[d] for d in idx.tolist()]
            spec = self.spec[torch.tensor(chosen_targets)]  # (L, R, C)
            warm = None
            if slopes is not None:
                warm = {i: torch.cat([slopes[d][i] for d in idx.tolist()]) for i in self.relus}
            result = optimize(self.graph, sub_set, spec, live_boxes, signs={k: s[idx] for k, s in signs.items()},
                              iterations=iterations, lr=self.settings.lr, deadline=self.deadline, slopes=warm)
            self.bounded += len(idx)
            proven[idx] = self.goal.proven(chosen_targets, result.lower)
            score[idx] = self.goal.score(chosen_targets, result.lower).float()
            # on the input, summed over the target's rows: the bound's minimiser is a free candidate
            coefficients = result.record[0].sum(1)
            if self.input_split:
                chosen = [(None, dim) for dim in branching.input_dimension(coefficients, sub_set.box)]
            else:
                chosen = branching.choose(branching.scores(result.record, live_boxes, self.relu_inputs))
            for j, d in enumerate(idx.tolist()):
                picks[d] = chosen[j] if chosen else None
                # copies, not views: a view would keep the whole batch's tensors alive in the queue
                new_slopes[d] = {i: result.slopes[i][j:j + 1].detach().clone() for i in self.relus}
                new_boxes[d] = [(lo[j:j + 1].clone(), hi[j:j + 1].clone()) for lo, hi in live_boxes]
            candidates = (self.minimiser(coefficients, sub_set), chosen_targets)
        return proven, score, picks, new_slopes, new_boxes, candidates

    def settle_leaf(self, d: _Domain) -> tuple[bool, object]:
        """A fully split domain that beta's gradient steps left unproven: multipliers from the exact
        LP of the domain (certify.verify.leaf), then the sound pass with them. (proven, counterexample
        from the LP's minimisers or None). l_inf only (an l2 ball is not an LP's box)."""
        if self.norm != "linf":
            return False, None
        box = d.box if d.box is not None else self.input_set.box
        spec = self.spec[d.target].unsqueeze(0)  # (1, R, C)
        answer = leaf.leaf_multipliers(self.graph, d.boxes, box, spec, d.splits)
        if answer is None:
            return False, None
        choices, points = answer
        found = [p for p in points if p is not None]
        if found and (counterexample := self.goal.confirm(torch.stack(found))) is not None:
            return False, counterexample
        signs = self.split_signs([d.splits])
        iset = InputSet.of_box(*box)
        for betas in choices:
            with torch.no_grad():
                lower = backward(self.graph, len(self.graph.nodes) - 1, spec, d.boxes, iset, True,
                                 split_terms=split_terms(betas, signs))
            self.bounded += 1
            if bool(self.goal.proven([d.target], lower)[0]):
                return True, None
        return False, None

    def split_signs(self, splits: list[tuple]) -> dict:
        """The split decisions of len(splits) domains as {ReLU input node k: (D, *shape) in
        {-1, 0, +1}} (+1: z >= 0, -1: z <= 0, 0: not split)."""
        signs: dict = {}
        for d, domain_splits in enumerate(splits):
            for k, flat, sign in domain_splits:
                if k not in signs:
                    signs[k] = torch.zeros(len(splits), self.graph.nodes[k].size)
                signs[k][d, flat] = sign
        return {k: s.reshape(len(splits), *self.graph.nodes[k].shape) for k, s in signs.items()}

    def minimiser(self, lam: torch.Tensor, iset: InputSet) -> torch.Tensor:
        if self.norm == "linf":
            return torch.where(lam > 0, iset.box[0], iset.box[1])
        direction = lam / lam.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (lam.dim() - 1))
        return iset.centre - iset.eps.view(-1, *[1] * (lam.dim() - 1)) * direction

    def _boxes(self, domains: list) -> list | None:
        return [d.box for d in domains] if self.input_split else None

    # ------------------------------------------------------------------ the search
    def run(self) -> Decision:
        started = time.monotonic()

        def done(status, counterexample=None, lower=-float("inf"), reason=""):
            return Decision(status, counterexample, time.monotonic() - started, self.bounded, lower, reason)

        goal = self.goal
        if (found := goal.opening_counterexample(before_search=False)) is not None:
            return done("falsified", found)
        targets = list(range(len(self.spec)))
        proven, score, picks, slopes, boxes, candidates = self.bound(
            targets, [()] * len(targets), None, self.settings.root_iterations,
            intermediate_iterations=self.settings.iterations)
        root = float(score.min())
        if bool(proven.all()):
            return done("verified", lower=root)
        # An attack before the search: most falsifiable inputs fall to it (alpha,beta-CROWN does the same).
        if (found := goal.opening_counterexample(before_search=True)) is not None \
                or (found := self.falsify(candidates)) is not None:
            return done("falsified", found, root)
        root_box = self.input_set.box if self.input_split else None
        queue: list[_Domain] = []
        for t in targets:
            if not proven[t]:
                heapq.heappush(queue, _Domain(float(score[t]), next(self.counter), t, (), root_box, slopes[t],
                                              picks[t], boxes[t]))
        # queued bytes per domain: slopes (float32 per ReLU neuron and target row), the input box,
        # two float32 per node value (its boxes), the split list and the object itself
        rows = self.spec.shape[1]
        per_domain = (sum(4 * rows * self.graph.nodes[i].size for i in self.relus)
                      + 8 * self.input_set.centre[0].numel() + sum(8 * node.size for node in self.graph.nodes) + 400)
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
                proven_l, _, _, _, _, cands = self.bound([d.target for d in leaves], [d.splits for d in leaves],
                                                         [d.slopes for d in leaves], 5 * self.settings.iterations,
                                                         self._boxes(leaves), [d.boxes for d in leaves],
                                                         keep_through=len(self.graph.nodes))
                if (found := self.falsify(cands)) is not None:
                    return done("falsified", found, root)
                for d in (d for d, ok in zip(leaves, proven_l.tolist()) if not ok):
                    settled, found = self.settle_leaf(d)
                    if found is not None:
                        return done("falsified", found, root)
                    if not settled:
                        return done("unknown", lower=root, reason="a fully split domain stayed unproven")
            children = [child for d in take if d.branch is not None for child in _children(d)]
            if not children:
                continue
            parents = [parent for parent, _, _ in children]
            # nothing at or before the earliest new split's node changed for any child
            keep = min((d.branch[0] for d in parents if d.branch[0] is not None), default=-1)
            if not self.settings.retighten and not self.input_split:
                keep = len(self.graph.nodes)
            proven_c, score_c, picks_c, slopes_c, boxes_c, cands = self.bound(
                [d.target for d in parents], [splits for _, splits, _ in children], [d.slopes for d in parents],
                self.settings.iterations, [box for _, _, box in children] if self.input_split else None,
                [d.boxes for d in parents], keep)
            if (found := self.falsify(cands)) is not None:
                return done("falsified", found, root)
            for j, (parent, splits, box) in enumerate(children):
                if proven_c[j]:
                    continue
                domain = _Domain(float(score_c[j]), next(self.counter), parent.target, splits, box, slopes_c[j],
                                 picks_c[j], boxes_c[j])
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
    settings = settings or SearchSettings()
    model64 = model64 if model64 is not None else float64_copy(model)
    goal = Robustness(model, model64, graph, x, int(label), eps, norm, domain, settings)
    return search(goal, graph, settings)


def search(goal, graph: Graph, settings: SearchSettings, deadline: float | None = None) -> Decision:
    """Branch and bound on a goal (Robustness, or a VNN-LIB property's cases: PropertyCases):
    "verified" when every target is proven on every leaf domain, "falsified" with the goal's
    counterexample, else "unknown". deadline: a time.monotonic() value (default: now + timeout)."""
    return _Search(goal, graph, settings, deadline).run()


def float64_copy(model):
    """A float64 copy of the model: the second execution a counterexample must fail in."""
    import copy

    return copy.deepcopy(model).double().eval()
