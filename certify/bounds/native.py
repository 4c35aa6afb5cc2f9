"""The C++ bound engine (certify._core.BoundNetwork) behind the same interface as reference.py."""

from __future__ import annotations

import torch

from certify._native import core
from certify.bounds.graph import Add, Conv2d, ElementwiseAffine, Graph, Linear, ReLU, Reshape
from certify.bounds.reference import InputSet, identity_spec

__all__ = ["NativeEngine"]

METHOD_CODES = {"ibp": 0, "crown-ibp": 1, "crown": 2}
# The form of CROWN's coefficient rows on convolutional maps (engine.cpp, struct Rows): "auto"
# applies the engine's cost rule (windows of a neuron's receptive field where they cover at most
# half of the map); "dense" and "windowed" force one form, for tests and benchmarks. Every form
# gives the same bounds up to float rounding, each sound.
ROWS_FORMS = {"auto": 0, "dense": 1, "windowed": 2}
NORM_CODES = {"linf": 0, "l2": 1}


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

    def ibp_output_box(self, input_set: InputSet, sound: bool = True,
                       grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        self._no_grad(grad)
        batch = input_set.centre.shape[0]
        lower, upper = self.net.ibp_output_box(_np(input_set.box[0].reshape(batch, -1)),
                                               _np(input_set.box[1].reshape(batch, -1)), sound)
        return torch.from_numpy(lower), torch.from_numpy(upper)
