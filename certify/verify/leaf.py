"""Fully split domains: exact multipliers from a linear program, a sound bound from them.

When every ReLU of a branch-and-bound domain is stable (split, or stable from its bounds), the
network is affine on the domain, and the domain is the input box cut by the split constraints
s_j z_j(x) >= 0, each z_j affine in x. The least value of a spec row over the domain is then a
linear program, and by LP duality its optimum equals max over beta >= 0 of
min over the box of spec . f(x) - sum_j beta_j s_j z_j(x): beta-CROWN's bound at its best
multipliers (Wang et al. 2021, Thm. 3.1). Projected gradient steps on beta approach that optimum
slowly (the function is piecewise linear); HiGHS (scipy.optimize.linprog) gives it at once.

Optimise unsoundly, certify soundly: the LP runs in plain float64 on affine maps read off the
unsound back-substitution; its duals only become the multipliers beta of the sound pass, which
accounts for its own rounding like every bound in certify. An infeasible LP (the split
constraints exclude the whole box) gives a Farkas certificate from the phase-one LP
max {t : s_j z_j(x) >= t, x in the box}: its duals y satisfy sum_j y_j s_j z_j(x) <= t* < 0 on the
box, so beta = lambda y raises the bound by at least lambda (-t*) and a large enough lambda proves
the domain empty of counterexamples. The LP's minimiser is a counterexample candidate.
"""

from __future__ import annotations

import numpy as np
import torch

from certify.bounds.graph import Graph
from certify.bounds.reference import InputSet, backward

__all__ = ["affine_maps", "leaf_multipliers"]

SCALES = (1.0, 10.0, 1e2, 1e3, 1e4, 1e6)  # multiples of 1/(-t*) tried for a Farkas certificate


def affine_maps(graph: Graph, boxes: list, start: int, spec: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(G, h), float64: spec . value(start) = G x + h for x in the domain, where every ReLU is stable
    in `boxes` (so the back-substitution's relaxations are exact). spec: (1, K, *shape of start)."""
    record: dict = {}
    zero = torch.zeros(boxes[0][0].shape)
    at_zero = InputSet("linf", zero, torch.zeros(1), (zero, zero))  # concretised at x = 0: the constant
    with torch.no_grad():
        constant = backward(graph, start, spec.float(), boxes, at_zero, sound=False, record=record)
    return record[0].flatten(2)[0].double().numpy(), constant[0].double().numpy()


def leaf_multipliers(graph: Graph, boxes: list, box: tuple, spec: torch.Tensor, splits: tuple):
    """For one fully split domain: (betas, points). betas: split node k -> (1, K, *shape of k), the
    multipliers for the K rows of spec ((1, K, classes)) that the LP's duals give (or a Farkas
    certificate, scaled by each of SCALES in turn: a list of such dicts then); points: (K, *input
    shape) float32 LP minimisers (None where the LP found none). box: the domain's input box.

    Returns None when scipy is missing or the LP solver fails (the domain stays unproven)."""
    try:
        from scipy.optimize import linprog
    except ImportError:  # pragma: no cover - scipy is a dependency of the tests, optional at run time
        return None
    last = len(graph.nodes) - 1
    lower, upper = (b.double().flatten().numpy() for b in box)
    bounds = list(zip(lower.tolist(), upper.tolist()))
    objective, _ = affine_maps(graph, boxes, last, spec)
    rows_a, rows_b, where = [], [], []
    by_node: dict = {}
    for k, flat, sign in splits:
        by_node.setdefault(k, []).append((flat, sign))
    for k, entries in by_node.items():
        node = graph.nodes[k]
        unit = torch.zeros(1, len(entries), node.size)
        for r, (flat, _) in enumerate(entries):
            unit[0, r, flat] = 1.0
        g, h = affine_maps(graph, boxes, k, unit.reshape(1, len(entries), *node.shape))
        for r, (flat, sign) in enumerate(entries):  # s z >= 0  <=>  -s g x <= s h
            rows_a.append(-sign * g[r])
            rows_b.append(sign * h[r])
            where.append((k, flat))
    # no split at all (every ReLU stable on the whole set, or none): the LP is the box alone
    a_ub = np.array(rows_a).reshape(len(rows_a), -1) if where else None
    b_ub = np.array(rows_b) if where else None
    count = spec.shape[1]
    duals = np.zeros((count, len(where)))
    points: list = [None] * count
    for r in range(count):
        result = linprog(objective[r], A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if result.status == 0:
            duals[r] = -np.asarray(result.ineqlin.marginals) if len(where) else 0.0
            points[r] = torch.from_numpy(np.asarray(result.x)).float().reshape(box[0].shape[1:])
        elif result.status == 2 and len(where):  # infeasible: phase one for a Farkas certificate
            ray = _farkas(a_ub, b_ub, bounds)
            if ray is None:
                return None
            return [_as_betas(graph, where, np.tile(ray * scale, (count, 1))) for scale in SCALES], points
        else:
            return None
    return [_as_betas(graph, where, np.clip(duals, 0, None))], points


def _farkas(a_ub: np.ndarray, b_ub: np.ndarray, bounds: list) -> np.ndarray | None:
    """Duals y >= 0 of max {t : a_ub x + t <= b_ub, x in bounds, t <= 1}, scaled by 1 / (-t*):
    then sum_j y_j (b_j - a_j x) <= -1 on the box, for t* < 0 (the constraints infeasible)."""
    from scipy.optimize import linprog

    n = a_ub.shape[1]
    c = np.zeros(n + 1)
    c[-1] = -1.0  # maximise t
    result = linprog(c, A_ub=np.hstack([a_ub, np.ones((len(a_ub), 1))]), b_ub=b_ub,
                     bounds=bounds + [(None, 1.0)], method="highs")
    if result.status != 0 or not result.x[-1] < 0:
        return None
    return np.clip(-np.asarray(result.ineqlin.marginals), 0, None) / -result.x[-1]


def _as_betas(graph: Graph, where: list, values: np.ndarray) -> dict:
    """values (K, splits) -> {node k: (1, K, *shape)} with each split's multiplier at its neuron."""
    betas: dict = {}
    for column, (k, flat) in enumerate(where):
        if k not in betas:
            betas[k] = torch.zeros(1, values.shape[0], graph.nodes[k].size)
        betas[k][0, :, flat] = torch.from_numpy(values[:, column]).float()
    return {k: b.reshape(1, values.shape[0], *graph.nodes[k].shape) for k, b in betas.items()}
