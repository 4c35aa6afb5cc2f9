"""Float32 inference as deployed: a rigorous bound on the rounding error of the model's own float32
forward pass, per neuron, so that a certificate can speak of the float32 argmax and not only of the
exact network.

The exact bounds (reference.py, the C++ engine) hold for the *exact network*: the real-valued
function the layers compute in exact arithmetic on the stored float32 weights. A model run in
float32 computes something slightly different; where two logits are within rounding of each other
its argmax can differ from the exact network's. This module bounds the difference.

Claim. Let x' be any float32 input in the input set, y_k the exact value of neuron k of the graph at
x', and ŷ_k the value a float32 forward pass computes for it. Then |ŷ_k - y_k| <= e_k, with e_k from
`error_bounds`, for every forward pass that evaluates

  - Linear and Conv2d layers as sums of the n products w_i x_i and the bias (n + 1 terms) in float32,
    in any order and grouping (blocked GEMM, im2col, direct convolution, vectorised partial sums),
    each product rounded or fused into the following addition (FMA), the bias added first or last;
  - batch norm (eval), input normalisation by constants and average pooling elementwise in float32,
    with float32 constants computed from the stored parameters by a few correctly rounded operations
    (batch norm: alpha = weight / sqrt(running_var + eps), beta = bias - mean * alpha, then
    x * alpha + beta, with or without FMA; or the unfused ((x - mean) / sqrt(var + eps)) * weight + bias;
    normalisation: x - c, x / c or x * (1 / c), x * c, x + c with c rounded to float32 first or not;
    average pooling: a float32 sum of the k*k window, then divided by (or multiplied by 1/) k*k);
  - ReLU, flatten and residual additions as such (ReLU exactly, an addition rounded once);
  - the operations graph.py writes with ReLUs, Gathers and affine layers (max-pooling, max / min,
    clamps, LeakyReLU, hard sigmoid, slicing, padding, concatenation, transposed convolutions) as
    torch runs them: exactly (selections, copies, comparisons) or with at most the roundings the
    rules below allow for their parts (LeakyReLU's product, hard sigmoid's (x + 3) / 6, a transposed
    convolution's sums of products). The model's value is then the graph's exact function of the
    model's own float32 intermediate values, and every rule below bounds the propagation of input
    errors through its layer (|s| e, e_a + e_b, e through ReLU and Gather), so the bounds hold for it.
    Smooth activations (sigmoid, tanh, ...) are not covered: torch's float32 versions have no
    documented error bound, and inference="float32" refuses them;
  - in IEEE float32 with round-to-nearest, with or without flushing subnormal results to zero and
    treating subnormal inputs as zero.

Not covered: Winograd or FFT convolution (their rounding is not that of a sum of products: torch's
CPU float32 convolutions go to oneDNN's direct algorithm or im2col + GEMM; the NNPACK backend,
which torch can pick for batches of 16 and more when oneDNN is missing or disabled, can choose
Winograd: torch.backends.nnpack.set_flags(False) rules it out; on GPUs cuDNN can choose them), TF32,
bfloat16 or other reduced-precision float32 matmul modes (torch.backends.cuda.matmul.allow_tf32,
torch.set_float32_matmul_precision other than "highest", oneDNN's fp32 math modes), and compilers'
fast-math rewrites. Nothing else about the order of operations is assumed.

Argument (u = 2^-24, gamma_n = n u / (1 - n u); Higham, Accuracy and Stability of Numerical
Algorithms, 2nd ed., Sec. 3.1 and Lemma 3.3: a sum of n products in any order, with or without FMA,
is within gamma_n sum |w_i| |x_i| of the exact sum). Write l_k <= y_k <= u_k for the sound interval
bounds of the exact values over the input set (IBP boxes from the twin: they only scale the gamma
terms, which are tiny) and m_k = max(|l_k|, |u_k|) + e_k, which bounds |ŷ_k|.

  - Input: ŷ = x' exactly, e = 0.
  - Affine y = W x + b with n inputs (Linear; Conv2d with n = C_in / groups * kh * kw, zero padding
    exact): ŷ = fl(W x̂ + b) with |x̂ - x| <= e, so
        |ŷ - y| <= |W| e + gamma_{n+1} (|W| m + |b|)
    (the bias is the (n+1)-th term; added separately after the sum it costs one more rounding, which
    (1 + u)(1 + theta_n) = 1 + theta_{n+1} absorbs).
  - ReLU is 1-Lipschitz and computed exactly: e passes through; where u_k + e_k < 0 both the exact and
    the float32 value are 0 and e = 0.
  - Reshape: unchanged.
  - ElementwiseAffine y = s x + t (s, t the real constants the graph encloses in [s_lo, s_hi] and
    [t_lo, t_hi]):  |ŷ - y| <= |s| e + gamma_16 (|s| m + T), T = a bound on the terms the float32
    shift is made of (batch norm: |bias| + |mean * alpha|, which can cancel in t; else |t|). The
    constant 16 is twice the count for the longest evaluation above: batch norm's alpha takes
    4 roundings (eps to float32, the addition, the square root, the division; times weight),
    beta = bias - mean * alpha 2 more (relative to T), and x * alpha + beta 2 more: within gamma_8;
    the unfused form takes 7. Normalisation takes at most 3 (the constant to float32, its reciprocal,
    the operation), average pooling's division 2.
  - Add: ŷ = fl(â + b̂), |ŷ - y| <= e_a + e_b + u (m_a + m_b).
  - Subnormals: a flushed input is an input error of at most 2^-126 (added to e where it enters an
    affine layer) and a flushed result an error of at most 2^-126 per operation ((n + 2) 2^-126 per
    affine output); gradual underflow is within that too (Higham's eta = 2^-150 per product).
  - Overflow: the rounding model needs finite results. Where the magnitudes |W| m + |b| (or m) reach
    2^126 a float32 value could overflow; e is then infinite (nothing is verified there).

The e_k are computed in float64 from float32 data: every quantity above is a sum of non-negative
terms, which float64 evaluates within relative gamma64_n < 2^-30 for any n below 2^22; each layer's
result is multiplied by SAFETY = 1 + 2^-20, so the computed e_k is at least the exact expression of
the (already upper) inputs, and by induction at least the true error.

Decision. Torch's argmax returns the first index of the largest float32 logit, so the float32 forward
pass returns the label when ŷ_label > ŷ_j for every j != label (strict for every j, which is
conservative for j above the label). With margin lower bounds M_j <= y_label - y_j from the exact
engines, ŷ_label - ŷ_j >= M_j - e_label - e_j; `float32_margins` returns that, rounded down, and
verified for float32 inference means all of them are > 0.
"""

