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
             `format_result` writes the verdict in VNN-COMP's result-file form. A counterexample
             must hold in every execution at hand (the model in float32 and float64, onnxruntime
             on the ONNX file); every step is sized to end before the deadline.

Files are untrusted: the parser's time and memory are bounded (certify.limits: "vnnlib_bytes",
"literal_digits", "property_size"; exponents within ±1000), and anything it refuses is a
ValueError naming the line.
"""

from __future__ import annotations

import bisect
import copy
import gzip
import itertools
import math
import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from certify import _checks, limits
from certify.bounds import BoundedModel
from certify.bounds import graph as _graph
from certify.bounds import reference as _reference

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
_TIERS = {"ibp": ("ibp",), "crown-ibp": ("ibp", "crown-ibp"), "crown": ("ibp", "crown-ibp", "crown")}


# ============================================================================ property model
@dataclass(frozen=True)
class Constraint:
    """coeffs @ Y <= bound, exactly: coeffs (one Fraction per output) and bound are exact rationals."""

    coeffs: tuple[Fraction, ...]
    bound: Fraction

    def __post_init__(self):
        object.__setattr__(self, "coeffs", tuple(c if type(c) is Fraction else Fraction(c) for c in self.coeffs))
        object.__setattr__(self, "bound", self.bound if type(self.bound) is Fraction else Fraction(self.bound))
        if abs(self.bound) > _F64_MAX or any(c and abs(c) > _F64_MAX for c in self.coeffs):
            raise ValueError("Constraint: a coefficient or the bound is beyond the float64 range")

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

    def _with_constraints(self, constraints: tuple[Constraint, ...]) -> Case:
        """A case with this (already checked) box and other constraints: no copy, no second check."""
        case = object.__new__(Case)
        for name in ("lower", "upper", "exact_lower", "exact_upper"):
            object.__setattr__(case, name, getattr(self, name))
        object.__setattr__(case, "constraints", tuple(constraints))
        return case

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

    def meets(self, y) -> bool:
        """Whether the outputs y are finite and meet every constraint of the case, exactly."""
        y = np.asarray(y).reshape(-1)
        return bool(np.isfinite(y).all()) and all(k.holds(y) for k in self.constraints)

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
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE]([+-]?\d+))?\Z", re.ASCII)
_VARIABLE = re.compile(r"([XY])_(0|[1-9]\d*)\Z", re.ASCII)
_IGNORED_COMMANDS = ("check-sat", "get-model", "set-logic", "set-info", "set-option", "exit")
_MAX_NESTING = 200
_MAX_CASES = 100_000
_MAX_INDEX_DIGITS = 9  # variable indices below 10^9
# |exponent| of a literal: beyond about 330 (plus the digits before it) a number has no finite,
# non-zero float64 counterpart, and 10^exponent is computed exactly; the bound keeps that cheap.
_MAX_EXPONENT = 1000
# Bits of a constant (numerator plus denominator) that arithmetic in the file may produce: products
# and quotients of literals grow them, and exact arithmetic on long numbers is slow.
_MAX_CONSTANT_BITS = 8192
_F64_MAX = Fraction(sys.float_info.max)
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


def _shorten(text: str) -> str:
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + " ..."


class _Deadline:
    """Raises TimeoutError once time.perf_counter() passes `at` (None: never)."""

    def __init__(self, at: float | None):
        self.at = at

    def check(self) -> None:
        if self.at is not None and time.perf_counter() >= self.at:
            raise TimeoutError("the VNN-LIB property was not read before the deadline")


class _Reader:
    """Tokenizer plus recursive-descent reader of s-expressions, one command at a time (the tokens
    and expressions of a whole file are never held at once)."""

    def __init__(self, text: str, deadline: _Deadline):
        self.text = text
        self.deadline = deadline
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.tokens = ((m.group(), m.start()) for m in _TOKEN.finditer(text)
                       if not (m.group()[0].isspace() or m.group()[0] == ";"))
        self.next = next(self.tokens, None)

    def line(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1

    def snippet(self, start: int, end: int) -> str:
        text = " ".join(self.text[start:min(end, start + 4 * _SNIPPET)].split())
        return text if len(text) <= _SNIPPET and end <= start + 4 * _SNIPPET else text[:_SNIPPET] + " ..."

    def commands(self):
        """The top-level expressions, in order."""
        while self.next is not None:
            self.deadline.check()
            yield self.read(0)

    def _take(self) -> tuple[str, int]:
        token = self.next
        self.next = next(self.tokens, None)
        return token

    def read(self, depth: int) -> _Expr:
        token, start = self._take()
        line = self.line(start)
        if token == ")":
            raise _error(line, "unbalanced parentheses: ')' without a matching '('")
        if token != "(":
            return _Expr(line, _shorten(token), atom=token)
        if depth >= _MAX_NESTING:
            raise _error(line, f"expressions nested deeper than {_MAX_NESTING} levels")
        items = []
        while True:
            if self.next is None:
                raise _error(line, f"unbalanced parentheses: '(' is never closed: {self.snippet(start, len(self.text))}")
            token, end = self.next
            if token == ")":
                self._take()
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

    def bounded(self, expr: _Expr) -> _Linear:
        """self, after checking that no number in it is longer than _MAX_CONSTANT_BITS."""
        for q in itertools.chain((self.const,), self.coeffs.values()):
            if q.numerator.bit_length() + q.denominator.bit_length() > _MAX_CONSTANT_BITS:
                raise _error(expr, f"the arithmetic makes a number longer than {_MAX_CONSTANT_BITS} bits "
                                   "(numerator and denominator); VNN-LIB bounds and coefficients are short numbers")
        return self


@dataclass(frozen=True, eq=False)
class _Atom:
    """lhs <= 0 for a linear lhs; `expr` is the comparison it came from."""

    lhs: _Linear
    expr: _Expr

    @property
    def on_outputs(self) -> bool:
        return all(kind == "Y" for kind, _ in self.lhs.coeffs)


class _Parser:
    """Turns the commands of a VNN-LIB file into the cases of a Property."""

    def __init__(self, num_inputs: int | None, num_outputs: int | None, deadline: _Deadline):
        self.limits = {"X": num_inputs, "Y": num_outputs}
        self.declared: dict[tuple[str, int], _Expr] = {}
        self.boxes: dict[tuple[int, ...], Case] = {}  # input atoms (by identity) -> a case with their box
        self.deadline = deadline
        self.terms = 0
        self.max_size = limits.value("property_size")

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
        raise _error(expr, f"unknown command {_shorten(head)!r}")

    def variable(self, expr: _Expr) -> tuple[str, int] | None:
        """("X", i) or ("Y", j) for an atom naming a variable, else None."""
        match = _VARIABLE.match(expr.atom)
        if match is None:
            return None
        if len(match.group(2)) > _MAX_INDEX_DIGITS:
            raise _error(expr, f"variable index beyond {10 ** _MAX_INDEX_DIGITS - 1:,}")
        return match.group(1), int(match.group(2))

    def declare(self, expr: _Expr) -> None:
        if len(expr.items) != 3 or expr.items[1].atom is None:
            raise _error(expr, "declare-const takes a name and a sort, as in (declare-const X_0 Real)")
        name, sort = expr.items[1].text, expr.items[2].atom
        var = self.variable(expr.items[1])
        if var is None:
            raise _error(expr, f"unknown variable name {name!r} (VNN-LIB names inputs X_i and outputs Y_j)")
        if sort != "Real":
            raise _error(expr, f"variable {name} must have sort Real, got {expr.items[2].text}")
        kind, index = var
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
    def product(self, left: list[tuple[_Atom, ...]], right: list[tuple[_Atom, ...]], expr: _Expr,
                what: str) -> list[tuple[_Atom, ...]]:
        """Every conjunction of `left` with every one of `right` (the DNF of a conjunction), refused
        before it is built when it has more than _MAX_CASES cases or more comparisons in all than
        the limit "property_size"."""
        if len(left) * len(right) > _MAX_CASES:
            raise _error(expr, f"{what} expand into more than {_MAX_CASES:,} cases")
        size = len(right) * sum(map(len, left)) + len(left) * sum(map(len, right))
        if size > self.max_size:
            limits.check("property_size", size, f"line {expr.line}: {what}, expanded into cases,")
        return [a + b for a in left for b in right]

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
                result = self.product(result, self.formula(arg), expr, "the formula's terms")
            return result
        if head == "or":
            result, size = [], 0
            for arg in args:
                part = self.formula(arg)
                result += part
                size += sum(map(len, part))
                if len(result) > _MAX_CASES:
                    raise _error(expr, f"the formula's terms expand into more than {_MAX_CASES:,} cases")
                if size > self.max_size:
                    limits.check("property_size", size, f"line {expr.line}: the formula, expanded into cases,")
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
                conjunction.append(_Atom(lhs.bounded(expr), expr))
            return [tuple(conjunction)]
        if head in ("<", ">", "not", "=>", "xor", "distinct"):
            raise _error(expr, f"unsupported operator {head!r} (VNN-LIB properties use and, or, <=, >=)")
        raise _error(expr, f"unknown operator {_shorten(head)!r}" if head else "expected a formula")

    def number(self, expr: _Expr) -> Fraction:
        """A numeric literal, exactly; refused when too long or its exponent too large (10^exponent
        is computed exactly)."""
        limits.check("literal_digits", len(expr.atom), f"line {expr.line}: the number {expr.text}")
        exponent = _NUMBER.match(expr.atom).group(1)
        if exponent is not None and abs(int(exponent)) > _MAX_EXPONENT:
            raise _error(expr, f"the exponent is beyond ±{_MAX_EXPONENT} (float64 numbers lie between about "
                               "1e-324 and 1.8e308 in magnitude)")
        return Fraction(expr.atom)

    def term(self, expr: _Expr) -> _Linear:
        """A linear term: numbers, declared variables, +, -, * (by constants) and / (by a constant)."""
        self.terms += 1
        if self.terms % 1024 == 0:
            self.deadline.check()
        if expr.atom is not None:
            if _NUMBER.match(expr.atom):
                return _Linear({}, self.number(expr))
            var = self.variable(expr)
            if var is None:
                raise _error(expr, f"unknown symbol {expr.text!r} (expected a number or a variable X_i / Y_j)")
            if var not in self.declared:
                raise _error(expr, f"undeclared variable {expr.atom}")
            return _Linear({var: Fraction(1)}, Fraction(0))
        head, args = expr.head, expr.items[1:]
        if head in ("+", "-") and args:
            # Summed in one dict: n terms cost O(n), not O(n^2) copies.
            coeffs, const = {}, Fraction(0)
            for k, arg in enumerate(args):
                term = self.term(arg)
                negate = head == "-" and (k > 0 or len(args) == 1)
                for v, c in term.coeffs.items():
                    coeffs[v] = coeffs.get(v, 0) + (-c if negate else c)
                const += -term.const if negate else term.const
            return _Linear({v: c for v, c in coeffs.items() if c}, const).bounded(expr)
        if head == "*" and args:
            terms = [self.term(arg) for arg in args]
            variable = [t for t in terms if t.coeffs]
            if len(variable) > 1:
                raise _error(expr, "non-linear term: a product of variables")
            factor = Fraction(1)
            for t in terms:
                if not t.coeffs:
                    factor = _Linear({}, factor * t.const).bounded(expr).const
            return (variable[0] if variable else _Linear({}, Fraction(1))).scaled(factor).bounded(expr)
        if head == "/" and len(args) == 2:
            numerator, denominator = self.term(args[0]), self.term(args[1])
            if denominator.coeffs:
                raise _error(expr, "non-linear term: division by a variable")
            if not denominator.const:
                raise _error(expr, "division by zero")
            return numerator.scaled(1 / denominator.const).bounded(expr)
        if head in ("+", "-", "*", "/"):
            raise _error(expr, f"wrong number of arguments for {head!r}")
        raise _error(expr, f"unknown operator {_shorten(head)!r}" if head else "expected a term")

    # ---------------------------------------------------------------- cases
    def size(self, kind: str) -> int:
        if self.limits[kind] is not None:
            return self.limits[kind]
        return 1 + max((i for k, i in self.declared if k == kind), default=-1)

    def check_sizes(self, dnf: list[tuple[_Atom, ...]], num_inputs: int, num_outputs: int, end_line: int) -> None:
        """Refuses, before anything is allocated for them, inputs that are never declared (when their
        number comes from the file) and properties whose cases hold more numbers in all than the
        limit "property_size" (each case: its box, and one coefficient per output per constraint)."""
        if self.limits["X"] is None:
            declared = sum(1 for kind, _ in self.declared if kind == "X")
            if declared < num_inputs:  # a gap: the first missing index is at most `declared`
                missing = next(i for i in range(declared + 1) if ("X", i) not in self.declared)
                raise _error(end_line, f"input variable X_{missing} is never declared, so it has no lower bound")
        size = 0
        for conjunction in dnf:
            size += num_inputs + num_outputs * sum(1 for atom in conjunction if atom.on_outputs)
            if size > self.max_size:
                limits.check("property_size", size, f"line {end_line}: the property's cases")

    def case(self, conjunction: tuple[_Atom, ...], num_inputs: int, num_outputs: int, end_line: int) -> Case:
        inputs, constraints = [], []
        for atom in conjunction:
            kinds = {kind for kind, _ in atom.lhs.coeffs}
            if kinds == {"Y"}:
                coeffs = [Fraction(0)] * num_outputs
                for (_, j), c in atom.lhs.coeffs.items():
                    coeffs[j] = c
                bound = -atom.lhs.const
                if abs(bound) > _F64_MAX or any(abs(c) > _F64_MAX for c in atom.lhs.coeffs.values()):
                    raise _error(atom.expr, "a coefficient or bound of this output constraint is beyond the "
                                            "float64 range (magnitude above 1.8e308)")
                constraints.append(Constraint(tuple(coeffs), bound))
            elif kinds == {"X"}:
                inputs.append(atom)
            else:
                raise _error(atom.expr, "a constraint mixes input and output variables")
        key = tuple(id(atom) for atom in inputs)  # the same box recurs with every output disjunct
        if key not in self.boxes:
            where = f" (in the case whose first constraint is on line {conjunction[0].expr.line})" if conjunction else ""
            lower64, upper64, lower, upper = self.box(inputs, num_inputs, end_line, where)
            self.boxes[key] = Case(lower64, upper64, tuple(constraints), lower, upper)
            return self.boxes[key]
        return self.boxes[key]._with_constraints(tuple(constraints))

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
    if q.denominator == 1:
        return _shorten(str(q))
    try:
        return f"{float(q)!r}"
    except OverflowError:
        return "-inf" if q < 0 else "inf"


def parse_vnnlib(text: str, num_inputs: int | None = None, num_outputs: int | None = None, *,
                 deadline: float | None = None) -> Property:
    """The property stated by VNN-LIB `text`.

    num_inputs, num_outputs: the network's sizes; variables beyond them are errors. Default: the
    largest declared index + 1. Every input variable needs a lower and an upper bound in every case.
    Supported: declare-const (sort Real), assert, and / or / <= / >= / = (chained), linear terms
    with + - * / by constants; numbers as integers, decimals or in scientific notation, kept exact.
    Raises ValueError naming the line and the offending text for anything else, and for files over
    a resource limit (certify.limits: "literal_digits" on the length of a number, "property_size"
    on the cases the formula expands into; exponents beyond ±1000; coefficients and bounds beyond
    the float64 range). deadline: a time.perf_counter() value; TimeoutError once it passes.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if num_inputs is not None:
        num_inputs = _checks.positive_int("num_inputs", num_inputs)
    if num_outputs is not None:
        num_outputs = _checks.positive_int("num_outputs", num_outputs)
    clock = _Deadline(deadline)
    parser = _Parser(num_inputs, num_outputs, clock)
    end_line = text.count("\n") + 1
    dnf = [()]
    for expr in _Reader(text, clock).commands():
        formula = parser.command(expr)
        if formula is None:
            continue
        dnf = parser.product(dnf, formula, expr, "the assertions")  # the assertions hold together
    n_in, n_out = parser.size("X"), parser.size("Y")
    if n_in == 0:
        raise _error(end_line, "the property declares no input variable (declare-const X_0 Real)")
    parser.check_sizes(dnf, n_in, n_out, end_line)
    cases = []
    for conjunction in dnf:
        clock.check()
        cases.append(parser.case(conjunction, n_in, n_out, end_line))
    return Property(tuple(cases), n_in, n_out)


