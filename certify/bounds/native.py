"""The C++ bound engine (certify._core.BoundNetwork) behind the same interface as reference.py."""

from __future__ import annotations

import torch

from certify._native import core
from certify.bounds.graph import Activation, Add, Conv2d, ElementwiseAffine, Gather, Graph, Linear, ReLU, Reshape
from certify.bounds.reference import InputSet, identity_spec

__all__ = ["NativeEngine"]

METHOD_CODES = {"ibp": 0, "crown-ibp": 1, "crown": 2}
# The form of CROWN's coefficient rows on convolutional maps (backward.h, struct Rows): "auto"
# applies the engine's cost rule (windows of a neuron's receptive field where they cover at most
# half of the map); "dense" keeps every row dense, "windowed" makes rows windows wherever they
# cover at most 4x the map (hanging over its edges): for tests and benchmarks. Every form gives
# the same bounds up to float rounding, each sound.
ROWS_FORMS = {"auto": 0, "dense": 1, "windowed": 2}
NORM_CODES = {"linf": 0, "l2": 1}
# csrc/bounds/activations.h, enum Smooth
ACTIVATION_CODES = {"sigmoid": 0, "tanh": 1, "softplus": 2, "elu": 3, "silu": 4, "gelu": 5}


def _np(t: torch.Tensor):
    return t.detach().to(torch.float32).contiguous().numpy()


class NativeEngine:
    """Holds the graph in C++ once; each call runs one query there with the GIL released."""

    def __init__(self, graph: Graph, rows_form: str = "auto"):
        if rows_form not in ROWS_FORMS:
            raise ValueError(f"rows_form must be one of {sorted(ROWS_FORMS)}, not {rows_form!r}")
        self.graph = graph
        self.rows_form = rows_form
        net = core.BoundNetwork()
        for node in graph.nodes:
            layer = node.layer
            src = node.inputs[0] if node.inputs else None
            if src is None:
                net.add_input(node.size)
            elif isinstance(layer, Linear):
                net.add_linear(src, _np(layer.weight), _np(layer.bias))
            elif isinstance(layer, Conv2d):
                net.add_conv(src, _np(layer.weight), _np(layer.bias), graph.nodes[src].shape, node.shape,
                             layer.stride, layer.padding, layer.dilation, layer.groups)
            elif isinstance(layer, ReLU):
                net.add_relu(src)
            elif isinstance(layer, Reshape):
                net.add_reshape(src)
            elif isinstance(layer, ElementwiseAffine):
                full = [_np(v.expand(node.shape).reshape(-1)) for v in (layer.s_lo, layer.s_hi, layer.t_lo, layer.t_hi)]
                net.add_affine(src, *full)
            elif isinstance(layer, Add):
                net.add_add(node.inputs[0], node.inputs[1])
            elif isinstance(layer, Gather):
                net.add_gather(src, layer.index.to(torch.int64).contiguous().numpy())
            elif isinstance(layer, Activation):
                net.add_activation(src, ACTIVATION_CODES[layer.name], float(layer.alpha), float(layer.lower_margin))
            else:  # pragma: no cover - graph.py produces only the layers above
                raise TypeError(f"the native engine has no rule for {type(layer).__name__}")
            if len(node.shape) == 3:
                net.set_node_map(net.num_layers - 1, *node.shape)
        self.net = net

    @staticmethod
    def _no_grad(grad: bool) -> None:
        if grad:
            raise ValueError("grad=True needs engine='torch' (the C++ engine computes no gradients)")

    def compute_bounds(self, input_set: InputSet, method: str, sound: bool = True,
                       spec: torch.Tensor | None = None, grad: bool = False) -> torch.Tensor:
        self._no_grad(grad)
        batch = input_set.centre.shape[0]
        if spec is None:
            spec = identity_spec(batch, self.graph.output.shape)
        out = self.net.compute(
            _np(input_set.centre.reshape(batch, -1)), _np(input_set.eps), _np(input_set.box[0].reshape(batch, -1)),
            _np(input_set.box[1].reshape(batch, -1)), NORM_CODES[input_set.norm], METHOD_CODES[method], sound,
            _np(spec.reshape(batch, spec.shape[1], -1)), ROWS_FORMS[self.rows_form],
        )
        return torch.from_numpy(out)

    def tighten(self, input_set: InputSet, boxes: list | None = None, signs: dict | None = None,
                keep_through: int = -1, seconds: float = float("inf"), sound: bool = True) -> list:
        """Intermediate bounds of a batch of subproblems in one call (branch and bound's domains):
        input_set holds each one's input set; boxes (optional) each one's starting (lower, upper)
        of every graph node, supersets on it (its parent's); signs {node: (B, *shape) of -1/0/+1}
        its ReLU split constraints. Nodes at or before keep_through keep their boxes (constraints
        clamped in); after it, IBP then CROWN on every ReLU input, each box the tighter of old and
        new. Past `seconds` no more CROWN rows are computed (the boxes so far are sound). Returns
        [(lower, upper)] per node, in the nodes' shapes."""
        batch = input_set.centre.shape[0]
        nodes = self.graph.nodes

        def check(what, t, k):
            if not 0 <= k < len(nodes) or tuple(t.shape) != (batch, *nodes[k].shape):
                raise ValueError(f"{what} of node {k} must have shape (batch, *node shape), got {tuple(t.shape)}")

        flat = None
        if boxes is not None:
            if len(boxes) != len(nodes):
                raise ValueError(f"boxes must hold one node box per graph node ({len(nodes)}), got {len(boxes)}")
            for k, (lo, hi) in enumerate(boxes):
                check("the node box", lo, k)
                check("the node box", hi, k)
                # a NaN bound would make a domain look empty (proven) downstream: never taken in
                if bool(torch.isnan(lo).any()) or bool(torch.isnan(hi).any()):
                    raise ValueError(f"the node box of node {k} contains NaN")
            flat = [(_np(lo.reshape(batch, -1)), _np(hi.reshape(batch, -1))) for lo, hi in boxes]
        splits = None
        if signs:
            for k, s in signs.items():
                check("the splits", s, int(k))
                if not bool(((s == -1) | (s == 0) | (s == 1)).all()):
                    raise ValueError(f"the splits of node {k} must be -1, 0 or +1")
            splits = {int(k): s.detach().reshape(batch, -1).to(torch.int8).contiguous().numpy() for k, s in signs.items()}
        if not (keep_through >= -1 and seconds == seconds):  # NaN compares unequal to itself
            raise ValueError(f"keep_through must be >= -1 and seconds a number, got {keep_through}, {seconds}")
        out = self.net.tighten(
            _np(input_set.centre.reshape(batch, -1)), _np(input_set.eps), _np(input_set.box[0].reshape(batch, -1)),
            _np(input_set.box[1].reshape(batch, -1)), NORM_CODES[input_set.norm], sound, flat, splits,
            min(int(keep_through), len(nodes)), min(float(seconds), 1e300), ROWS_FORMS[self.rows_form],
        )
        return [(torch.from_numpy(lo).view(batch, *node.shape), torch.from_numpy(hi).view(batch, *node.shape))
                for (lo, hi), node in zip(out, self.graph.nodes)]

    def ibp_output_box(self, input_set: InputSet, sound: bool = True,
                       grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        self._no_grad(grad)
        batch = input_set.centre.shape[0]
        lower, upper = self.net.ibp_output_box(_np(input_set.box[0].reshape(batch, -1)),
                                               _np(input_set.box[1].reshape(batch, -1)), sound)
        return torch.from_numpy(lower), torch.from_numpy(upper)
