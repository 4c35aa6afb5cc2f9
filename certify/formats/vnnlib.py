"""VNN-LIB properties: read them, check them on a network, write VNN-COMP result files.

A VNN-LIB file (VNN-COMP's property format, SMT-LIB s-expressions) states an *unsafe* region:
inputs X_i (the flattened network input, row-major) in a box, or a union of boxes, and a condition
on the outputs Y_j. The property is violated ("sat") when some input of the input set gives outputs
that meet the condition; "unsat" means no input does: the network is safe.

Three parts, each usable on its own:

  parser     text -> tokens -> s-expressions -> formulas in disjunctive normal form over linear
             atoms (`parse_vnnlib`, `read_vnnlib`). Numbers are kept exact, as Fractions of
             their decimal text: 0.1 is 1/10, not the nearest float.
  property   `Property`: a union of `Case(lower, upper, constraints)`, each an input box and a
             conjunction of output constraints `coeffs @ Y <= bound` (`Constraint`). The property
             is violated iff some case has an input in its box whose outputs meet every constraint.
  checker    `check_property`: PGD attacks for counterexamples, sound bounds
             (BoundedModel.spec_bounds) for proofs, and input branch and bound between them;
             `format_result` writes the verdict in VNN-COMP's result-file form.
"""

from __future__ import annotations

import bisect
import gzip
import itertools
import math
import re
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from certify import _checks
from certify.bounds import BoundedModel

__all__ = [
    "Case",
    "Constraint",
    "Property",
    "Verdict",
    "check_property",
    "format_result",
    "parse_vnnlib",
    "read_vnnlib",
]

STATUSES = ("unsat", "sat", "unknown", "timeout")
METHODS = ("ibp", "crown", "crown-ibp")


# ============================================================================ property model
@dataclass(frozen=True)
class Constraint:
    """coeffs @ Y <= bound, exactly: coeffs (one Fraction per output) and bound are exact rationals."""

    coeffs: tuple[Fraction, ...]
    bound: Fraction

    def __post_init__(self):
        object.__setattr__(self, "coeffs", tuple(Fraction(c) for c in self.coeffs))
        object.__setattr__(self, "bound", Fraction(self.bound))

    def holds(self, y) -> bool:
        """Whether coeffs @ y <= bound for the float values y (each taken exactly)."""
        total = Fraction(0)
        for c, v in zip(self.coeffs, y, strict=True):
            if c:
                total += c * Fraction(float(v))
        return total <= self.bound


@dataclass(frozen=True, eq=False)
class Case:
    """One disjunct of the unsafe region: an input x in the box meeting every constraint on f(x).

    lower, upper: (num_inputs,) float64, the box rounded outward (a proof over it covers the exact
    box). exact_lower, exact_upper: the box as written, in Fractions; default: lower and upper
    themselves. A counterexample must lie in the exact box.
    """

    lower: np.ndarray
    upper: np.ndarray
    constraints: tuple[Constraint, ...]
    exact_lower: tuple[Fraction, ...] | None = None
    exact_upper: tuple[Fraction, ...] | None = None

    def __post_init__(self):
        lower = np.array(self.lower, dtype=np.float64).reshape(-1)
        upper = np.array(self.upper, dtype=np.float64).reshape(-1)
        if lower.shape != upper.shape or not (np.isfinite(lower).all() and np.isfinite(upper).all()):
            raise ValueError("Case: lower and upper must be finite and of the same length")
        exact_lower = tuple(Fraction(float(v)) for v in lower) if self.exact_lower is None else self.exact_lower
        exact_upper = tuple(Fraction(float(v)) for v in upper) if self.exact_upper is None else self.exact_upper
        if len(exact_lower) != len(lower) or len(exact_upper) != len(upper):
            raise ValueError("Case: the exact box must have one bound per input")
        for i, (lo, hi, lo64, hi64) in enumerate(zip(exact_lower, exact_upper, lower, upper, strict=True)):
            if not (Fraction(float(lo64)) <= lo <= hi <= Fraction(float(hi64))):
                raise ValueError(f"Case: input {i} has an empty box or one that [lower, upper] does not enclose")
        lower.flags.writeable = False
        upper.flags.writeable = False
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "exact_lower", tuple(exact_lower))
        object.__setattr__(self, "exact_upper", tuple(exact_upper))
        object.__setattr__(self, "constraints", tuple(self.constraints))

    @property
    def coeffs(self) -> np.ndarray:
        """(S, num_outputs) float64: the constraints' coefficients, rounded (for computing only)."""
        return np.array([[float(c) for c in k.coeffs] for k in self.constraints], dtype=np.float64)

    @property
    def bounds(self) -> np.ndarray:
        """(S,) float64: the constraints' bounds, rounded (for computing only)."""
        return np.array([float(k.bound) for k in self.constraints], dtype=np.float64)

    def contains(self, x) -> bool:
        """Whether the point x (flattened) lies in the exact box."""
        x = np.asarray(x).reshape(-1)
        return len(x) == len(self.lower) and all(
            lo <= Fraction(float(v)) <= hi for v, lo, hi in zip(x, self.exact_lower, self.exact_upper, strict=True))

    def violated_by(self, x, y) -> bool:
        """Whether (x, y = f(x)) is a counterexample for this case: x in the box, every constraint met."""
        y = np.asarray(y).reshape(-1)
        return bool(np.isfinite(y).all()) and self.contains(x) and all(k.holds(y) for k in self.constraints)