from __future__ import annotations

import contextlib

import torch

from certify.bounds import reference
from certify.bounds.graph import Activation, Add, Conv2d, ElementwiseAffine, Gather, Graph, Input, Linear, ReLU, Reshape
from certify.bounds.reference import InputSet, abs_max, to_f32_down

__all__ = ["error_bounds", "output_error", "float32_margins", "UNIT_ROUNDOFF", "AFFINE_OPS", "SAFETY"]

UNIT_ROUNDOFF = 2.0**-24
TINY = 2.0**-126  # the smallest normal float32: what a flushed subnormal can lose
OVERFLOW = 2.0**126  # magnitudes from here on could overflow float32 (max ~2^128) somewhere in a sum
AFFINE_OPS = 16  # gamma_16 for an elementwise affine layer (see the module docstring)
SAFETY = 1 + 2.0**-20  # per layer: covers the float64 evaluation of the bounds themselves


def gamma(n: int) -> float:
    if n * UNIT_ROUNDOFF >= 0.5:
        return float("inf")
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def _finish(e: torch.Tensor, magnitude: torch.Tensor, n_ops: int) -> torch.Tensor:
    """e times SAFETY; infinite where the float32 evaluation could overflow or the bound is not finite."""
    e = e * SAFETY
    risky = magnitude * (1 + gamma(n_ops)) * SAFETY >= OVERFLOW
    e = torch.where(risky, torch.full_like(e, float("inf")), e)
    return torch.nan_to_num(e, nan=float("inf"), posinf=float("inf"))


def _f64(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device=like.device, dtype=torch.float64)


def error_bounds(graph: Graph, input_set: InputSet | None = None, boxes: list | None = None) -> list[torch.Tensor]:
    """e_k for every node k: (B, *shape) float64 tensors with |float32 value - exact value| <= e_k at
    every float32 input of the set (see the module docstring for the evaluations covered).

    boxes: sound bounds on every node's exact value over the set (reference.ibp's); computed from
    `input_set` with the twin's IBP when not given."""
    with torch.no_grad():
        if boxes is None:
            if input_set is None:
                raise ValueError("error_bounds needs the input set or the boxes")
            arithmetic = reference.gpu_arithmetic if input_set.box[0].is_cuda else contextlib.nullcontext
            with arithmetic():
                boxes = reference.ibp(graph, input_set.box, sound=True)
        return _propagate(graph, boxes)


