"""VNN-LIB properties: read them, write VNN-COMP result files.

A VNN-LIB file (VNN-COMP's property format, SMT-LIB s-expressions) states an *unsafe* region:
inputs X_i (the flattened network input, row-major) in a box, or a union of boxes, and a condition
on the outputs Y_j. The property is violated ("sat") when some input of the input set gives outputs
that meet the condition; "unsat" means no input does: the network is safe.

  parser     text -> tokens -> s-expressions -> formulas in disjunctive normal form over linear
             atoms (`parse_vnnlib`, `read_vnnlib`). Numbers are kept exact, as Fractions of
             their decimal text: 0.1 is 1/10, not the nearest float.
  property   `Property`: a union of `Case(lower, upper, constraints)`, each an input box and a
             conjunction of output constraints `coeffs @ Y <= bound` (`Constraint`). The property
             is violated iff some case has an input in its box whose outputs meet every constraint.
  results    `format_result` writes a verdict in VNN-COMP's result-file form.

Checking a property on a network (attacks, sound bounds, input branch and bound: `check_property`,
`Verdict`) is an algorithm, not a file format: it lives in certify.verify.property_check, and is
importable from here as well for compatibility.

Files are untrusted: the parser's time and memory are bounded (certify.limits: "vnnlib_bytes",
"literal_digits", "property_size"; exponents within ±1000), and anything it refuses is a
ValueError naming the line.
"""

from __future__ import annotations

import bisect
import gzip
import itertools
import math
import re
import sys
import time
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from certify import _checks, limits
from certify._exact import round_down, round_up

__all__ = [
    "Case",
    "Constraint",
    "Property",
    "format_result",
    "parse_vnnlib",
    "read_vnnlib",
]

STATUSES = ("unsat", "sat", "unknown", "timeout")  # the first line of a VNN-COMP result file


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
    if isinstance(where, _Expr):  # the text once: an atom the message already names is not repeated
        suffix = "" if message.endswith(where.text) else f": {where.text}"
        return ValueError(f"line {where.line}: {message}{suffix}")
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
        lower64 = np.array([round_down(v) for v in lower])
        upper64 = np.array([round_up(v) for v in upper])
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


def format_result(verdict) -> str:
    """VNN-COMP's result file for a verdict (certify.verify.property_check.Verdict: status and,
    for "sat", the counterexample (x, y)): the status on the first line; for "sat" the
    counterexample follows, one variable per line, ((X_0 v) ... (Y_k v)), each value repr(float)
    (exact for float32)."""
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


# ============================================================================ compatibility
# The checker moved to certify.verify.property_check (an algorithm, not a file format). These names
# stay importable from here for code written before the move (`from certify.formats.vnnlib import
# check_property`). Resolved on first use (PEP 562), not imported here: property_check imports
# this module, so an import at load time would fail whenever property_check is imported first.
_MOVED = ("check_property", "Verdict", "OVERRUN_SECONDS")


def __getattr__(name: str):
    if name in _MOVED:
        from certify.verify import property_check

        return getattr(property_check, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