@dataclass(frozen=True)
class Property:
    """The unsafe region: the union of the cases. No case at all means an empty region (safe)."""

    cases: tuple[Case, ...]
    num_inputs: int
    num_outputs: int

    def __post_init__(self):
        object.__setattr__(self, "cases", tuple(self.cases))
        for case in self.cases:
            if len(case.lower) != self.num_inputs:
                raise ValueError(f"Property: a case has {len(case.lower)} inputs, expected {self.num_inputs}")
            if any(len(k.coeffs) != self.num_outputs for k in case.constraints):
                raise ValueError(f"Property: a constraint does not have {self.num_outputs} coefficients")

    @property
    def boxes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The distinct input boxes (lower, upper), float64, in file order."""
        seen, boxes = set(), []
        for case in self.cases:
            key = (case.lower.tobytes(), case.upper.tobytes())
            if key not in seen:
                seen.add(key)
                boxes.append((case.lower, case.upper))
        return boxes


# ============================================================================ parser
_TOKEN = re.compile(r"\s+|;[^\n]*|\(|\)|[^\s();]+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_VARIABLE = re.compile(r"([XY])_(0|[1-9]\d*)\Z")
_IGNORED_COMMANDS = ("check-sat", "get-model", "set-logic", "set-info", "set-option", "exit")
_MAX_NESTING = 200
_MAX_CASES = 100_000
_SNIPPET = 70


@dataclass(frozen=True)
class _Expr:
    """An s-expression: an atom (a token) or a list. `text` is its source, shortened, for messages."""

    line: int
    text: str
    atom: str | None = None
    items: tuple[_Expr, ...] = ()

    @property
    def head(self) -> str | None:
        return self.items[0].atom if self.items else None


def _error(where: _Expr | int, message: str) -> ValueError:
    if isinstance(where, _Expr):
        return ValueError(f"line {where.line}: {message}: {where.text}")
    return ValueError(f"line {where}: {message}")


class _Reader:
    """Tokenizer plus recursive-descent reader of s-expressions."""

    def __init__(self, text: str):
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.tokens = [(m.group(), m.start()) for m in _TOKEN.finditer(text)
                       if not (m.group()[0].isspace() or m.group()[0] == ";")]
        self.pos = 0

    def line(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1

    def snippet(self, start: int, end: int) -> str:
        text = " ".join(self.text[start:min(end, start + 4 * _SNIPPET)].split())
        return text if len(text) <= _SNIPPET and end <= start + 4 * _SNIPPET else text[:_SNIPPET] + " ..."

    def read_all(self) -> list[_Expr]:
        exprs = []
        while self.pos < len(self.tokens):
            exprs.append(self.read(0))
        return exprs

    def read(self, depth: int) -> _Expr:
        token, start = self.tokens[self.pos]
        self.pos += 1
        line = self.line(start)
        if token == ")":
            raise _error(line, "unbalanced parentheses: ')' without a matching '('")
        if token != "(":
            return _Expr(line, token, atom=token)
        if depth >= _MAX_NESTING:
            raise _error(line, f"expressions nested deeper than {_MAX_NESTING} levels")
        items = []
        while True:
            if self.pos == len(self.tokens):
                raise _error(line, f"unbalanced parentheses: '(' is never closed: {self.snippet(start, len(self.text))}")
            token, end = self.tokens[self.pos]
            if token == ")":
                self.pos += 1
                return _Expr(line, self.snippet(start, end + 1), items=tuple(items))
            items.append(self.read(depth + 1))


@dataclass(frozen=True)
class _Linear:
    """sum(coeffs[v] * v) + const, exactly; v = ("X", i) or ("Y", j). Zero coefficients are dropped."""

    coeffs: dict
    const: Fraction

    def scaled(self, k: Fraction) -> _Linear:
        return _Linear({v: k * c for v, c in self.coeffs.items()} if k else {}, k * self.const)

    def plus(self, other: _Linear) -> _Linear:
        coeffs = dict(self.coeffs)
        for v, c in other.coeffs.items():
            coeffs[v] = coeffs.get(v, 0) + c
            if not coeffs[v]:
                del coeffs[v]
        return _Linear(coeffs, self.const + other.const)


@dataclass(frozen=True)
class _Atom:
    """lhs <= 0 for a linear lhs; `expr` is the comparison it came from."""

    lhs: _Linear
    expr: _Expr


class _Parser:
    """Turns the commands of a VNN-LIB file into the cases of a Property."""

    def __init__(self, num_inputs: int | None, num_outputs: int | None):
        self.limits = {"X": num_inputs, "Y": num_outputs}
        self.declared: dict[tuple[str, int], _Expr] = {}
        self.boxes: dict[tuple[int, ...], tuple] = {}  # input atoms (by identity) -> their box

    # ---------------------------------------------------------------- commands
    def command(self, expr: _Expr) -> list[tuple[_Atom, ...]] | None:
        """A declaration (None) or an assertion (its formula in DNF)."""
        head = expr.head
        if head == "declare-const":
            self.declare(expr)
            return None
        if head == "assert":
            if len(expr.items) != 2:
                raise _error(expr, "assert takes one formula")
            return self.formula(expr.items[1])
        if head in _IGNORED_COMMANDS:
            return None
        if expr.atom is not None or head is None:
            raise _error(expr, "expected a command such as (declare-const X_0 Real) or (assert ...)")
        raise _error(expr, f"unknown command {head!r}")

    def declare(self, expr: _Expr) -> None:
        if len(expr.items) != 3 or expr.items[1].atom is None:
            raise _error(expr, "declare-const takes a name and a sort, as in (declare-const X_0 Real)")
        name, sort = expr.items[1].atom, expr.items[2].atom
        match = _VARIABLE.match(name)
        if match is None:
            raise _error(expr, f"unknown variable name {name!r} (VNN-LIB names inputs X_i and outputs Y_j)")
        if sort != "Real":
            raise _error(expr, f"variable {name} must have sort Real, got {expr.items[2].text}")
        kind, index = match.group(1), int(match.group(2))
        limit = self.limits[kind]
        if limit is not None and index >= limit:
            what = "inputs" if kind == "X" else "outputs"
            raise _error(expr, f"variable {name} is out of range: the network has {limit} {what} "
                               f"({kind}_0 ... {kind}_{limit - 1})")
        if (kind, index) in self.declared:
            raise _error(expr, f"variable {name} is declared twice (first on line "
                               f"{self.declared[kind, index].line})")
        self.declared[kind, index] = expr

    # ---------------------------------------------------------------- formulas
    def formula(self, expr: _Expr) -> list[tuple[_Atom, ...]]:
        """The formula in disjunctive normal form: a list of conjunctions of atoms ([] is false)."""
        if expr.atom is not None:
            if expr.atom in ("true", "false"):
                return [()] if expr.atom == "true" else []
            raise _error(expr, "expected a formula (and, or, <=, >=, =), got an atom")
        head, args = expr.head, expr.items[1:]
        if head == "and":
            result = [()]
            for arg in args:
                right = self.formula(arg)
                if len(result) * len(right) > _MAX_CASES:
                    raise _error(expr, f"the formula expands into more than {_MAX_CASES} cases")
                result = [a + b for a in result for b in right]
            return result
        if head == "or":
            result = []
            for arg in args:
                result += self.formula(arg)
                if len(result) > _MAX_CASES:
                    raise _error(expr, f"the formula expands into more than {_MAX_CASES} cases")
            return result
        if head in ("<=", ">=", "="):
            if len(args) < 2:
                raise _error(expr, f"{head} takes at least two terms")
            terms = [self.term(arg) for arg in args]
            atoms = []
            for a, b in itertools.pairwise(terms):  # chained comparisons, as in SMT-LIB
                if head in ("<=", "="):
                    atoms.append(a.plus(b.scaled(Fraction(-1))))
                if head in (">=", "="):
                    atoms.append(b.plus(a.scaled(Fraction(-1))))
            conjunction = []
            for lhs in atoms:
                if not lhs.coeffs:  # a constant comparison: true drops out, false empties the DNF
                    if lhs.const > 0:
                        return []
                    continue
                conjunction.append(_Atom(lhs, expr))
            return [tuple(conjunction)]
        if head in ("<", ">", "not", "=>", "xor", "distinct"):
            raise _error(expr, f"unsupported operator {head!r} (VNN-LIB properties use and, or, <=, >=)")
        raise _error(expr, f"unknown operator {head!r}" if head else "expected a formula")

    def term(self, expr: _Expr) -> _Linear:
        """A linear term: numbers, declared variables, +, -, * (by constants) and / (by a constant)."""
        if expr.atom is not None:
            if _NUMBER.match(expr.atom):
                return _Linear({}, Fraction(expr.atom))
            match = _VARIABLE.match(expr.atom)
            if match is None:
                raise _error(expr, f"unknown symbol {expr.atom!r} (expected a number or a variable X_i / Y_j)")
            var = (match.group(1), int(match.group(2)))
            if var not in self.declared:
                raise _error(expr, f"undeclared variable {expr.atom}")
            return _Linear({var: Fraction(1)}, Fraction(0))
        head, args = expr.head, expr.items[1:]
        if head == "+" and args:
            result = _Linear({}, Fraction(0))
            for arg in args:
                result = result.plus(self.term(arg))
            return result
        if head == "-" and args:
            first = self.term(args[0])
            if len(args) == 1:
                return first.scaled(Fraction(-1))
            for arg in args[1:]:
                first = first.plus(self.term(arg).scaled(Fraction(-1)))
            return first
        if head == "*" and args:
            terms = [self.term(arg) for arg in args]
            variable = [t for t in terms if t.coeffs]
            if len(variable) > 1:
                raise _error(expr, "non-linear term: a product of variables")
            factor = math.prod((t.const for t in terms if not t.coeffs), start=Fraction(1))
            return (variable[0] if variable else _Linear({}, Fraction(1))).scaled(factor)
        if head == "/" and len(args) == 2:
            numerator, denominator = self.term(args[0]), self.term(args[1])
            if denominator.coeffs:
                raise _error(expr, "non-linear term: division by a variable")
            if not denominator.const:
                raise _error(expr, "division by zero")
            return numerator.scaled(1 / denominator.const)
        if head in ("+", "-", "*", "/"):
            raise _error(expr, f"wrong number of arguments for {head!r}")
        raise _error(expr, f"unknown operator {head!r}" if head else "expected a term")

    # ---------------------------------------------------------------- cases
    def size(self, kind: str) -> int:
        if self.limits[kind] is not None:
            return self.limits[kind]
        return 1 + max((i for k, i in self.declared if k == kind), default=-1)

    def case(self, conjunction: tuple[_Atom, ...], num_inputs: int, num_outputs: int, end_line: int) -> Case:
        inputs, constraints = [], []
        for atom in conjunction:
            kinds = {kind for kind, _ in atom.lhs.coeffs}
            if kinds == {"Y"}:
                coeffs = [Fraction(0)] * num_outputs
                for (_, j), c in atom.lhs.coeffs.items():
                    coeffs[j] = c
                constraints.append(Constraint(tuple(coeffs), -atom.lhs.const))
            elif kinds == {"X"}:
                inputs.append(atom)
            else:
                raise _error(atom.expr, "a constraint mixes input and output variables")
        key = tuple(id(atom) for atom in inputs)  # the same box recurs with every output disjunct
        if key not in self.boxes:
            where = f" (in the case whose first constraint is on line {conjunction[0].expr.line})" if conjunction else ""
            self.boxes[key] = self.box(inputs, num_inputs, end_line, where)
        lower64, upper64, lower, upper = self.boxes[key]
        return Case(lower64, upper64, tuple(constraints), lower, upper)

    def box(self, atoms: list[_Atom], num_inputs: int, end_line: int, where: str):
        """The intersection of the bounds that `atoms` put on single inputs: exact and rounded outward."""
        lower: list[Fraction | None] = [None] * num_inputs
        upper: list[Fraction | None] = [None] * num_inputs
        for atom in atoms:
            if len(atom.lhs.coeffs) != 1:
                raise _error(atom.expr, "a linear constraint over several inputs is not an input box "
                                        "(only bounds on single input variables are supported)")
            ((_, i), c), = atom.lhs.coeffs.items()
            value = -atom.lhs.const / c  # c x + const <= 0  <=>  x <= value (c > 0) or x >= value (c < 0)
            if c > 0:
                upper[i] = value if upper[i] is None else min(upper[i], value)
            else:
                lower[i] = value if lower[i] is None else max(lower[i], value)
            if lower[i] is not None and upper[i] is not None and lower[i] > upper[i]:
                raise _error(atom.expr, f"empty input box: X_{i} >= {_show(lower[i])} and X_{i} <= {_show(upper[i])}")
        for i in range(num_inputs):
            for bound, name in ((lower[i], "lower"), (upper[i], "upper")):
                if bound is None:
                    decl = self.declared.get(("X", i))
                    if decl is None:
                        raise _error(end_line, f"input variable X_{i} is never declared, so it has no {name} bound")
                    raise _error(decl, f"input variable X_{i} has no {name} bound{where}")
        lower64 = np.array([_round_down(v) for v in lower])
        upper64 = np.array([_round_up(v) for v in upper])
        for i in range(num_inputs):
            if not (math.isfinite(lower64[i]) and math.isfinite(upper64[i])):
                raise _error(self.declared[("X", i)], f"a bound on X_{i} is beyond the float64 range")
        return lower64, upper64, tuple(lower), tuple(upper)


def _show(q: Fraction) -> str:
    return str(q) if q.denominator == 1 else f"{float(q)!r}"


def parse_vnnlib(text: str, num_inputs: int | None = None, num_outputs: int | None = None) -> Property:
    """The property stated by VNN-LIB `text`.

    num_inputs, num_outputs: the network's sizes; variables beyond them are errors. Default: the
    largest declared index + 1. Every input variable needs a lower and an upper bound in every case.
    Supported: declare-const (sort Real), assert, and / or / <= / >= / = (chained), linear terms
    with + - * / by constants; numbers as integers, decimals or in scientific notation, kept exact.
    Raises ValueError naming the line and the offending text for anything else.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if num_inputs is not None:
        num_inputs = _checks.positive_int("num_inputs", num_inputs)
    if num_outputs is not None:
        num_outputs = _checks.positive_int("num_outputs", num_outputs)
    parser = _Parser(num_inputs, num_outputs)
    end_line = text.count("\n") + 1
    dnf = [()]
    for expr in _Reader(text).read_all():
        formula = parser.command(expr)
        if formula is None:
            continue
        if len(dnf) * len(formula) > _MAX_CASES:
            raise _error(expr, f"the assertions expand into more than {_MAX_CASES} cases")
        dnf = [a + b for a in dnf for b in formula]  # the assertions hold together
    n_in, n_out = parser.size("X"), parser.size("Y")
    if n_in == 0:
        raise _error(end_line, "the property declares no input variable (declare-const X_0 Real)")
    cases = tuple(parser.case(conjunction, n_in, n_out, end_line) for conjunction in dnf)
    return Property(cases, n_in, n_out)


