"""Which ReLU a branch-and-bound domain splits next: a pure function of the domain's bounds.

Score (BaBSR's intercept score, Bunel et al., JMLR 2020, applied to either sign of the coefficient):
an unstable neuron with pre-activation bounds l < 0 < u is relaxed by the triangle whose largest
vertical gap to relu is -l u / (u - l); the bound being optimised weighs that neuron's output by
its coefficient lambda, so splitting it can raise the bound by up to |lambda| (-l u) / (u - l).
The neuron with the largest score is split; ties go to the lowest node, then the lowest index.
Neurons already split (stable in the domain's boxes, since splits clamp them) never score.
"""

from __future__ import annotations

import torch

__all__ = ["scores", "choose", "input_dimension"]


def scores(coefficients: dict, boxes: list, relu_inputs: dict) -> dict:
    """{ReLU input node k: (D, size) scores} from the coefficients on each ReLU's output
    (`coefficients[relu node]`, (D, R, *shape): the R rows of a domain's target) and the domain
    boxes of its input node k.
    relu_inputs: ReLU node -> its input node."""
    out = {}
    for relu, k in relu_inputs.items():
        lower, upper = (b.flatten(1) for b in boxes[k])
        lam = coefficients.get(relu)
        unstable = (lower < 0) & (upper > 0)
        gap = torch.where(unstable, -lower * upper / torch.where(unstable, upper - lower, 1.0), 0.0)
        # the target's rows together (one row for a robustness margin)
        weight = lam.abs().sum(1).flatten(1) if lam is not None else torch.ones_like(gap)
        # + a tiny multiple of the gap: neurons the bound does not weigh still get split eventually
        out[k] = torch.where(unstable, weight * gap + 1e-9 * gap, -1.0)
    return out


def choose(score: dict) -> list[tuple[int, int] | None]:
    """Per domain, (node k, flat index) of the neuron to split, or None when no neuron is unstable."""
    nodes = sorted(score)
    if not nodes:
        return []
    stacked = torch.cat([score[k] for k in nodes], dim=1)  # (D, total)
    sizes = [score[k].shape[1] for k in nodes]
    best, where = stacked.max(dim=1)
    picks = []
    for value, flat in zip(best.tolist(), where.tolist()):
        if value < 0:
            picks.append(None)
            continue
        for k, size in zip(nodes, sizes):
            if flat < size:
                picks.append((k, flat))
                break
            flat -= size
    return picks


def input_dimension(coefficients: torch.Tensor, box) -> list[int]:
    """Input splitting: per domain, the input dimension whose width weighs most in the linear
    lower bound, |lambda_i| (u_i - l_i) (the bound's loss from that dimension's spread), with the
    plain width breaking ties (a dimension the bound ignores still gets split eventually).
    coefficients: (D, *input_shape) on the input; box: ((D, *shape), (D, *shape))."""
    width = (box[1] - box[0]).flatten(1)
    score = coefficients.flatten(1).abs() * width + 1e-9 * width
    return score.argmax(dim=1).tolist()
