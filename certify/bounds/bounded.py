"""BoundedModel: sound bounds on a network's outputs over every input in an l_inf or l2 ball."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

from certify import _checks
from certify.bounds import float32, reference
from certify.bounds.graph import Graph, operator_list, trace
from certify.bounds.native import NativeEngine
from certify.bounds.reference import InputSet, down, margin_spec, to_f32_down, to_f32_up, up

__all__ = ["BoundedModel", "Bounds"]

METHODS = ("ibp", "crown", "crown-ibp", "alpha-crown")
NORMS = ("linf", "l2")
ENGINES = ("native", "torch")
INFERENCES = ("exact", "float32")


@dataclass(frozen=True)
class Bounds:
    """lower <= f(x') <= upper for every x' in the input set, elementwise: (B, num_outputs) each."""

    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def width(self) -> torch.Tensor:
        return self.upper - self.lower


class BoundedModel:
    """A traced copy of `model` (an nn.Module in eval mode) for bound propagation.

    input_shape: one input's shape, without the batch dimension.
    Supported operators (the table certify.bounds.graph.OPERATORS, which README.md shows with the
    methods per operator):
{operators}
    Others raise certify.bounds.UnsupportedModelError naming the operation and where it occurs.
    Smooth activations are relaxed by tangent and chord lines (certify.bounds.activations); branch
    and bound splits ReLUs (those of max-pooling and the clamps too) and, below 21 input
    dimensions, the input box, but not smooth activations; inference="float32" refuses them.

    Every method takes `sound=True` (default): bounds hold in exact arithmetic for the network as
    a real-valued function of its float32 parameters; `sound=False` gives plain float32 bounds.
    `inference="float32"` (bounds, margins, verify, radius) speaks of the model run in float32
    instead: the bounds then also hold for the values a float32 forward pass computes, in any
    summation order, with or without FMA (certify.bounds.float32 states the argument and what it
    assumes); `inference="exact"` (default) is the exact network.
    `domain=(lo, hi)` intersects an l_inf ball with the box [lo, hi] (e.g. (0, 1) for pixels).

    engine: "native" (the C++ engine: OpenBLAS GEMMs, OpenMP, CPU) or "torch" (the plain-PyTorch,
    differentiable twin in certify.bounds.reference: the tests' reference and the path for
    certified training). Both run the same algorithms with the same rounding allowances.
    The native engine copies the weights when the BoundedModel is made (build a new one after
    changing the model); the torch engine follows the model's Linear/Conv2d parameters, so they
    must stay float32 on the CPU.
    """

    def __init__(self, model: torch.nn.Module, input_shape, *, engine: str = "native", graph: Graph | None = None):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.input_shape = tuple(int(d) for d in input_shape)
        if isinstance(model, torch.nn.Module) and any(p.is_floating_point() and p.dtype != torch.float32
                                                      for p in model.parameters()):
            raise ValueError("BoundedModel needs a float32 model (its bounds are for the float32 weights); "
                             "convert with model.float()")
        # The torch engine follows the model's live parameters (gradients flow to them; the C++
        # engine copies the weights once, at construction).
        self.graph = graph if graph is not None else trace(model, self.input_shape, differentiable=engine == "torch")
        self.num_outputs = int(np.prod(self.graph.output.shape))
        self.engine = engine
        self._engine = NativeEngine(self.graph) if engine == "native" else reference.TorchEngine(self.graph)
        self._device_engines: dict = {}
        self._alpha = None  # the alpha-CROWN engine, made at first use
        self.model = model if isinstance(model, torch.nn.Module) else None  # decide() runs it on counterexamples

    def _engine_for(self, x: torch.Tensor, method: str | None = None):
        if method == "alpha-crown":  # slope optimisation runs on the differentiable twin, on the CPU
            if x.device.type != "cpu":
                raise ValueError("method='alpha-crown' runs on the CPU; move the inputs there")
            if self._alpha is None:
                from certify.verify.alpha import AlphaEngine

                self._alpha = AlphaEngine(self.graph, baseline=self._engine)
            return self._alpha
        return self._device_engine(x)

    def _device_engine(self, x: torch.Tensor):
        """The engine for x's device: this model's engine on the CPU; on a CUDA device the
        plain-PyTorch engine on a copy of the graph there, in GPU-sound arithmetic (TF32 off,
        convolutions as GEMMs: see reference.gpu_arithmetic)."""
        if x.device.type == "cpu":
            return self._engine
        if x.device.type != "cuda":
            raise ValueError(f"x is on {x.device}; the bound engines run on the CPU and on CUDA devices")
        if x.device not in self._device_engines:
            self._device_engines[x.device] = reference.TorchEngine(self.graph.to(x.device), gpu=True)
        return self._device_engines[x.device]

    # ------------------------------------------------------------------ checks
    def _input_set(self, x, eps, norm, domain, sound) -> InputSet:
        if isinstance(x, torch.Tensor):
            self._engine_for(x)  # the device check, before any work on the values
        x = _checks.input_tensor("x", x, self.input_shape, batched=True)  # float32 or float64, kept exact
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        eps = self._eps(eps, len(x)).to(x.device)
        if domain is not None:
            if norm != "linf":
                raise ValueError("domain applies to norm='linf' only")
            lo, hi = (float(v) for v in domain)
            if not lo <= hi:
                raise ValueError(f"domain must be (lo, hi) with lo <= hi, got {domain}")
            if bool(((x < lo) | (x > hi)).any()):
                raise ValueError(f"x lies outside the domain [{lo}, {hi}]")
            domain = (lo, hi)
        return InputSet.make(x, eps, norm, domain, sound)

    @staticmethod
    def _eps(eps, batch: int) -> torch.Tensor:
        """eps as float64 (the value asked for: the input set rounds it outward, never down)."""
        if isinstance(eps, numbers.Real) and not isinstance(eps, bool):
            eps = torch.full((batch,), float(eps), dtype=torch.float64)
        elif isinstance(eps, (torch.Tensor, np.ndarray)):
            eps = torch.as_tensor(eps).to(torch.float64).reshape(-1)
            if eps.numel() == 1:
                eps = eps.expand(batch).clone()
            if eps.numel() != batch:
                raise ValueError(f"eps must be a number or one value per input ({batch}), got {eps.numel()} values")
        else:
            raise TypeError(f"eps must be a number or a tensor of one value per input, got {type(eps).__name__}")
        if not bool(torch.isfinite(eps).all()) or bool((eps < 0).any()):
            raise ValueError("eps must be finite and >= 0")
        return eps

    @staticmethod
    def _inference(inference: str, sound: bool, grad: bool = False) -> bool:
        """True for float32 inference (checked: it needs sound bounds and gives no gradients)."""
        if inference not in INFERENCES:
            raise ValueError(f"inference must be one of {INFERENCES}, got {inference!r}")
        if inference == "float32" and not sound:
            raise ValueError("inference='float32' needs sound=True (its error bound adds to sound bounds)")
        if inference == "float32" and grad:
            raise ValueError("inference='float32' gives no gradients (use inference='exact' for training)")
        return inference == "float32"

    def _float32_error(self, input_set: InputSet) -> torch.Tensor:
        """(B, num_outputs) float64: the float32 forward pass's logits lie within this of the exact ones."""
        engine = self._engine_for(input_set.centre)
        graph = engine.graph if input_set.centre.device.type != "cpu" else self.graph
        return float32.output_error(graph, input_set)

    @staticmethod
    def _method(method: str) -> str:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        return method

    def _labels(self, labels, batch: int) -> torch.Tensor:
        labels = torch.as_tensor(labels).reshape(-1)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(f"labels must be integers, got {labels.dtype}")
        if labels.numel() != batch:
            raise ValueError(f"labels must have one entry per input ({batch}), got {labels.numel()}")
        if bool(((labels < 0) | (labels >= self.num_outputs)).any()):
            raise ValueError(f"labels must lie in [0, {self.num_outputs})")
        return labels.long()

    # ------------------------------------------------------------------ API
    def bounds(self, x, eps, norm: str = "linf", method: str = "crown", *, domain=None, sound: bool = True,
               grad: bool = False, inference: str = "exact") -> Bounds:
        """Bounds on the logits over the ball of radius eps (a number or one per input) around each input.

        grad=True (engine='torch' only) keeps the autograd graph: the bounds are differentiable in
        the model's Linear/Conv2d parameters, for certified training. inference='float32': bounds on
        the logits a float32 forward pass computes at the ball's float32 points (the exact bounds
        widened by the rounding-error bound of certify.bounds.float32)."""
        as_float32 = self._inference(inference, sound, grad)
        input_set = self._input_set(x, eps, norm, domain, sound)
        batch = len(input_set.centre)
        if self._method(method) == "ibp":  # the output's interval itself
            lower, upper = self._engine_for(input_set.centre).ibp_output_box(input_set, sound, grad)
            lower, upper = lower.reshape(batch, -1), upper.reshape(batch, -1)
        else:
            both = self._engine_for(input_set.centre, method).compute_bounds(input_set, method, sound, grad=grad)
            k = self.num_outputs
            lower, upper = both[:, :k], -both[:, k:]
        if as_float32:
            e = self._float32_error(input_set).to(lower.device) * (1 + 2.0**-50)
            inf = float("inf")
            lower = torch.nan_to_num(down((lower.double() - e).float()), nan=-inf, posinf=inf, neginf=-inf)
            upper = torch.nan_to_num(up((upper.double() + e).float()), nan=inf, posinf=inf, neginf=-inf)
        return Bounds(lower=lower, upper=upper)

    def margins(self, x, labels, eps, norm: str = "linf", method: str = "crown", *, domain=None,
                sound: bool = True, grad: bool = False, inference: str = "exact") -> torch.Tensor:
        """Lower bounds on logit[label] - logit[j] for every j != label: (B, num_outputs - 1).

        The margin matrix is folded into the back-substitution (for IBP: into the last Linear
        layer), which is tighter than subtracting logit bounds. grad: as in bounds().
        inference='float32': lower bounds on the margins of the logits a float32 forward pass
        computes at the ball's float32 points: the exact margin bound less e_label + e_j, the
        rounding-error bounds of the two logits (certify.bounds.float32)."""
        if self.num_outputs < 2:
            raise ValueError("margins need a model with at least 2 outputs (classes); use bounds() for one output")
        as_float32 = self._inference(inference, sound, grad)
        input_set = self._input_set(x, eps, norm, domain, sound)
        labels = self._labels(labels, len(input_set.centre)).to(input_set.centre.device)
        spec = margin_spec(labels, self.num_outputs)
        margins = self._engine_for(input_set.centre, method).compute_bounds(input_set, self._method(method), sound,
                                                                            spec=spec,
                                                                    grad=grad)
        if as_float32:
            margins = float32.float32_margins(margins, self._float32_error(input_set), labels)
        return margins

    def spec_bounds(self, lower, upper, spec, method: str = "crown", *, sound: bool = True) -> torch.Tensor:
        """Lower bounds on spec @ f(x) over the box lower <= x <= upper: (B, S), rounded outward.

        lower, upper: (B, *input_shape), lower <= upper; float64 values are enclosed outward.
        spec: (S, num_outputs) or (B, S, num_outputs) with float32-representable entries (a
        rounded coefficient would bound a different function; refused). Upper bounds on a row are
        minus the lower bounds on its negation. The box form of the input set, for VNN-LIB
        properties and per-coordinate boxes that are not balls."""
        lo = _checks.input_tensor("lower", lower, self.input_shape, batched=True).double()
        hi = _checks.input_tensor("upper", upper, self.input_shape, batched=True).double()
        if lo.shape != hi.shape:
            raise ValueError(f"lower and upper must have the same shape, got {tuple(lo.shape)} and {tuple(hi.shape)}")
        if bool((lo > hi).any()):
            raise ValueError("the box is empty: some lower bound exceeds its upper bound")
        spec = torch.as_tensor(spec, dtype=torch.float64)
        if spec.dim() == 2:
            spec = spec.unsqueeze(0).expand(len(lo), -1, -1)
        if spec.dim() != 3 or spec.shape[0] != len(lo) or spec.shape[2] != self.num_outputs:
            raise ValueError(f"spec must be (S, {self.num_outputs}) or ({len(lo)}, S, {self.num_outputs}), "
                             f"got {tuple(spec.shape)}")
        if not bool(torch.isfinite(spec).all()) or bool((spec.float().double() != spec).any()):
            raise ValueError("spec entries must be finite and exactly representable in float32")
        if sound:
            box = (to_f32_down(lo), to_f32_up(hi))
        else:
            box = (lo.float(), hi.float())
        input_set = InputSet.of_box(*box)
        centre = input_set.centre
        return self._engine_for(centre, method).compute_bounds(input_set, self._method(method), sound,
                                                       spec=spec.float().to(centre.device))

    def verify(self, x, labels, eps, norm: str = "linf", method: str = "crown", *, domain=None,
               sound: bool = True, inference: str = "exact") -> torch.Tensor:
        """True where every margin's lower bound is > 0: the label is certified on the whole ball.

        inference='exact': the exact network (real arithmetic on the float32 weights) gives the label
        the largest logit at every point of the ball. inference='float32': a float32 forward pass
        (any summation order, with or without FMA) returns the label as its argmax at every float32
        point of the ball; see certify.bounds.float32 for the evaluations this covers."""
        return (self.margins(x, labels, eps, norm, method, domain=domain, sound=sound, inference=inference) > 0
                ).all(dim=1)

    def decide(self, x, labels, eps, norm: str = "linf", *, domain=None, timeout: float = 30.0,
               settings=None) -> list:
        """Complete verification: per input, a certify.verify.Decision whose status is "verified"
        (a sound proof that the exact network keeps the label on the whole ball), "falsified" (with
        a counterexample in the ball that the model misclassifies in float32 and in float64) or
        "unknown" (timeout per input spent), by attack, alpha-CROWN and branch and bound
        (certify.verify.bab). settings: a certify.verify.SearchSettings (its timeout is replaced by
        `timeout`)."""
        from dataclasses import replace

        from certify.verify.bab import SearchSettings, decide_one, float64_copy

        if self.model is None:
            raise ValueError("decide() runs the model on counterexamples: make the BoundedModel from the model")
        x = _checks.input_tensor("x", x, self.input_shape, batched=True)
        if x.device.type != "cpu":
            raise ValueError("decide() runs on the CPU; move the inputs there")
        if bool((x.float().double() != x.double()).any()):  # the search runs the model on float32 points
            raise ValueError("decide() takes inputs float32 holds exactly (the ball around a rounded input is "
                             "another ball): pass x.float() and decide about that")
        labels = self._labels(labels, len(x))
        eps = self._eps(eps, len(x))
        self._input_set(x, eps, norm, domain, True)  # the norm, domain and eps checks of every bound
        settings = replace(settings or SearchSettings(), timeout=_checks.positive_scale("timeout", timeout))
        model64 = float64_copy(self.model)  # made per call: the model's weights may have changed since
        return [decide_one(self.model, self.graph, x[i], int(labels[i]), float(eps[i]), norm, domain, settings,
                           model64=model64) for i in range(len(x))]

    def radius(self, x, labels, norm: str = "linf", method: str = "crown", *, tol: float = 1e-3,
               max_eps: float = 1.0, domain=None, sound: bool = True, inference: str = "exact") -> torch.Tensor:
        """The largest certified eps per input, by bisection on [0, max_eps].

        The returned radius r is certified: verify(x, labels, r) is True (or r = 0 when even the
        point itself is not). Either verify at r + tol is False, or r = max_eps; r is within tol of
        the largest eps that `verify` certifies when certification is monotone in eps (it is for
        these methods up to rounding). A float64 tensor (B,): the bisection runs in float64, so r
        is exactly the eps that was verified and r <= max_eps. inference: as in verify()."""
        tol = _checks.positive_scale("tol", tol)
        max_eps = _checks.positive_scale("max_eps", max_eps)
        x = _checks.input_tensor("x", x, self.input_shape, batched=True)
        labels = self._labels(labels, len(x))

        def certified(eps: torch.Tensor) -> torch.Tensor:
            return self.verify(x, labels, eps, norm, method, domain=domain, sound=sound, inference=inference)

        # float64 throughout: every eps tried is a float64 value that verify() takes as it is (the
        # input set rounds it outward), so the radius returned is exactly an eps that was verified,
        # and never exceeds max_eps (a float32 max_eps would: float32(0.1) > 0.1).
        lo = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        hi = torch.full((len(x),), max_eps, dtype=torch.float64, device=x.device)
        at_max = certified(hi)
        lo[at_max] = max_eps
        ok_at_zero = certified(lo)
        open_ = ~at_max & ok_at_zero
        while bool(open_.any()) and bool(((hi - lo)[open_] > tol).any()):
            mid = (lo + hi) / 2
            # A tol below the spacing of float64 numbers near the radius: mid can no longer move.
            open_ = open_ & (mid > lo) & (mid < hi)
            if not bool(open_.any()):
                break
            ok = certified(torch.where(open_, mid, lo))
            lo = torch.where(open_ & ok, mid, lo)
            hi = torch.where(open_ & ~ok, mid, hi)
            open_ = open_ & ((hi - lo) > tol)
        return torch.where(ok_at_zero | at_max, lo, torch.zeros_like(lo))


BoundedModel.__doc__ = BoundedModel.__doc__.replace("{operators}", operator_list())