def read_vnnlib(path, num_inputs: int | None = None, num_outputs: int | None = None) -> Property:
    """parse_vnnlib on a file (plain or .gz); errors name the file as well as the line."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the VNN-LIB file: {exc}") from exc
    try:
        return parse_vnnlib(text, num_inputs, num_outputs)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


# ============================================================================ exact rounding
_F32_MAX = float(np.finfo(np.float32).max)


def _round_down(q: Fraction) -> float:
    """The largest float64 <= q (-inf below the range)."""
    try:
        f = float(q)
    except OverflowError:
        return -math.inf if q < 0 else math.nextafter(math.inf, 0)
    return math.nextafter(f, -math.inf) if Fraction(f) > q else f


def _round_up(q: Fraction) -> float:
    """The smallest float64 >= q (+inf above the range)."""
    return -_round_down(-q)


def _f32_at_least(q: Fraction) -> float:
    """The smallest float32 >= q, as a float (inf when none)."""
    if q > _F32_MAX:
        return math.inf
    if q < -_F32_MAX:
        return -_F32_MAX
    f = np.float32(_round_up(q))  # may round down by one float32 step
    if Fraction(float(f)) < q:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def _f32_at_most(q: Fraction) -> float:
    return -_f32_at_least(-q)


# ============================================================================ checker
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


@dataclass
class _Prepared:
    """A case in the form the checker uses.

    Proof rows: constraint a @ Y <= b is scaled by s = 2^k (max |s a_j| in [1, 2)) and split as
    s a = hi + lo with hi = float32(s a) and lo the exact residual. spec_bounds gives L <= hi @ f(x)
    over a box; when some residual is non-zero, the spec also has the rows e_j and -e_j, giving
    l_j <= f_j(x) <= u_j, and lo @ f(x) >= sum_j min(lo_j l_j, lo_j u_j) (interval arithmetic, in
    Fractions). The case is infeasible on the box when L + that sum > s b, compared exactly.
    """

    case: Case
    spec: np.ndarray  # (R, m): S constraint rows (float32 values), then [I; -I] if any residual
    threshold: np.ndarray  # (S,) float64: the smallest float64 >= s b
    strict: np.ndarray  # (S,) bool: threshold == s b, so L > threshold is needed (else L >= threshold)
    scaled_bound: list[Fraction]  # s b
    residual: list[tuple[Fraction, ...] | None]  # lo, or None when zero
    inner: tuple[np.ndarray, np.ndarray] | None = field(default=None)  # float32 points of the exact box

    @staticmethod
    def make(case: Case, num_outputs: int) -> _Prepared:
        rows, thresholds, strict, scaled, residual = [], [], [], [], []
        for k in case.constraints:
            biggest = max(abs(c) for c in k.coeffs)  # > 0: constant comparisons never become constraints
            e = biggest.numerator.bit_length() - biggest.denominator.bit_length()
            e = e if biggest >= Fraction(2) ** e else e - 1
            s = Fraction(2) ** -e
            hi = np.array([float(np.float32(float(s * c))) for c in k.coeffs])
            lo = tuple(s * c - Fraction(h) for c, h in zip(k.coeffs, hi, strict=True))
            rows.append(hi)
            scaled.append(s * k.bound)
            thresholds.append(_round_up(s * k.bound))
            strict.append(math.isfinite(thresholds[-1]) and Fraction(thresholds[-1]) == s * k.bound)
            residual.append(lo if any(lo) else None)
        if any(r is not None for r in residual):
            eye = np.eye(num_outputs)
            rows += list(eye) + list(-eye)
        spec = np.array(rows, dtype=np.float64).reshape(len(rows), num_outputs)
        inner = None
        lo32 = np.array([_f32_at_least(v) for v in case.exact_lower], dtype=np.float32)
        hi32 = np.array([_f32_at_most(v) for v in case.exact_upper], dtype=np.float32)
        if (lo32 <= hi32).all():  # else no float32 input lies in the box: no counterexample to run
            inner = (lo32, hi32)
        return _Prepared(case, spec, np.array(thresholds), np.array(strict, dtype=bool), scaled, residual, inner)

    def infeasible(self, lower: np.ndarray) -> np.ndarray:
        """lower: (B, R) float64 lower bounds of the spec rows over B boxes. True where some
        constraint cannot hold anywhere in the box (so the case is settled there)."""
        num = len(self.case.constraints)
        bound = lower[:, :num]
        proven = (bound > self.threshold) | (~self.strict & (bound == self.threshold))
        plain = np.array([r is None for r in self.residual], dtype=bool)
        settled = (proven & plain).any(axis=1)
        m = self.spec.shape[1]
        for b in np.flatnonzero(~settled):
            for i, lo in enumerate(self.residual):
                if lo is None or not math.isfinite(lower[b, i]):
                    continue
                y_low, y_high = lower[b, num:num + m], -lower[b, num + m:num + 2 * m]
                if not (np.isfinite(y_low).all() and np.isfinite(y_high).all()):
                    continue
                total = Fraction(float(lower[b, i]))
                for r, l_j, u_j in zip(lo, y_low, y_high, strict=True):
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


class _Checker:
    def __init__(self, model, shape, prop, method, clock, batch_size, seed):
        self.model, self.shape, self.method, self.clock = model, shape, method, clock
        self.bounded = BoundedModel(model, shape)
        if self.bounded.num_outputs != prop.num_outputs:
            raise ValueError(f"the property has {prop.num_outputs} outputs but the model has "
                             f"{self.bounded.num_outputs}; parse it with num_outputs={self.bounded.num_outputs}")
        self.prepared = [_Prepared.make(case, prop.num_outputs) for case in prop.cases]
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    # ---------------------------------------------------------------- proofs
    def settle(self, boxes: _Boxes) -> np.ndarray:
        """True where sound bounds show the box's case cannot be met anywhere in the box."""
        settled = np.zeros(len(boxes), dtype=bool)
        for start in range(0, len(boxes), self.batch_size):
            self.clock.check()
            part = boxes.take(slice(start, start + self.batch_size))
            rows = max(self.prepared[c].spec.shape[0] for c in part.case)
            if rows == 0:  # cases without constraints: the whole box is unsafe, nothing to prove
                continue
            spec = np.zeros((len(part), rows, self.bounded.num_outputs))
            for b, c in enumerate(part.case):
                spec[b, :len(self.prepared[c].spec)] = self.prepared[c].spec
            lower = self.bounded.spec_bounds(torch.from_numpy(part.lower).view(len(part), *self.shape),
                                             torch.from_numpy(part.upper).view(len(part), *self.shape),
                                             torch.from_numpy(spec), self.method)
            lower = lower.detach().double().numpy()
            for c in np.unique(part.case):
                where = np.flatnonzero(part.case == c)
                settled[start + where] = self.prepared[c].infeasible(lower[where])
        return settled

    # ---------------------------------------------------------------- counterexamples
    def attack(self, boxes: _Boxes, restarts: int, steps: int):
        """PGD from `restarts` starts per box (the first at the centre) on the sum of hinge
        violations of the case's constraints; (x, y) for the first point that the model, run on it
        alone, confirms exactly, else None."""
        usable = np.array([self.prepared[c].inner is not None for c in boxes.case], dtype=bool)
        boxes = boxes.take(np.repeat(np.flatnonzero(usable), restarts))
        for start in range(0, len(boxes), self.batch_size):
            found = self._attack_batch(boxes.take(slice(start, start + self.batch_size)), restarts, steps)
            if found is not None:
                return found
        return None

    def _attack_batch(self, boxes: _Boxes, restarts: int, steps: int):
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
                coeffs[b, :s], bound[b, :s], active[b, :s] = torch.from_numpy(case.coeffs), torch.from_numpy(
                    case.bounds), True
        # Aim a little inside the region, so that the exact check does not fail on rounding.
        margin = 1e-6 * (1 + bound.abs())
        u = torch.rand(lo.shape, generator=self.generator)
        u[::restarts] = 0.5
        x = torch.minimum(lo + u * (hi - lo), hi)
        width = hi - lo
        for t in range(steps + 1):
            self.clock.check()
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                y = self.model(x.view(n, *self.shape)).reshape(n, m)
                slack = (coeffs @ y.double().unsqueeze(-1)).squeeze(-1) - bound
                loss = ((slack + margin).clamp(min=0) * active).sum()
            candidates = ((slack <= 0) | ~active).all(dim=1)
            for b in torch.nonzero(candidates).flatten().tolist()[:8]:
                found = self.confirm(boxes.case[b], x[b].detach())
                if found is not None:
                    return found
            if t == steps or not loss.requires_grad:
                break
            (grad,) = torch.autograd.grad(loss, x)
            step = width * (0.25 * (1 - t / steps) + 0.005)
            x = torch.minimum(torch.maximum(x.detach() - step * grad.sign(), lo), hi)
        return None

    def confirm(self, c: int, x: torch.Tensor):
        """(x, y) when running the model on x alone (float32) gives a counterexample for case c."""
        x = x.detach().to(torch.float32).reshape(1, *self.shape).clone()
        with torch.no_grad():
            y = self.model(x).reshape(-1).to(torch.float32)
        x_np, y_np = x.reshape(self.shape).numpy(), y.numpy()
        if self.prepared[c].case.violated_by(x_np, y_np):
            return x_np.copy(), y_np.copy()
        return None


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
                   seed: int = 0) -> Verdict:
    """Decides `prop` for `model` (float32, eval mode) on inputs of `input_shape` (no batch dim).

    1. A quick PGD attack on every case; 2. sound lower bounds (BoundedModel.spec_bounds, `method`)
    on every case's box; 3. input branch and bound on the unsettled boxes: split along the widest
    input dimension, attack the halves briefly (one start each, attack_steps // 5 steps), bound
    them, keep the unsettled ones, batch_size boxes per bound call.

    Guarantees. "unsat": for every case and every x in its box, some constraint fails for the
    network as an exact real function of its float32 parameters (what spec_bounds bounds; the
    float32 run of the model may differ from it by rounding). "sat": counterexample (x, y) where x
    is float32, lies in the case's exact box, y is the model's float32 output on x alone, and y
    meets every constraint of the case exactly (in Fractions). "unknown": max_splits boxes were
    split, or a box reached max_depth splits or could not be halved. "timeout": `timeout` seconds
    (wall clock, from the call) passed first; the clock is checked between steps, so a call can
    run over by one bound or attack step.
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
    checker = _Checker(model, shape, prop, method, clock, batch_size, _checks.seed(seed))
    splits = 0

    def verdict(status: str, counterexample=None) -> Verdict:
        return Verdict(status, counterexample, clock.seconds(), splits)

    try:
        clock.check()
        if not prop.cases:
            return verdict("unsat")
        n = len(prop.cases)
        boxes = _Boxes(np.arange(n), np.stack([c.lower for c in prop.cases]),
                       np.stack([c.upper for c in prop.cases]), np.zeros(n, dtype=int))
        found = checker.attack(boxes, attack_restarts, attack_steps)
        if found is not None:
            return verdict("sat", found)
        boxes = boxes.take(~checker.settle(boxes))
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


def format_result(verdict: Verdict) -> str:
    """VNN-COMP's result file: the status on the first line; for "sat" the counterexample follows,
    one variable per line, ((X_0 v) ... (Y_k v)), each value repr(float) (exact for float32)."""
    if verdict.status not in STATUSES:
        raise ValueError(f"verdict.status must be one of {STATUSES}, got {verdict.status!r}")
    lines = [verdict.status]
    if verdict.status == "sat":
        if verdict.counterexample is None:
            raise ValueError("a sat verdict needs a counterexample")
        x, y = (np.asarray(v).reshape(-1) for v in verdict.counterexample)
        entries = [f"(X_{i} {float(v)!r})" for i, v in enumerate(x)] + [f"(Y_{j} {float(v)!r})" for j, v in enumerate(y)]
        entries[0], entries[-1] = "(" + entries[0], entries[-1] + ")"
        lines += entries
    return "\n".join(lines) + "\n"