def read_vnnlib(path, num_inputs: int | None = None, num_outputs: int | None = None, *,
                deadline: float | None = None) -> Property:
    """parse_vnnlib on a file (plain or .gz); errors name the file as well as the line.

    The file's size is checked against the limit "file_bytes" before it is read, and its text
    (decompressed, for .gz, in bounded chunks) against "vnnlib_bytes" (certify.limits).
    deadline: a time.perf_counter() value; TimeoutError once it passes, while reading or parsing."""
    path = Path(path)
    try:
        text = _read_text(path, _Deadline(deadline))
    except TimeoutError:
        raise
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the VNN-LIB file: {exc}") from exc
    try:
        return parse_vnnlib(text, num_inputs, num_outputs, deadline=deadline)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _read_text(path: Path, deadline: _Deadline) -> str:
    limits.check("file_bytes", path.stat().st_size, f"VNN-LIB file {path}")
    allowed = min(limits.value("vnnlib_bytes"), limits.value("decompressed_bytes"))
    if path.suffix != ".gz":
        limits.check("vnnlib_bytes", path.stat().st_size, f"VNN-LIB file {path}")
        return path.read_bytes().decode("utf-8")
    chunks, total = [], 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 20):  # bounded: GzipFile decompresses at most this much per call
            deadline.check()
            total += len(chunk)
            if total > allowed:
                where = f"VNN-LIB file {path}, decompressed (stopped at)"
                limits.check("vnnlib_bytes", total, where)
                limits.check("decompressed_bytes", total, where)
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")


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
            thresholds.append(_round_up(s * k.bound))
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
            lo32 = np.array([_f32_at_least(v) for v in case.exact_lower], dtype=np.float32)
            hi32 = np.array([_f32_at_most(v) for v in case.exact_upper], dtype=np.float32)
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
        pushes = 2  # boundary points moved inward per batch (see push)
        for t in range(steps + 1):
            self.clock.check()
            began = time.perf_counter()
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                y = self.model(x.view(n, *self.shape)).reshape(n, m)
                slack = (coeffs @ y.double().unsqueeze(-1)).squeeze(-1) - bound
                # Aim inside the region, by a margin relative to the terms' size, so that the point
                # meets the constraints in other executions (float64, onnxruntime) as well.
                scale = 1 + bound.abs() + (coeffs.abs() @ y.detach().double().abs().unsqueeze(-1)).squeeze(-1)
                loss = ((slack + 1e-5 * scale).clamp(min=0) * active).sum()
            candidates = ((slack <= 0) | ~active).all(dim=1)
            for b in torch.nonzero(candidates).flatten().tolist()[:8]:
                found = self.confirm(boxes.case[b], x[b])
                if found is None and pushes and loss.requires_grad:
                    pushes -= 1
                    found = self.push(boxes.case[b], x[b], lo[b], hi[b])
                if found is not None:
                    return found
            if t == steps or not loss.requires_grad:
                break
            (grad,) = torch.autograd.grad(loss, x)
            step = width * (0.25 * (1 - t / steps) + 0.005)
            x = torch.minimum(torch.maximum(x.detach() - step * grad.sign(), lo), hi)
            self.costs.per_input_step = (time.perf_counter() - began) / n
        return None

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
    `method`), keep the unsettled ones, batch_size boxes per bound call at most.

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
