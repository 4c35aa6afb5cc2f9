"""Checking a VNN-LIB property on a network: attacks for counterexamples, sound bounds for proofs,
and input branch and bound between them.

The property (certify.formats.vnnlib: `Property`, a union of `Case`s, each an input box and a
conjunction of linear output constraints `coeffs @ Y <= bound`, exact) is violated ("sat") when some
input of a case's box gives outputs that meet all of the case's constraints; "unsat" means none does.
`check_property` decides it:

  proofs           sound lower bounds (BoundedModel.spec_bounds: IBP, CROWN-IBP, CROWN) on each
                   constraint's row over a box, compared with the constraint's bound exactly
                   (`_Prepared`: rows scaled to float32, the residual bounded in Fractions);
  counterexamples  projected gradient descent (certify.attack.descend, the loop `pgd` runs on too)
                   on the sum of hinge violations of a case's constraints, from random starts in
                   the box; a candidate counts only if every execution at hand confirms it (the
                   model in float32 and float64, onnxruntime on the ONNX file: `_Replays`), and one
                   on the region's boundary that an execution rejects is pushed inward;
  search           with up to 20 inputs, boxes left open are halved along their widest input
                   dimension, attacked briefly and bounded again, until every box is settled, a
                   counterexample is found, a split limit or the deadline is reached; with more
                   inputs (method "crown"), the open cases of each box go to the ReLU branch and
                   bound of certify.verify.bab (alpha/beta-CROWN, the search decide() runs), as a
                   goal (PropertyCases) whose proofs and counterexamples are this module's;
  time             every step is sized by measured costs to end before the deadline, so the answer
                   comes within `timeout` + OVERRUN_SECONDS.

`certify.formats.vnnlib` reads the property and writes the verdict (`format_result`); this module
is the algorithm between the two.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from certify import _checks
from certify._exact import f32_at_least, f32_at_most, round_up
from certify.attack import descend
from certify.bounds import BoundedModel
from certify.bounds import graph as _graph
from certify.bounds import reference as _reference
from certify.formats.vnnlib import Case, Property

__all__ = ["OVERRUN_SECONDS", "Verdict", "check_property"]

METHODS = ("ibp", "crown", "crown-ibp")
_TIERS = {"ibp": ("ibp",), "crown-ibp": ("ibp", "crown-ibp"), "crown": ("ibp", "crown-ibp", "crown")}


@dataclass(frozen=True)
class Verdict:
    """The answer of check_property.

    status: "unsat" (proven safe), "sat" (counterexample found), "unknown" (split limit reached),
    "timeout" (time up before a decision). counterexample: for "sat", (x, y): x float32 of the
    model's input shape, y = model(x) float32, flattened (the Y_j). seconds: the time taken.
    splits: how many input boxes branch and bound cut in two.
    """

    status: str
    counterexample: tuple[np.ndarray, np.ndarray] | None
    seconds: float
    splits: int = 0


class _TimeUp(Exception):
    pass


class _Clock:
    def __init__(self, timeout: float | None):
        self.start = time.perf_counter()
        self.end = None if timeout is None else self.start + timeout

    def check(self) -> None:
        if self.end is not None and time.perf_counter() >= self.end:
            raise _TimeUp

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        return math.inf if self.end is None else self.end - time.perf_counter()


@dataclass
class _Prepared:
    """A case in the form the checker uses.

    Proof rows: constraint a @ Y <= b is scaled by s = 2^k (max |s a_j| in [1, 2)) and split as
    s a = hi + lo with hi = float32(s a) and lo the exact residual. spec_bounds gives L <= hi @ f(x)
    over a box; when some residual is non-zero, the spec also has the rows e_j and -e_j for the
    outputs j with a non-zero residual, giving l_j <= f_j(x) <= u_j, and lo @ f(x) >=
    sum_j min(lo_j l_j, lo_j u_j) (interval arithmetic, in Fractions). The case is infeasible on
    the box when L + that sum > s b, compared exactly.
    """

    case: Case
    spec: np.ndarray  # (R, m): S constraint rows (float32 values), then e_j and -e_j for j in `outputs`
    threshold: np.ndarray  # (S,) float64: the smallest float64 >= s b
    strict: np.ndarray  # (S,) bool: threshold == s b, so L > threshold is needed (else L >= threshold)
    scaled_bound: list[Fraction]  # s b
    residual: list[tuple[Fraction, ...] | None]  # lo, or None when zero
    inner: tuple[np.ndarray, np.ndarray] | None = field(default=None)  # float32 points of the exact box
    outputs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # j with a residual
    coeffs: np.ndarray | None = None  # (S, m) float64: case.coeffs, for the attack
    bounds: np.ndarray | None = None  # (S,) float64: case.bounds

    @staticmethod
    def make(case: Case, num_outputs: int, inner_boxes: dict | None = None) -> _Prepared:
        """inner_boxes: a cache of `inner` by box (cases that share a box share it)."""
        rows, thresholds, strict, scaled, residual = [], [], [], [], []
        zero = Fraction(0)
        for k in case.constraints:
            nonzero = [(j, c) for j, c in enumerate(k.coeffs) if c]
            # > 0 from the parser: constant comparisons never become constraints
            biggest = max((abs(c) for _, c in nonzero), default=Fraction(1))
            e = biggest.numerator.bit_length() - biggest.denominator.bit_length()
            e = e if biggest >= Fraction(2) ** e else e - 1
            s = Fraction(2) ** -e
            hi, lo = np.zeros(num_outputs), [zero] * num_outputs
            for j, c in nonzero:
                hi[j] = float(np.float32(float(s * c)))
                lo[j] = s * c - Fraction(hi[j])
            rows.append(hi)
            scaled.append(s * k.bound)
            thresholds.append(round_up(s * k.bound))
            strict.append(math.isfinite(thresholds[-1]) and Fraction(thresholds[-1]) == s * k.bound)
            residual.append(tuple(lo) if any(lo[j] for j, _ in nonzero) else None)
        outputs = sorted({j for r in residual if r is not None for j, v in enumerate(r) if v})
        if outputs:
            eye = np.eye(num_outputs)[outputs]
            rows += list(eye) + list(-eye)
        spec = np.array(rows, dtype=np.float64).reshape(len(rows), num_outputs)
        coeffs = np.zeros((len(case.constraints), num_outputs))
        for i, k in enumerate(case.constraints):
            for j, c in enumerate(k.coeffs):
                if c:
                    coeffs[i, j] = float(c)
        bounds = np.array([float(k.bound) for k in case.constraints], dtype=np.float64)
        key = (id(case.exact_lower), id(case.exact_upper))
        if inner_boxes is not None and key in inner_boxes:
            inner = inner_boxes[key][0]
        else:
            inner = None
            lo32 = np.array([f32_at_least(v) for v in case.exact_lower], dtype=np.float32)
            hi32 = np.array([f32_at_most(v) for v in case.exact_upper], dtype=np.float32)
            if (lo32 <= hi32).all():  # else no float32 input lies in the box: no counterexample to run
                inner = (lo32, hi32)
            if inner_boxes is not None:  # the case is kept with it, so the ids stay its box's
                inner_boxes[key] = (inner, case)
        return _Prepared(case, spec, np.array(thresholds), np.array(strict, dtype=bool), scaled, residual, inner,
                         np.array(outputs, dtype=int), coeffs, bounds)

    def infeasible(self, lower: np.ndarray) -> np.ndarray:
        """lower: (B, R) float64 lower bounds of the spec rows over B boxes. True where some
        constraint cannot hold anywhere in the box (so the case is settled there)."""
        num = len(self.case.constraints)
        bound = lower[:, :num]
        proven = (bound > self.threshold) | (~self.strict & (bound == self.threshold))
        plain = np.array([r is None for r in self.residual], dtype=bool)
        settled = (proven & plain).any(axis=1)
        m = len(self.outputs)
        for b in np.flatnonzero(~settled):
            for i, lo in enumerate(self.residual):
                if lo is None or not math.isfinite(lower[b, i]):
                    continue
                y_low, y_high = lower[b, num:num + m], -lower[b, num + m:num + 2 * m]
                if not (np.isfinite(y_low).all() and np.isfinite(y_high).all()):
                    continue
                total = Fraction(float(lower[b, i]))
                for j, l_j, u_j in zip(self.outputs, y_low, y_high, strict=True):
                    r = lo[j]
                    if r:
                        total += r * Fraction(float(l_j if r > 0 else u_j))
                if total > self.scaled_bound[i]:
                    settled[b] = True
                    break
        return settled


@dataclass
class _Boxes:
    """Open boxes: which case, the box (float64, enclosing part of the case's box) and split depth."""

    case: np.ndarray  # (N,) int
    lower: np.ndarray  # (N, n)
    upper: np.ndarray  # (N, n)
    depth: np.ndarray  # (N,) int

    def __len__(self) -> int:
        return len(self.case)

    def take(self, index) -> _Boxes:
        return _Boxes(self.case[index], self.lower[index], self.upper[index], self.depth[index])

    @staticmethod
    def join(a: _Boxes, b: _Boxes) -> _Boxes:
        return _Boxes(*(np.concatenate([x, y]) for x, y in
                        ((a.case, b.case), (a.lower, b.lower), (a.upper, b.upper), (a.depth, b.depth))))


# Time: every step the checker takes between two looks at the clock is sized to end before the
# deadline. An attack step or an IBP / CROWN-IBP call covers as many inputs or boxes as measured
# times say fit in _SLICE seconds; a CROWN call (whose cost grows with the unstable neurons of every
# layer times the size of the layers below them, and can reach minutes on one CIFAR-sized box) runs
# only when its estimated time is at most 1/_CROWN_SAFETY of the time left. OVERRUN_SECONDS is what
# the answer may come after the deadline (a step that runs longer than measured, the checks of a
# counterexample); it assumes a forward pass of one input takes well under a second.
_SLICE = 0.25
_CROWN_SAFETY = 2.0
_CROWN_VS_ROWS = 2.0
_SPEC_ENTRIES = 1 << 24
OVERRUN_SECONDS = 2.0
_INPUT_SPLIT_DIMS = 20  # up to this many inputs the search splits the input box (SearchSettings' default)


class _Costs:
    """Running estimates of what the checker's steps cost on this network.

    CROWN's work on a box, in multiply-adds: an IBP pass per ReLU layer, a back-substitution to the
    input of 2 rows per neuron that IBP leaves unstable (from the layer below that neuron's affine
    layer), and the spec's rows from the output. Its seconds per multiply-add come from the last
    CROWN call whose work was counted, else from a CROWN-IBP call with many spec rows (the same
    backward passes), times _CROWN_VS_ROWS (measured: CROWN's passes run 0.5 to 1 times as fast).
    """

    def __init__(self, graph):
        macs = []
        for node in graph.nodes:
            layer = node.layer
            if isinstance(layer, _graph.Linear):
                macs.append(layer.weight.numel())
            elif isinstance(layer, _graph.Conv2d):
                macs.append(node.size * layer.weight[0].numel())
            else:
                macs.append(node.size)
        self.graph = graph
        self.below = np.cumsum(macs, dtype=np.float64)  # a backward pass from node i to the input
        self.forward = float(self.below[-1])
        self.relus = []  # (pre, start, size): unstable neurons of `pre` are bounded from node `start`
        for node in graph.nodes:
            if isinstance(node.layer, _graph.ReLU):
                pre = node.inputs[0]
                affine = isinstance(graph.nodes[pre].layer, (_graph.Linear, _graph.Conv2d))
                start = graph.nodes[pre].inputs[0] if affine else pre
                self.relus.append((pre, start, graph.nodes[pre].size))
        self.per_box: dict[str, float] = {}  # method -> seconds per box, last call
        self.per_mac: dict[str, float] = {}  # "crown" / "crown-ibp" -> seconds per multiply-add
        self.per_input_step: float | None = None  # one attack step, per input

    def passes(self, rows: np.ndarray, ibp: int = 1) -> np.ndarray:
        """Work of `ibp` IBP passes plus the spec rows' back-substitution, per box."""
        return (rows + 2 * ibp) * self.forward

    def calibrate(self, bounded: BoundedModel, lower: np.ndarray, upper: np.ndarray) -> None:
        """Seconds per multiply-add of back-substitution, from one CROWN-IBP call on the box with
        enough spec rows (up to 512) to fill the engine's GEMMs."""
        rows = int(np.clip(5e8 / self.forward, 1, 512))
        spec = np.zeros((rows, bounded.num_outputs))
        spec[:, 0] = 1.0
        shape = (1, *self.graph.input_shape)
        start = time.perf_counter()
        bounded.spec_bounds(torch.from_numpy(lower).view(shape), torch.from_numpy(upper).view(shape),
                            torch.from_numpy(spec), "crown-ibp")
        self.per_mac["rows"] = (time.perf_counter() - start) / float(self.passes(np.array([rows]))[0])

    def crown_work(self, lower: np.ndarray, upper: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """CROWN's work per box, counting the neurons that IBP leaves unstable."""
        batch = len(lower)
        shape = (batch, *self.graph.input_shape)
        box = (_reference.to_f32_down(torch.from_numpy(lower)).view(shape),
               _reference.to_f32_up(torch.from_numpy(upper)).view(shape))
        with torch.no_grad():
            boxes = _reference.ibp(self.graph, box, sound=False)
        work = self.passes(rows, 1 + len(self.relus))
        for pre, start, _ in self.relus:
            lo, hi = (b.reshape(batch, -1) for b in boxes[pre])
            unstable = ((lo < 0) & (hi > 0)).sum(1).double().numpy()
            work = work + 2 * unstable * (self.below[start] + self.graph.nodes[start].size)
        return work

    def crown_work_at_most(self, rows: np.ndarray) -> np.ndarray:
        """CROWN's work per box if every neuron were unstable."""
        extra = sum(2 * size * (self.below[start] + self.graph.nodes[start].size) for _, start, size in self.relus)
        return self.passes(rows, 1 + len(self.relus)) + extra

    def seconds_per_mac(self) -> float:
        """CROWN's: measured on its last counted call, else from calibrate."""
        if "crown" in self.per_mac:
            return self.per_mac["crown"]
        return _CROWN_VS_ROWS * self.per_mac["rows"]

    def attack_chunk(self, batch_size: int) -> int:
        """Inputs per attack batch: batch_size, or fewer when a step would take over _SLICE seconds."""
        per = self.per_input_step
        if per is None or per * batch_size <= _SLICE:
            return batch_size
        return max(1, int(_SLICE / per))


class _Replays:
    """The executions a counterexample must also meet the property in, besides the model's own
    float32 run on it: the model copied to float64 and, when `replay` (the ONNX file, as a path or
    bytes) is given and onnxruntime is installed, onnxruntime on that file (what VNN-COMP's checker
    runs). Built on first use; an execution that cannot run this model is left out."""

    def __init__(self, model, shape, num_outputs: int, replay):
        self.model, self.shape, self.num_outputs, self.replay = model, shape, num_outputs, replay
        self._runs = None

    def runs(self) -> list:
        if self._runs is None:
            self._runs = [run for run in (self._float64(), self._onnxruntime()) if run is not None]
        return self._runs

    def _float64(self):
        try:
            model64 = copy.deepcopy(self.model).double()

            def run(x: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    x64 = torch.from_numpy(np.asarray(x, dtype=np.float64)).reshape(1, *self.shape)
                    return model64(x64).reshape(-1).double().numpy()

            run(np.zeros(self.shape, dtype=np.float32))
        except Exception:  # noqa: BLE001 - a module that cannot run in float64 (a fixed dtype inside)
            return None
        return run

    def _onnxruntime(self):
        if self.replay is None:
            return None
        try:
            import onnxruntime
        except ImportError:
            return None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        source = bytes(self.replay) if isinstance(self.replay, (bytes, bytearray)) else str(self.replay)
        try:
            session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - onnxruntime refuses a model certify reads
            return None
        first = session.get_inputs()[0]
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in first.shape]
        feed = tuple(dims) if math.prod(dims) == math.prod(self.shape) else (1, *self.shape)

        def run(x: np.ndarray) -> np.ndarray:
            y = np.asarray(session.run(None, {first.name: np.asarray(x, dtype=np.float32).reshape(feed)})[0])
            if y.size != self.num_outputs:
                raise ValueError(f"the replay model gives {y.size} outputs, the property has {self.num_outputs}")
            return y.reshape(-1)

        return run


class _Checker:
    def __init__(self, model, shape, prop, method, clock, batch_size, seed, replay):
        self.model, self.shape, self.method, self.clock = model, shape, method, clock
        self.bounded = BoundedModel(model, shape)
        if self.bounded.num_outputs != prop.num_outputs:
            raise ValueError(f"the property has {prop.num_outputs} outputs but the model has "
                             f"{self.bounded.num_outputs}; parse it with num_outputs={self.bounded.num_outputs}")
        inner_boxes: dict = {}
        self.prepared = []
        for case in prop.cases:
            clock.check()
            self.prepared.append(_Prepared.make(case, prop.num_outputs, inner_boxes))
        self.rows = np.array([p.spec.shape[0] for p in self.prepared])
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.costs = _Costs(self.bounded.graph)
        self.replays = _Replays(model, shape, prop.num_outputs, replay)
        self.tiers = _TIERS[method]
        self._probe(prop)

    def _probe(self, prop) -> None:
        """Times one attack step (forward and backward) on one input: the first attack batch's size."""
        if not prop.cases:
            return
        case = prop.cases[0]
        x = torch.from_numpy((0.5 * case.lower + 0.5 * case.upper).astype(np.float32)).view(1, *self.shape)
        start = time.perf_counter()
        x.requires_grad_(True)
        with torch.enable_grad():
            y = self.model(x)
            if y.requires_grad:
                torch.autograd.grad(y.double().sum(), x)
        self.costs.per_input_step = time.perf_counter() - start

    # ---------------------------------------------------------------- proofs
    def settle(self, boxes: _Boxes, tiers=None) -> np.ndarray:
        """True where sound bounds show the box's case cannot be met anywhere in the box. Each
        method of `tiers` (default: IBP, then CROWN-IBP, then CROWN, up to the checker's method)
        runs on the boxes the ones before it left open."""
        settled = np.zeros(len(boxes), dtype=bool)
        rows = self.rows[boxes.case]
        provable = rows > 0  # cases without constraints: the whole box is unsafe, nothing to prove
        for method in self.tiers if tiers is None else tiers:
            todo = np.flatnonzero(provable & ~settled)
            # (boxes, rows, outputs) spec entries per call: at most _SPEC_ENTRIES (or one box)
            most = max(1, min(self.batch_size,
                              _SPEC_ENTRIES // (max(1, int(rows.max())) * self.bounded.num_outputs)))
            while len(todo):
                self.clock.check()
                count, work = self._batch(method, boxes, todo[:most], rows)
                if count == 0:  # CROWN that could not end before the deadline: the boxes stay open
                    break
                part = todo[:count]
                settled[part] = self._bound(boxes.take(part), rows[part], method, work)
                todo = todo[count:]
        return settled

    def _batch(self, method: str, boxes: _Boxes, index: np.ndarray, rows: np.ndarray) -> tuple[int, float | None]:
        """How many of the boxes `index` the next `method` call takes, and (CROWN) their counted work."""
        costs = self.costs
        if method != "crown":
            per = costs.per_box.get(method)
            return (1 if per is None else max(1, min(len(index), int(_SLICE / per)))), None
        budget = self.clock.remaining() / _CROWN_SAFETY
        if math.isinf(budget):
            return len(index), None
        if "crown" not in costs.per_mac and "rows" not in costs.per_mac:
            costs.calibrate(self.bounded, boxes.lower[index[0]], boxes.upper[index[0]])
            self.clock.check()
        per_mac = costs.seconds_per_mac()
        if per_mac * costs.crown_work_at_most(rows[index]).sum() <= min(budget, _SLICE):
            return len(index), None  # fits whatever the unstable neurons are: nothing to count
        per_ibp = costs.per_box.get("ibp")
        k = len(index) if per_ibp is None else max(1, min(len(index), int(_SLICE / (2 * per_ibp))))
        part = index[:k]
        work = costs.crown_work(boxes.lower[part], boxes.upper[part], rows[part])
        count = int((np.cumsum(work) * per_mac <= budget).sum())
        return count, float(work[:count].sum())

    def _bound(self, part: _Boxes, rows: np.ndarray, method: str, work: float | None) -> np.ndarray:
        spec = np.zeros((len(part), rows.max(), self.bounded.num_outputs))
        for b, c in enumerate(part.case):
            spec[b, :len(self.prepared[c].spec)] = self.prepared[c].spec
        start = time.perf_counter()
        lower = self.bounded.spec_bounds(torch.from_numpy(part.lower).view(len(part), *self.shape),
                                         torch.from_numpy(part.upper).view(len(part), *self.shape),
                                         torch.from_numpy(spec), method)
        seconds = time.perf_counter() - start
        costs = self.costs
        costs.per_box[method] = seconds / len(part)
        if method == "crown" and work:
            costs.per_mac["crown"] = seconds / work
        lower = lower.detach().double().numpy()
        settled = np.zeros(len(part), dtype=bool)
        for c in np.unique(part.case):
            where = np.flatnonzero(part.case == c)
            settled[where] = self.prepared[c].infeasible(lower[where])
        return settled

    # ---------------------------------------------------------------- counterexamples
    def attack(self, boxes: _Boxes, restarts: int, steps: int):
        """PGD from `restarts` starts per box (the first at the centre) on the sum of hinge
        violations of the case's constraints, with a margin; (x, y) for the first point confirmed
        (see confirm), else None."""
        usable = np.array([self.prepared[c].inner is not None for c in boxes.case], dtype=bool)
        boxes = boxes.take(np.repeat(np.flatnonzero(usable), restarts))
        # (inputs, constraints, outputs) coefficients per batch: at most _SPEC_ENTRIES (or one input)
        rows = max((len(p.case.constraints) for p in self.prepared), default=1)
        most = max(1, _SPEC_ENTRIES // (max(1, rows) * self.bounded.num_outputs))
        start = 0
        while start < len(boxes):
            self.clock.check()
            count = min(most, self.costs.attack_chunk(self.batch_size))
            found = self._attack_batch(boxes.take(slice(start, start + count)), restarts, steps, start)
            if found is not None:
                return found
            start += count
        return None

    def _attack_batch(self, boxes: _Boxes, restarts: int, steps: int, offset: int):
        n, m = len(boxes), self.bounded.num_outputs
        if n == 0:
            return None
        inner_lo = np.stack([self.prepared[c].inner[0] for c in boxes.case])
        inner_hi = np.stack([self.prepared[c].inner[1] for c in boxes.case])
        # Clipped in float64 first: rounding a value inside [inner_lo, inner_hi] (float32 ends) to
        # float32 keeps it inside.
        lo = np.clip(boxes.lower, inner_lo, inner_hi).astype(np.float32)
        hi = np.clip(np.clip(boxes.upper, inner_lo, inner_hi).astype(np.float32), lo, inner_hi)
        lo, hi = torch.from_numpy(lo), torch.from_numpy(hi)
        rows = max(1, max(len(self.prepared[c].case.constraints) for c in boxes.case))
        coeffs, bound = torch.zeros(n, rows, m, dtype=torch.float64), torch.zeros(n, rows, dtype=torch.float64)
        active = torch.zeros(n, rows, dtype=torch.bool)
        for b, c in enumerate(boxes.case):
            case = self.prepared[c].case
            if case.constraints:
                s = len(case.constraints)
                prepared = self.prepared[c]
                coeffs[b, :s], bound[b, :s] = torch.from_numpy(prepared.coeffs), torch.from_numpy(prepared.bounds)
                active[b, :s] = True
        u = torch.rand(lo.shape, generator=self.generator)
        u[(offset + torch.arange(n)) % restarts == 0] = 0.5  # each box's first start: its centre
        x = torch.minimum(lo + u * (hi - lo), hi)
        width = hi - lo
        began = None  # when the last iterate's loss began: one step's time is measured between two

        def violation(x):
            """The sum of hinge violations of the constraints, and the slack of each (<= 0: met)."""
            nonlocal began
            self.clock.check()
            now = time.perf_counter()
            if began is not None:
                self.costs.per_input_step = (now - began) / n
            began = now
            y = self.model(x.view(n, *self.shape)).reshape(n, m)
            slack = (coeffs @ y.double().unsqueeze(-1)).squeeze(-1) - bound
            # Aim inside the region, by a margin relative to the terms' size, so that the point
            # meets the constraints in other executions (float64, onnxruntime) as well.
            scale = 1 + bound.abs() + (coeffs.abs() @ y.detach().double().abs().unsqueeze(-1)).squeeze(-1)
            return ((slack + 1e-5 * scale).clamp(min=0) * active).sum(), slack

        pushes = 2  # boundary points moved inward per batch (see push)

        def visit(t, x, slack):
            """The first candidate of this iterate (every constraint met in float32) that confirm
            accepts, or that push moves to a point confirm accepts; else None."""
            nonlocal pushes
            candidates = ((slack <= 0) | ~active).all(dim=1)
            for b in torch.nonzero(candidates).flatten().tolist()[:8]:
                found = self.confirm(boxes.case[b], x[b])
                if found is None and pushes and slack.requires_grad:  # (push follows the gradient)
                    pushes -= 1
                    found = self.push(boxes.case[b], x[b], lo[b], hi[b])
                if found is not None:
                    return found
            return None

        _, found = descend(x, violation, lambda p: torch.minimum(torch.maximum(p, lo), hi), steps,
                           lambda t: width * (0.25 * (1 - t / steps) + 0.005), visit=visit)
        return found

    def confirm(self, c: int, x: torch.Tensor):
        """(x, y) when x (rounded to float32) lies in case c's exact box and meets its constraints
        exactly in every execution: the model run on x alone in float32 (y, the reported outputs),
        the model in float64, and onnxruntime on the ONNX file (see _Replays); else None."""
        prepared = self.prepared[c]
        x = x.detach().to(torch.float32).reshape(1, *self.shape).clone()
        x_np = x.reshape(self.shape).numpy()
        flat = x_np.reshape(-1)
        if prepared.inner is None or not ((prepared.inner[0] <= flat) & (flat <= prepared.inner[1])).all():
            return None  # float32 points of the exact box are those of [inner lower, inner upper]
        with torch.no_grad():
            y = self.model(x).reshape(-1).to(torch.float32).numpy()
        if not prepared.case.meets(y):
            return None
        for run in self.replays.runs():
            self.clock.check()
            if not prepared.case.meets(run(x_np)):
                return None
        if not prepared.case.violated_by(x_np, y):  # pragma: no cover - the checks above imply it
            return None
        return x_np.copy(), y.copy()

    def push(self, c: int, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
        """A candidate that some execution does not confirm (it lies on the region's boundary, where
        rounding decides): moved inward along the descent direction of the constraints it nearly
        meets, by steps from 2^-20 to 2^-2 of the box's width, each point checked by confirm."""
        case = self.prepared[c].case
        if not case.constraints:
            return None
        coeffs, bound = torch.from_numpy(self.prepared[c].coeffs), torch.from_numpy(self.prepared[c].bounds)
        x = x.detach().to(torch.float32).reshape(1, *self.shape).clone().requires_grad_(True)
        with torch.enable_grad():
            y = self.model(x).reshape(-1).double()
            slack = coeffs @ y - bound
            scale = 1 + bound.abs() + coeffs.abs() @ y.detach().abs()
            near = slack.detach() > -1e-3 * scale
            objective = (slack * near).sum()
            if not objective.requires_grad:
                return None
            (grad,) = torch.autograd.grad(objective, x)
        direction, point = -grad.sign().reshape(lo.shape), x.detach().reshape(lo.shape)
        for k in range(20, 0, -2):
            self.clock.check()
            moved = torch.minimum(torch.maximum(point + direction * (hi - lo) * 2.0 ** -k, lo), hi)
            if torch.equal(moved, point):
                continue
            found = self.confirm(c, moved)
            if found is not None:
                return found
        return None


class PropertyCases:
    """Open cases of a VNN-LIB property that share one input box, as a goal of ReLU branch and
    bound (certify.verify.bab.search, the search decide() runs on).

    Each case is a target whose rows are its _Prepared.spec rows (its constraints scaled to float32
    and, for residuals, the e_j rows), zero-padded to the longest case; a target is proven on a
    domain where _Prepared.infeasible says, exactly, that some constraint of the case cannot hold
    there. A counterexample is what _Checker.confirm accepts for one of the cases (x, y): every
    execution meets all of the case's constraints. The checker has attacked the box already, so
    the search opens with its bounds."""

    def __init__(self, checker: _Checker, cases: list[int], lower: np.ndarray, upper: np.ndarray):
        self.checker, self.cases = checker, list(cases)
        self.prepared = [checker.prepared[c] for c in self.cases]
        shape, outputs = checker.shape, checker.bounded.num_outputs
        spec = np.zeros((len(self.cases), max(len(p.spec) for p in self.prepared), outputs), dtype=np.float32)
        for t, p in enumerate(self.prepared):
            spec[t, :len(p.spec)] = p.spec
        self.spec = torch.from_numpy(spec)
        lo64, hi64 = torch.from_numpy(lower).view(1, *shape), torch.from_numpy(upper).view(1, *shape)
        # enclosed outward, as spec_bounds encloses a box
        self.input_set = _reference.InputSet.of_box(_reference.to_f32_down(lo64), _reference.to_f32_up(hi64))
        inner = self.prepared[0].inner  # the cases share the box, so its float32 points
        self.inside = None
        if inner is not None:  # as _attack_batch clips: float32 points of the case's exact box
            lo = np.clip(lower, inner[0], inner[1]).astype(np.float32)
            hi = np.clip(np.clip(upper, inner[0], inner[1]).astype(np.float32), lo, inner[1])
            self.inside = (torch.from_numpy(lo).view(1, *shape), torch.from_numpy(hi).view(1, *shape))
        self.coeffs = [torch.from_numpy(p.coeffs) for p in self.prepared]
        self.bounds = [torch.from_numpy(p.bounds) for p in self.prepared]

    def _each(self, targets: list, lower: torch.Tensor, per_case) -> np.ndarray:
        values = np.zeros(len(targets))
        targets = np.asarray(targets)
        for t in np.unique(targets):
            where = np.flatnonzero(targets == t)
            values[where] = per_case(self.prepared[t], lower[where, :len(self.prepared[t].spec)].double().numpy())
        return values

    def proven(self, targets: list, lower: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._each(targets, lower, lambda p, low: p.infeasible(low)).astype(bool))

    def score(self, targets: list, lower: torch.Tensor) -> torch.Tensor:
        """The best constraint's bound minus its threshold (> 0: nearly or fully proven)."""
        def best(p, low):
            num = len(p.case.constraints)
            return (low[:, :num] - p.threshold).max(axis=1) if num else np.full(len(low), -np.inf)

        return torch.from_numpy(self._each(targets, lower, best))

    def _slack(self, y: torch.Tensor, t: int) -> torch.Tensor:
        """coeffs @ y - bound per constraint of case t ((N, S), <= 0: met), and a scale of its terms."""
        y = y.double()
        slack = y @ self.coeffs[t].T - self.bounds[t]
        scale = 1 + self.bounds[t].abs() + y.detach().abs() @ self.coeffs[t].abs().T
        return slack, scale

    def confirm(self, points: torch.Tensor):
        """(x, y) for the first point (projected into the box) that meets one of the cases in every
        execution (_Checker.confirm); points whose float32 run meets no case are not replayed."""
        if self.inside is None:
            return None
        points = self.project(points)
        with torch.no_grad():
            y = self.checker.model(points).reshape(len(points), -1)
        tries = 8  # replays per call (float64 and onnxruntime each): a bounded cost per batch
        for t, c in enumerate(self.cases):
            if not self.prepared[t].case.constraints:
                continue
            slack, scale = self._slack(y, t)
            for b in torch.nonzero((slack <= 1e-6 * scale).all(dim=1)).flatten().tolist():
                if tries == 0:
                    return None
                tries -= 1
                found = self.checker.confirm(c, points[b])
                if found is not None:
                    return found
        return None

    def gain(self, points: torch.Tensor, targets: list) -> torch.Tensor:
        """Minus each domain's case's hinge violations (aiming inside by a margin, as the attack)."""
        y = self.checker.model(points).reshape(len(points), -1)
        total = y.new_zeros((), dtype=torch.float64)
        for t in set(targets):
            rows = torch.tensor([i for i, u in enumerate(targets) if u == t])
            slack, scale = self._slack(y[rows], t)
            total = total - (slack + 1e-5 * scale).clamp(min=0).sum()
        return total

    def project(self, points: torch.Tensor) -> torch.Tensor:
        if self.inside is None:
            return points.float()
        return torch.minimum(torch.maximum(points.float(), self.inside[0]), self.inside[1])

    def opening_counterexample(self, before_search: bool):
        return None


def _relu_search(checker: _Checker, boxes: _Boxes, clock: _Clock, max_domains: int) -> tuple[str, object, int]:
    """ReLU branch and bound (certify.verify.bab) on every open box, the cases of one box together:
    ("unsat" | "sat" | "unknown" | "timeout", counterexample, domains bounded)."""
    from certify.verify.bab import SearchSettings, search

    groups: dict = {}
    for i in range(len(boxes)):
        groups.setdefault((boxes.lower[i].tobytes(), boxes.upper[i].tobytes()), []).append(i)
    bounded = 0
    for members in groups.values():
        clock.check()
        goal = PropertyCases(checker, [int(boxes.case[i]) for i in members], boxes.lower[members[0]],
                             boxes.upper[members[0]])
        # ends before the clock's deadline by the time of about one batch of bounds
        deadline = time.monotonic() + max(0.0, clock.remaining() - 0.5 * OVERRUN_SECONDS)
        settings = SearchSettings(timeout=max(clock.remaining(), 1e-3), max_domains=max(1, max_domains - bounded),
                                  seed=0)
        decision = search(goal, checker.bounded.graph, settings, deadline=deadline)
        bounded += decision.domains
        if decision.status == "falsified":
            return "sat", decision.counterexample, bounded
        if decision.status == "unknown":
            return ("timeout" if decision.reason.startswith("timeout") else "unknown"), None, bounded
    return "unsat", None, bounded


def _split(boxes: _Boxes) -> tuple[_Boxes, np.ndarray]:
    """Halves of each box along its widest dimension (they share the midpoint, so they cover the
    box exactly), and a mask of the boxes that could not be split (widest width 0 or one float)."""
    rows = np.arange(len(boxes))
    dim = np.argmax(boxes.upper - boxes.lower, axis=1)
    lo, hi = boxes.lower[rows, dim], boxes.upper[rows, dim]
    mid = 0.5 * lo + 0.5 * hi  # no overflow; in [lo, hi]
    ok = (lo < mid) & (mid < hi)
    left, right = boxes.take(ok), boxes.take(ok)
    left.upper, right.lower = left.upper.copy(), right.lower.copy()
    left.upper[rows[: ok.sum()], dim[ok]] = mid[ok]
    right.lower[rows[: ok.sum()], dim[ok]] = mid[ok]
    children = _Boxes.join(left, right)
    children.depth = children.depth + 1
    return children, ~ok


def check_property(model: torch.nn.Module, input_shape, prop: Property, timeout: float | None = None,
                   method: str = "crown", *, max_splits: int = 20_000, max_depth: int = 64,
                   attack_restarts: int = 16, attack_steps: int = 50, batch_size: int = 256,
                   seed: int = 0, replay=None) -> Verdict:
    """Decides `prop` for `model` (float32, eval mode) on inputs of `input_shape` (no batch dim).

    1. Sound lower bounds (BoundedModel.spec_bounds) on every case's box by IBP, then CROWN-IBP;
    2. a PGD attack on the cases left open; 3. bounds by `method` (CROWN when asked) on those;
    4. input branch and bound on the unsettled boxes: split along the widest input dimension, attack
    the halves briefly (one start each, attack_steps // 5 steps), bound them (IBP, CROWN-IBP, then
    `method`), keep the unsettled ones, batch_size boxes per bound call at most; or, for more than
    20 inputs and method "crown", ReLU branch and bound (certify.verify.bab.search) on each open
    box, with at most 2 max_splits domains bounded in all.

    replay: the ONNX file the model came from (a path, or its bytes): with onnxruntime installed, a
    counterexample must also hold when onnxruntime runs it (as VNN-COMP's checker does).

    Guarantees. "unsat": for every case and every x in its box, some constraint fails for the
    network as an exact real function of its float32 parameters (what spec_bounds bounds; the
    float32 run of the model may differ from it by rounding). "sat": counterexample (x, y) where x
    is float32, lies in the case's exact box, y is the model's float32 output on x alone, and the
    case's constraints hold exactly (in Fractions) for y, for the float64 copy of the model's output
    on x, and for onnxruntime's (replay, when installed). A point on the region's boundary that an
    execution rejects is moved inward and checked again; if none passes, the search goes on.
    "unknown": max_splits boxes were split, or a box reached max_depth splits or could not be halved.
    "timeout": `timeout` seconds (wall clock, from the call) passed first. The clock is checked
    between steps, and each step is sized to end before the deadline (a CROWN call that would not
    is skipped), so the answer comes within timeout + OVERRUN_SECONDS (2 s) for networks whose
    forward pass on one input takes well under a second.
    """
    clock = _Clock(None if timeout is None else _checks.positive_scale("timeout", timeout))
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(prop, Property):
        raise TypeError(f"prop must be a Property (from parse_vnnlib), got {type(prop).__name__}")
    shape = tuple(int(d) for d in input_shape)
    if math.prod(shape) != prop.num_inputs:
        raise ValueError(f"input_shape {shape} has {math.prod(shape)} entries but the property has "
                         f"{prop.num_inputs} inputs")
    max_splits = _checks.positive_int("max_splits", max_splits, minimum=0)
    max_depth = _checks.positive_int("max_depth", max_depth, minimum=0)
    attack_restarts = _checks.positive_int("attack_restarts", attack_restarts)
    attack_steps = _checks.positive_int("attack_steps", attack_steps, minimum=0)
    batch_size = _checks.positive_int("batch_size", batch_size)
    if replay is not None and not isinstance(replay, (str, Path, bytes, bytearray)):
        raise TypeError(f"replay must be an ONNX file's path or bytes, got {type(replay).__name__}")
    splits = 0

    def verdict(status: str, counterexample=None) -> Verdict:
        return Verdict(status, counterexample, clock.seconds(), splits)

    try:
        clock.check()
        checker = _Checker(model, shape, prop, method, clock, batch_size, _checks.seed(seed), replay)
        if not prop.cases:
            return verdict("unsat")
        n = len(prop.cases)
        boxes = _Boxes(np.arange(n), np.stack([c.lower for c in prop.cases]),
                       np.stack([c.upper for c in prop.cases]), np.zeros(n, dtype=int))
        cheap = tuple(m for m in checker.tiers if m != "crown")
        boxes = boxes.take(~checker.settle(boxes, cheap))
        if not len(boxes):
            return verdict("unsat")
        found = checker.attack(boxes, attack_restarts, attack_steps)
        if found is not None:
            return verdict("sat", found)
        if "crown" in checker.tiers:
            boxes = boxes.take(~checker.settle(boxes, ("crown",)))
        crown_seconds = checker.costs.per_box.get("crown")
        if (len(boxes) and method == "crown" and prop.num_inputs > _INPUT_SPLIT_DIMS and crown_seconds is not None
                and 4 * crown_seconds < clock.remaining()):
            # Too many inputs to split the box: ReLU branch and bound with alpha/beta-CROWN bounds
            # (when CROWN ran on these boxes and a few more of its passes fit in the time left).
            status, found, bounded = _relu_search(checker, boxes, clock, 2 * max(1, max_splits))
            splits += bounded // 2
            return verdict(status, found)
        while len(boxes):
            clock.check()
            count = min(len(boxes), max(1, batch_size // 2), max_splits - splits)
            if count == 0 or (boxes.depth[:count] >= max_depth).any():
                return verdict("unknown")
            children, stuck = _split(boxes.take(slice(0, count)))
            if stuck.any():
                return verdict("unknown")
            splits += count
            found = checker.attack(children, 1, max(1, attack_steps // 5))
            if found is not None:
                return verdict("sat", found)
            children = children.take(~checker.settle(children))
            boxes = _Boxes.join(boxes.take(slice(count, None)), children)
        return verdict("unsat")
    except _TimeUp:
        return verdict("timeout")