def _propagate(graph: Graph, boxes: list) -> list[torch.Tensor]:
    errors: list[torch.Tensor] = []
    mags: list[torch.Tensor] = []  # m_k = max(|l_k|, |u_k|) + e_k, a bound on |float32 value|

    def keep(e: torch.Tensor, k: int) -> None:
        errors.append(e)
        mags.append(abs_max(boxes[k]).double() + e)

    for k, node in enumerate(graph.nodes):
        layer = node.layer
        if isinstance(layer, Input):
            keep(torch.zeros_like(boxes[0][0], dtype=torch.float64), k)
            continue
        src = node.inputs[0]
        batch = errors[src].shape[0]
        if isinstance(layer, Linear):
            e_in = errors[src].reshape(batch, -1) + TINY
            m_in = mags[src].reshape(batch, -1)
            w = _f64(layer.weight, e_in).abs()
            b = _f64(layer.bias, e_in).abs()
            n = w.shape[1]
            magnitude = m_in @ w.T + b
            e = e_in @ w.T + gamma(n + 1) * magnitude + (n + 2) * TINY
            keep(_finish(e, magnitude, n + 1), k)
        elif isinstance(layer, Conv2d):
            e_in = errors[src] + TINY
            w = _f64(layer.weight, e_in).abs()
            b = _f64(layer.bias, e_in).abs().view(-1, 1, 1)
            n = w.shape[1] * w.shape[2] * w.shape[3]
            magnitude = reference._conv(layer, mags[src], w) + b
            e = reference._conv(layer, e_in, w) + gamma(n + 1) * magnitude + (n + 2) * TINY
            keep(_finish(e, magnitude, n + 1), k)
        elif isinstance(layer, ReLU):
            upper = boxes[src][1].double()
            e_in = errors[src]
            # Exact comparison: e < -u means the float32 value is < 0 too, so both outputs are 0.
            keep(torch.where(e_in < -upper, torch.zeros_like(e_in), e_in), k)
        elif isinstance(layer, Reshape):
            keep(errors[src].reshape(batch, *node.shape), k)
        elif isinstance(layer, ElementwiseAffine):
            e_in = errors[src]
            s = torch.maximum(_f64(layer.s_lo, e_in).abs(), _f64(layer.s_hi, e_in).abs())
            terms = layer.t_terms if layer.t_terms is not None else torch.maximum(layer.t_lo.abs(), layer.t_hi.abs())
            t = _f64(terms, e_in)
            magnitude = s * mags[src] + t
            e = s * (e_in + TINY) + gamma(AFFINE_OPS) * magnitude + 4 * TINY
            keep(_finish(e.expand(batch, *node.shape), magnitude.expand(batch, *node.shape), AFFINE_OPS), k)
        elif isinstance(layer, Add):
            a, b = node.inputs
            magnitude = mags[a] + mags[b]
            e = errors[a] + errors[b] + UNIT_ROUNDOFF * magnitude + TINY
            keep(_finish(e, magnitude, 1), k)
        elif isinstance(layer, Gather):  # copies and exact zeros: the errors move with the values
            moved = reference.gather(errors[src].reshape(batch, -1), layer.index.to(errors[src].device))
            keep(moved.reshape(batch, *node.shape), k)
        elif isinstance(layer, Activation):
            raise ValueError(f"inference='float32' does not cover smooth activations ({layer.name} at "
                             f"'{node.where}'): torch's float32 {layer.name} has no documented error bound; "
                             "use inference='exact'")
        else:
            raise TypeError(f"no float32 error rule for {type(layer).__name__}")
    return errors


def output_error(graph: Graph, input_set: InputSet) -> torch.Tensor:
    """e of the output (B, num_outputs), float64: the float32 logits lie within e of the exact ones."""
    e = error_bounds(graph, input_set)[-1]
    return e.reshape(e.shape[0], -1)


def float32_margins(margins: torch.Tensor, e_out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lower bounds on the float32 forward pass's logit[label] - logit[j], j != label (the order of
    reference.margin_spec): margins (B, K - 1) lower-bound the exact ones; e_out (B, K) bounds the
    float32 logits' error. Rounded down to float32; -inf where there is no finite bound."""
    batch, classes = e_out.shape
    e_out = e_out.to(margins.device)
    labels = labels.to(margins.device)
    e_label = e_out.gather(1, labels.view(-1, 1))
    keep = torch.ones(batch, classes, dtype=torch.bool, device=margins.device)
    keep[torch.arange(batch, device=margins.device), labels] = False
    e_other = e_out[keep].reshape(batch, classes - 1)
    total = (e_label + e_other) * (1 + 2.0**-50)  # the float64 sum, rounded up
    value = margins.detach().double() - total
    return torch.nan_to_num(to_f32_down(value), nan=-float("inf"), posinf=float("inf"), neginf=-float("inf"))
