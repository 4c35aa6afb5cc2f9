"""Reports from a certificate (schema "certify.certificate/2" or /1): Markdown, and one self-contained HTML file.

    import json
    from certify.report import write_report
    with open("cert.json") as f:
        write_report(json.load(f), html_path="report.html", markdown_path="report.md")

Every number in the tables and plots is computed from the certificate's rows (`results`), not copied from
its `summary`: the report shows what the rows say, and its "Consistency" section lists every place where
the summary disagrees with them. Strings taken from the certificate are escaped (HTML: html.escape;
Markdown: backslash escapes, or code spans for file names and hashes), so a model file named `<script>`
stays text. The signature, when there is one, is reported but not checked here.

Definitions (per row): correct = prediction == label (an abstain, -1, is never correct); certified =
the smoothed classifier did not abstain (smoothing) or the bounds verified the row (bounds); certified
accuracy at radius r = fraction of rows that are correct and certified with radius >= r, as in
certify.certificate.summarize (at r = 0: the clean accuracy for smoothing, whose correct predictions all
carry a radius > 0, and the verified accuracy for bounds). For bounds with an attack, the PGD accuracy
(correct and not attacked) is an upper bound on robust accuracy, the certified accuracy at the attack's eps
a lower bound, and the report states the gap between them. Sequential smoothing adds the samples each
input used: their distribution, the certified fraction at the target radius, and the saving against
fixed-n CERTIFY at the same budget (n0 + max_samples, or n0 + n, per input).

The Markdown needs only numpy. The HTML draws its plots with matplotlib on a `matplotlib.figure.Figure`
with the Agg canvas; pyplot, and its global figure registry, is never imported.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from certify._files import write_text_atomic
from certify.smoothing.results import ABSTAIN

__all__ = ["SCHEMA", "render_html", "render_markdown", "write_report"]

SCHEMA = "certify.certificate/2"
SCHEMAS = ("certify.certificate/1", SCHEMA)  # version 2 adds sequential smoothing
_SEQUENTIAL = ("sequential-target", "sequential-budget")

_NOT_RECORDED = "not recorded"
_SHA_PREFIX = 12  # hex digits of a sha256 shown in the report
_MAX_RADIUS_COLUMNS = 6  # per-class table: certified accuracy at this many radii at most
# A summary value agrees with the rows when it matches to 4 decimals: that accepts a summary rounded for
# display, and still flags any difference of one input or more among fewer than 20,000 inputs.
_SUMMARY_TOLERANCE = 5e-5 + 1e-12


# ----------------------------------------------------------------------------------------------------
# What the certificate says, read once and checked


@dataclass(frozen=True)
class _Rows:
    """The certificate's `results`, one entry per row (N rows)."""

    label: np.ndarray  # (N,) int64
    prediction: np.ndarray  # (N,) int64, ABSTAIN (-1) for an abstain
    radius: np.ndarray  # (N,) float64 >= 0
    certified: np.ndarray  # (N,) bool: smoothing did not abstain / bounds verified
    attacked: np.ndarray | None  # (N,) bool; None when no attack was run
    stated_correct: np.ndarray  # (N,) int8: the row's own "correct" field, 1/0, -1 when absent

    def __len__(self) -> int:
        return len(self.label)

    @property
    def correct(self) -> np.ndarray:
        return (self.prediction == self.label) & (self.prediction != ABSTAIN)

    @property
    def correct_certified(self) -> np.ndarray:
        return self.correct & self.certified

    def certified_at(self, r: float) -> np.ndarray:
        """(N,) bool: correct and certified with a radius of at least r."""
        return self.correct_certified & (self.radius >= r)


@dataclass(frozen=True)
class _Run:
    cert: Mapping
    family: str  # "smoothing" | "bounds"
    procedure: str | None  # bounds: "verify" | "radius"
    method: Mapping
    attack: Mapping | None
    rows: _Rows

    @property
    def verify_mode(self) -> bool:
        return self.family == "bounds" and self.procedure == "verify"

    @property
    def sequential(self) -> str | None:
        """"sequential-target" / "sequential-budget" for sequential smoothing, else None."""
        procedure = self.method.get("procedure")
        return procedure if self.family == "smoothing" and procedure in _SEQUENTIAL else None

    def samples(self) -> np.ndarray | None:
        """(N,) noise samples per input, where every row records them as an integer."""
        values = [row.get("num_samples") for row in self.cert["results"]]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            return None
        return np.array(values, dtype=np.int64)

    def fixed_samples_per_input(self) -> int | None:
        """Sequential: what fixed-n CERTIFY at the same budget draws per input."""
        budget = self.method.get("max_samples" if self.sequential == "sequential-target" else "n")
        n0 = self.method.get("n0")
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (budget, n0))
        return n0 + budget if ok else None

    @property
    def norm(self) -> str | None:
        norm = self.method.get("norm")
        return norm if isinstance(norm, str) else None

    def number(self, key: str) -> float | None:
        return _finite(self.method.get(key))

    @property
    def attack_eps(self) -> float | None:
        """The radius the attack searched: the attack's own eps, else the method's."""
        if self.attack is None:
            return None
        eps = _finite(self.attack.get("eps"))
        return eps if eps is not None else self.number("eps")


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def _mapping(value, name: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be an object, got {type(value).__name__}")
    return value


def _integer(row: Mapping, key: str, where: str) -> int:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}['{key}'] must be an integer, got {value!r}")
    return int(value)


def _read(cert) -> _Run:
    if not isinstance(cert, Mapping):
        raise TypeError(f"cert must be a dict (a loaded certificate), got {type(cert).__name__}")
    if cert.get("schema") not in SCHEMAS:
        raise ValueError(f"cert['schema'] must be one of {SCHEMAS}, got {cert.get('schema')!r}")
    method = _mapping(cert.get("method"), "cert['method']")
    family = method.get("family")
    if family not in ("smoothing", "bounds"):
        raise ValueError(f"cert['method']['family'] must be 'smoothing' or 'bounds', got {family!r}")
    procedure = method.get("procedure")
    if family == "smoothing" and procedure not in (None, "certify") + _SEQUENTIAL:
        raise ValueError(f"cert['method']['procedure'] must be 'certify' or one of {_SEQUENTIAL} for smoothing, "
                         f"got {procedure!r}")
    if family == "bounds" and procedure not in ("verify", "radius"):
        raise ValueError(f"cert['method']['procedure'] must be 'verify' or 'radius' for bounds, got {procedure!r}")
    attack = None
    if family == "bounds" and method.get("attack") is not None:
        attack = _mapping(method["attack"], "cert['method']['attack']")
    results = cert.get("results")
    if not isinstance(results, (list, tuple)):
        raise TypeError(f"cert['results'] must be a list of rows, got {type(results).__name__}")

    n = len(results)
    label = np.zeros(n, np.int64)
    prediction = np.zeros(n, np.int64)
    radius = np.zeros(n, np.float64)
    certified = np.zeros(n, bool)
    attacked = np.zeros(n, bool) if attack is not None else None
    stated_correct = np.full(n, -1, np.int8)
    for i, row in enumerate(results):
        where = f"cert['results'][{i}]"
        if not isinstance(row, Mapping):
            raise TypeError(f"{where} must be an object, got {type(row).__name__}")
        label[i] = _integer(row, "label", where)
        prediction[i] = _integer(row, "prediction", where)
        r = row.get("radius")
        if r is None:  # an abstain may leave its radius out
            r = 0.0
        if isinstance(r, bool) or not isinstance(r, numbers.Real):
            raise TypeError(f"{where}['radius'] must be a number, got {r!r}")
        if not math.isfinite(r) or r < 0:
            raise ValueError(f"{where}['radius'] must be a finite number >= 0, got {r!r}")
        radius[i] = r
        if family == "smoothing":
            certified[i] = prediction[i] != ABSTAIN
        else:
            if not isinstance(row.get("verified"), bool):
                raise TypeError(f"{where}['verified'] must be true or false, got {row.get('verified')!r}")
            certified[i] = row["verified"]
        if attacked is not None:
            if not isinstance(row.get("attacked"), bool):
                raise TypeError(f"{where}['attacked'] must be true or false when the method ran an attack, "
                                 f"got {row.get('attacked')!r}")
            attacked[i] = row["attacked"]
        if isinstance(row.get("correct"), bool):
            stated_correct[i] = row["correct"]
    rows = _Rows(label, prediction, radius, certified, attacked, stated_correct)
    return _Run(cert, family, procedure if family == "bounds" else None, method, attack, rows)


def _sequential_table(run: _Run) -> _Table | None:
    """Sequential smoothing: samples per input against fixed n, and the certified fraction at the target."""
    samples = run.samples()
    if run.sequential is None or samples is None or len(samples) == 0:
        return None
    rows = []
    if run.sequential == "sequential-target":
        r = run.rows
        target = _text(run.method.get("target_radius"))
        rows.append((_cell(f"Certified at the target radius {target} (any class)"),
                     _cell(_pct(int(r.certified.sum()), len(r)))))
        rows.append((_cell(f"Certified at {target} with the label (certified accuracy)"),
                     _cell(_pct(int(r.correct_certified.sum()), len(r)))))
    quantiles = np.percentile(samples, [0, 50, 90, 100])
    rows.append((_cell("Samples per input: mean / median / 90th percentile / min / max"),
                 _cell(f"{samples.mean():,.0f} / {quantiles[1]:,.0f} / {quantiles[2]:,.0f} / {quantiles[0]:,.0f} / "
                       f"{quantiles[3]:,.0f}")))
    fixed = run.fixed_samples_per_input()
    if fixed is not None:
        rows.append((_cell("Fixed-n CERTIFY at the same budget, per input"), _cell(f"{fixed:,}")))
        rows.append((_cell("Samples saved"), _cell(f"{fixed * len(samples) / max(1, samples.sum()):.1f}x fewer "
                                                   f"({samples.sum():,} drawn against {fixed * len(samples):,})")))
    looks = run.method.get("looks")
    if isinstance(looks, list):
        rows.append((_cell("Looks (boundary)"), _cell(f"{len(looks)} ({_text(run.method.get('boundary'))})")))
    return _Table(("Quantity", "Value"), tuple(rows))


# ----------------------------------------------------------------------------------------------------
# The content, shared by both renderers: they differ only in how they escape and lay it out


@dataclass(frozen=True)
class _Code:
    """Verbatim text from the certificate (a file name, a hash): a code span in Markdown, <code> in HTML."""

    text: str


_Part = str | _Code
_Cell = tuple[_Part, ...]


@dataclass(frozen=True)
class _Table:
    header: tuple[str, ...]
    rows: tuple[tuple[_Cell, ...], ...]


@dataclass(frozen=True)
class _Content:
    title: str
    guarantee: str
    facts: _Table  # what was certified
    summary: _Table
    gap: tuple[str, ...]  # bounds: proven vs observed under attack, in words
    radii_title: str
    radii: _Table
    radii_notes: tuple[str, ...]
    per_class: _Table
    sequential: _Table | None  # sequential smoothing: samples used, saving, certified fraction
    notes: tuple[str, ...]  # what is missing, edge cases
    consistency: tuple[str, ...]


def _cell(*parts: _Part) -> _Cell:
    return tuple(parts)


def _pct(k: int, n: int) -> str:
    return "n/a (no inputs)" if n == 0 else f"{100.0 * k / n:.1f} % ({k}/{n})"


def _num(x: float) -> str:
    return f"{x:.4g}"


def _text(value) -> str:
    if value is None:
        return _NOT_RECORDED
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items())
    return str(value)


def _fields(entry: Mapping) -> str:
    """", key value, ..." for the fields of a model or data entry other than its file and hash."""
    return "".join(f", {k} {_text(v)}" for k, v in entry.items() if k not in ("path", "sha256") and v is not None)


def _file(entry: Mapping, what: str) -> _Cell:
    """`path` (sha256 `0123456789ab…`): the file and the first digits of its hash."""
    path, sha = entry.get("path"), entry.get("sha256")
    parts: list[_Part] = [_Code(str(path)) if path is not None else f"{what} file {_NOT_RECORDED}"]
    if isinstance(sha, str) and sha:
        parts += [" (sha256 ", _Code(sha[:_SHA_PREFIX] + ("…" if len(sha) > _SHA_PREFIX else "")), ")"]
    else:
        parts.append(f" (sha256 {_NOT_RECORDED})")
    return tuple(parts)


def _title(run: _Run) -> str:
    m = run.method
    if run.sequential == "sequential-target":
        return (f"Certification report: sequential randomized smoothing at radius {_text(m.get('target_radius'))}, "
                f"{_text(m.get('noise'))} noise (scale {_text(m.get('scale'))}), {_text(m.get('norm'))}")
    if run.family == "smoothing":
        return (f"Certification report: {'sequential ' if run.sequential else ''}randomized smoothing, {_text(m.get('noise'))} noise "
                f"(scale {_text(m.get('scale'))}), {_text(m.get('norm'))} radius")
    if run.verify_mode:
        return (f"Certification report: bound propagation, {_text(m.get('method'))}, "
                f"verified at eps = {_text(m.get('eps'))} ({_text(m.get('norm'))})")
    return (f"Certification report: bound propagation, {_text(m.get('method'))}, "
            f"largest certified radius up to {_text(m.get('max_eps'))} ({_text(m.get('norm'))})")


def _facts(run: _Run) -> _Table:
    cert, m = run.cert, run.method
    model = _mapping(cert.get("model"), "cert['model']")
    data = _mapping(cert.get("data"), "cert['data']")
    model_cell = _file(model, "model") + (_fields(model),)
    data_cell = _file(data, "data") + (_fields(data) + f", {len(run.rows)} rows",)
    skip = {"family", "seed", "attack", "looks", "critical"}  # sequential tables: summarised below
    # null parameters belong to the other procedure (eps in radius mode, max_eps in verify mode)
    parameters = ", ".join(f"{k} {_text(v)}" for k, v in m.items() if k not in skip and v is not None)
    if isinstance(m.get("looks"), list):
        parameters += f", {len(m['looks'])} looks (listed in the certificate with their critical counts)"
    rows = [
        (_cell("Model"), model_cell),
        (_cell("Data"), data_cell),
        (_cell("Method"), _cell(f"{run.family}: {parameters}")),
    ]
    if run.family == "bounds":
        attack = "none: no attack was run" if run.attack is None else _text(run.attack)
        rows.append((_cell("Attack"), _cell(attack)))
    if "seed" in m:
        seed = _text(m["seed"])
    elif run.attack is not None and "seed" in run.attack:
        seed = f"{_text(run.attack['seed'])} (the attack's)"
    elif run.family == "bounds" and run.attack is None:
        seed = "none needed: bound propagation is deterministic"
    else:
        seed = _NOT_RECORDED
    rows.append((_cell("Seed"), _cell(seed)))
    tool = _mapping(cert.get("tool"), "cert['tool']")
    rows.append((_cell("Tool"), _cell(_text(tool) if tool else _NOT_RECORDED)))
    rows.append((_cell("Created"), _cell(_text(cert.get("created")))))
    signature = cert.get("signature")
    if isinstance(signature, Mapping) and signature.get("value"):
        key = str(signature.get("public_key", ""))
        sig = _cell(f"signed ({_text(signature.get('algorithm'))}, public key ",
                    _Code(key[:16] + ("…" if len(key) > 16 else "")),
                    "); this report does not check the signature")
    else:
        sig = _cell("not signed")
    rows.append((_cell("Signature"), sig))
    return _Table(("Item", "Value"), tuple(rows))


def _summary(run: _Run) -> _Table:
    r = run.rows
    n = len(r)
    rows = [(_cell("Inputs (rows)"), _cell(str(n)))]
    if run.sequential == "sequential-target":  # a prediction is made only where it is certified
        rows.append((_cell("Not certified at the target radius"), _cell(_pct(int((~r.certified).sum()), n))))
    else:
        rows.append((_cell("Clean accuracy"), _cell(_pct(int(r.correct.sum()), n))))
    if run.family == "smoothing" and run.sequential != "sequential-target":
        rows.append((_cell("Abstain rate"), _cell(_pct(int((r.prediction == ABSTAIN).sum()), n))))
    else:
        rows.append((_cell("Verified accuracy"), _cell(_pct(int(r.correct_certified.sum()), n))))
        if r.attacked is not None:
            pgd = int((r.correct & ~r.attacked).sum())
            name = f"PGD accuracy at eps = {_text(run.attack_eps)} (upper bound)"
            rows.append((_cell(name), _cell(_pct(pgd, n))))
    mean = _mean_certified_radius(r, np.ones(n, bool))
    rows.append((_cell("Mean radius of correct certified inputs"), _cell(mean)))
    results = run.cert["results"]
    samples = [row.get("num_samples") for row in results]
    if run.family == "smoothing" and samples and all(isinstance(k, int) for k in samples):
        rows.append((_cell("Noise samples drawn"), _cell(f"{sum(samples):,}")))
    seconds = [_finite(row.get("seconds")) for row in results]
    if seconds and None not in seconds:
        rows.append((_cell("Certification time (sum over the rows)"), _cell(f"{sum(seconds):.4g} s")))
    return _Table(("Quantity", "Value"), tuple(rows))


def _mean_certified_radius(r: _Rows, mask: np.ndarray) -> str:
    chosen = mask & r.correct_certified
    return _num(float(r.radius[chosen].mean())) if chosen.any() else "none certified"


def _gap(run: _Run) -> tuple[str, ...]:
    """Bounds: what verification proves against what the attack observes, at the attack's radius."""
    if run.family != "bounds":
        return ()
    r = run.rows
    n = len(r)
    eps = run.attack_eps if run.attack is not None else run.number("eps")
    if n == 0:
        return ("No inputs: nothing was proven or attacked.",)
    if run.method.get("method") == "bab":
        return _decided(run)
    if run.attack is None:
        proven = int(r.correct_certified.sum())
        hint = ("Verify at one eps (certify bounds --eps, where the PGD attack runs by default) to see how much of "
                "the rest an attack can break." if run.number("eps") is None else
                "Run with an attack (--attack) to see how much of the rest an attack can break.")
        return (f"No attack was run, so only a lower bound on robust accuracy is known: proven {_pct(proven, n)}.",
                hint)
    if eps is None:
        return ("The attack's eps is not recorded, so proven and observed accuracy cannot be compared.",)
    proven = int(r.certified_at(eps).sum())
    observed = int((r.correct & ~r.attacked).sum())
    norm = f" ({run.norm})" if run.norm else ""
    gap = (f"At eps = {_num(eps)}{norm}: proven {100.0 * proven / n:.1f} %, observed under attack "
           f"{100.0 * observed / n:.1f} %: at most {100.0 * (observed - proven) / n:.1f} points of robust accuracy "
           f"are unaccounted for ({observed - proven} of {n} inputs).")
    between = ("The true robust accuracy lies between the two: verification proves the lower end, "
               "the attack shows the upper end.")
    sentences = [gap, between]
    if run.verify_mode and run.number("eps") is not None and eps > run.number("eps"):
        sentences.append(f"The attack's eps ({_num(eps)}) exceeds the verified eps ({_num(run.number('eps'))}): "
                         "nothing is proven at the attack's radius.")
    contradictions = _broken_proofs(run)
    if contradictions:
        sentences.append(f"Contradiction: {contradictions} input(s) proven robust at eps = {_num(eps)} were broken "
                         "by the attack. "
                         "A sound verifier and a correct attack cannot both hold on these rows.")
    return tuple(sentences)


def _decided(run: _Run) -> tuple[str, ...]:
    """Complete mode: decided against undecided, in place of proven against observed."""
    statuses = [row.get("status") for row in run.cert.get("results", [])]
    n = len(statuses)
    verified, falsified = statuses.count("verified"), statuses.count("falsified")
    unknown = n - verified - falsified
    eps = run.number("eps")
    at = f"At eps = {_num(eps)}{f' ({run.norm})' if run.norm else ''}: " if eps is not None else ""
    sentences = [f"{at}complete verification decided {verified + falsified} of {n} inputs: verified "
                 f"{100.0 * verified / n:.1f} %, falsified {100.0 * falsified / n:.1f} % (a counterexample each, "
                 f"which verify-certificate --audit replays, or misclassified as given), unknown "
                 f"{100.0 * unknown / n:.1f} %."]
    if unknown:
        sentences.append(f"The robust accuracy lies between {100.0 * verified / n:.1f} % and "
                         f"{100.0 * (verified + unknown) / n:.1f} %: the unknown inputs ran out of time.")
    else:
        sentences.append(f"Every input is decided: {100.0 * verified / n:.1f} % proven robust, the rest broken by "
                         "a counterexample the model fails on in float32 and float64.")
    return tuple(sentences)


def _broken_proofs(run: _Run) -> int:
    """Rows certified at the attack's eps that the attack nevertheless broke: a sound verifier and a correct
    attack cannot both hold on such a row. (In radius mode a row certified only below the attack's eps may
    be attacked: that is no contradiction.)"""
    r, eps = run.rows, run.attack_eps
    if r.attacked is None or eps is None:
        return 0
    return int((r.certified_at(eps) & r.attacked).sum())


def _table_radii(run: _Run) -> list[float]:
    """The radii of the certified-accuracy table: the summary's, else a small default grid."""
    summary = _mapping(run.cert.get("summary"), "cert['summary']")
    listed = summary.get("certified_accuracy")
    if isinstance(listed, (list, tuple)):
        radii = [_finite(e.get("radius")) for e in listed if isinstance(e, Mapping)]
        radii = sorted({r for r in radii if r is not None and r >= 0})
        if radii:
            return radii
    if run.verify_mode:
        eps = run.number("eps")
        return [eps] if eps is not None else [0.0]
    r = run.rows
    top = run.number("max_eps") or float(r.radius[r.correct_certified].max(initial=0.0))
    if top <= 0:
        return [0.0]
    return sorted({float(f"{x:.3g}") for x in np.linspace(0.0, top, 5)})


def _searched_limit(run: _Run) -> tuple[float | None, str]:
    """The largest radius the run looked at, beyond which no row can carry a certificate."""
    if run.verify_mode:
        return run.number("eps"), "verify mode checked only eps"
    if run.family == "bounds":
        return run.number("max_eps"), "the radius search stopped at max_eps"
    return None, ""


def _radii_table(run: _Run, radii: list[float]) -> tuple[_Table, tuple[str, ...]]:
    r = run.rows
    n = len(r)
    limit, why = _searched_limit(run)
    rows = []
    beyond = False
    for radius in radii:
        note = ""
        if limit is not None and radius > limit:
            note = " *"
            beyond = True
        rows.append((_cell(_num(radius) + note), _cell(_pct(int(r.certified_at(radius).sum()), n))))
    notes = []
    if beyond:
        notes.append(f"* Beyond {_num(limit)}: {why}, so no row can be certified there: 0 means 'not checked', "
                     "not 'not robust'.")
    return _Table(("Radius", "Certified accuracy"), tuple(rows)), tuple(notes)


def _column_radii(radii: list[float]) -> list[float]:
    positive = [x for x in radii if x > 0]
    if len(positive) <= _MAX_RADIUS_COLUMNS:
        return positive
    picks = np.unique(np.linspace(0, len(positive) - 1, _MAX_RADIUS_COLUMNS).round().astype(int))
    return [positive[i] for i in picks]


def _per_class(run: _Run, radii: list[float]) -> _Table:
    r = run.rows
    columns = _column_radii(radii)
    header = ["Label", "Inputs", "Clean accuracy"]
    if run.family == "smoothing":
        header.append("Abstain")
    if run.verify_mode:
        header.append(f"Verified at eps = {_text(run.method.get('eps'))}")
    else:
        header += [f"Certified at r = {_num(x)}" for x in columns]
    if r.attacked is not None:
        header.append("PGD accuracy")
    header.append("Mean radius (correct, certified)")

    def line(name: str, mask: np.ndarray) -> tuple[_Cell, ...]:
        k = int(mask.sum())
        cells = [name, str(k), _pct(int((r.correct & mask).sum()), k)]
        if run.family == "smoothing":
            cells.append(_pct(int(((r.prediction == ABSTAIN) & mask).sum()), k))
        if run.verify_mode:
            cells.append(_pct(int((r.correct_certified & mask).sum()), k))
        else:
            cells += [_pct(int((r.certified_at(x) & mask).sum()), k) for x in columns]
        if r.attacked is not None:
            cells.append(_pct(int((r.correct & ~r.attacked & mask).sum()), k))
        cells.append(_mean_certified_radius(r, mask))
        return tuple(_cell(c) for c in cells)

    lines = [line(str(label), r.label == label) for label in np.unique(r.label)]
    if len(r):
        lines.append(line("all", np.ones(len(r), bool)))
    return _Table(tuple(header), tuple(lines))


def _notes(run: _Run) -> tuple[str, ...]:
    r = run.rows
    n = len(r)
    notes = []
    if not isinstance(run.cert.get("guarantee"), str) or not run.cert["guarantee"].strip():
        notes.append("The certificate states no guarantee.")
    if n == 0:
        notes.append("The certificate has no rows: there is nothing to report per input or per class.")
    elif n == 1:
        notes.append("A single input: every accuracy is 0 % or 100 %, and says little about the model.")
    if n and len(np.unique(r.label)) == 1:
        notes.append(f"One class only (label {int(r.label[0])}): the per-class numbers equal the totals.")
    if run.family == "smoothing" and n and (r.prediction == ABSTAIN).all():
        notes.append("Every input abstained: the smoothed classifier committed to no prediction.")
    if n and len(_histogram_radii(r)) == 0:
        notes.append("No input was certified correct, so there is no radius histogram.")
    if run.family == "bounds" and run.attack is None:
        notes.append("No attack was run: there is no PGD accuracy, so no upper bound on robust accuracy.")
    if not isinstance(run.cert.get("signature"), Mapping):
        notes.append("The certificate is not signed.")
    if not isinstance(run.cert.get("summary"), Mapping):
        notes.append("The certificate has no summary: every number here comes from the rows.")
    return tuple(notes)


def _consistency(run: _Run) -> tuple[str, ...]:
    """Where the certificate's summary, or a row's own `correct` field, disagrees with the rows."""
    r = run.rows
    n = len(r)
    found = []
    wrong_correct = int(((r.stated_correct >= 0) & (r.stated_correct.astype(bool) != r.correct)).sum())
    if wrong_correct:
        found.append(f"{wrong_correct} row(s) have a 'correct' field that disagrees with prediction == label.")
    uncertified = int((~r.certified & (r.radius > 0)).sum())
    if uncertified:
        found.append(f"{uncertified} row(s) carry a radius > 0 but are not certified; the report ignores "
                     "their radius.")
    if _broken_proofs(run):
        found.append(f"{_broken_proofs(run)} row(s) are certified at the attack's eps and yet attacked.")
    summary = run.cert.get("summary")
    if not isinstance(summary, Mapping):
        return tuple(found)
    stated_n = summary.get("num_inputs")
    if stated_n is not None and stated_n != n:
        found.append(f"summary num_inputs is {_text(stated_n)}, the rows number {n}.")
    if n == 0:
        return tuple(found)

    def check(name: str, stated, k: int) -> None:
        stated = _finite(stated) if stated is not None else None
        if stated is not None and abs(stated - k / n) > _SUMMARY_TOLERANCE:
            found.append(f"summary {name} is {stated:.6g}, the rows give {k / n:.6g} ({k}/{n}).")

    check("clean_accuracy", summary.get("clean_accuracy"), int(r.correct.sum()))
    if run.family == "smoothing":
        check("abstain_rate", summary.get("abstain_rate"), int((r.prediction == ABSTAIN).sum()))
    else:
        check("verified_accuracy", summary.get("verified_accuracy"), int(r.correct_certified.sum()))
        if r.attacked is not None:
            check("pgd_accuracy", summary.get("pgd_accuracy"), int((r.correct & ~r.attacked).sum()))
    for entry in summary.get("certified_accuracy") or ():
        radius = _finite(entry.get("radius")) if isinstance(entry, Mapping) else None
        if radius is not None:
            check(f"certified_accuracy at radius {_num(radius)}", entry.get("accuracy"),
                  int(r.certified_at(radius).sum()))
    return tuple(found)


def _content(run: _Run) -> _Content:
    radii = _table_radii(run)
    radii_table, radii_notes = _radii_table(run, radii)
    guarantee = run.cert.get("guarantee")
    return _Content(
        title=_title(run),
        guarantee=guarantee if isinstance(guarantee, str) and guarantee.strip() else "No guarantee stated.",
        facts=_facts(run),
        summary=_summary(run),
        gap=_gap(run),
        radii_title="Certified accuracy by radius",
        radii=radii_table,
        radii_notes=radii_notes,
        per_class=_per_class(run, radii),
        sequential=_sequential_table(run),
        notes=_notes(run),
        consistency=_consistency(run),
    )


_CONSISTENT = "The summary agrees with the rows."


# ----------------------------------------------------------------------------------------------------
# Markdown

# Characters that Markdown (CommonMark + GFM tables) would read as markup; a backslash makes each literal.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#])")


def _md_plain(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", re.sub(r"\s+", " ", text))


def _md_code(text: str, in_table: bool) -> str:
    text = text.replace("\r", " ").replace("\n", " ")
    if not text:
        return "(empty)"
    # A code span shows its content verbatim; its fence must be longer than any run of backticks inside.
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    if in_table:  # GFM splits table cells on '|' before it sees code spans
        text = text.replace("|", "\\|")
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_cell(cell: _Cell, in_table: bool = True) -> str:
    return "".join(_md_code(p.text, in_table) if isinstance(p, _Code) else _md_plain(p) for p in cell)


def _md_table(table: _Table) -> list[str]:
    lines = ["| " + " | ".join(_md_plain(h) for h in table.header) + " |",
             "|" + "|".join("---" for _ in table.header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return lines


def render_markdown(cert: dict) -> str:
    """A Markdown report of a certificate (schema "certify.certificate/2" or /1); see the module docstring.

    Raises TypeError when cert, or a field the report needs, has the wrong type (a row without an integer
    label, say), ValueError when a value is not one it can read (another schema, an unknown method family,
    a negative radius).
    """
    c = _content(_read(cert))
    out = [f"# {_md_plain(c.title)}", "", f"> {_md_plain(c.guarantee)}", "", "## What was certified", ""]
    out += _md_table(c.facts)
    out += ["", "## Summary", ""] + _md_table(c.summary)
    if c.gap:
        out += ["", _md_plain(" ".join(c.gap))]
    if c.sequential is not None:
        out += ["", "## Sequential sampling", ""] + _md_table(c.sequential)
    out += ["", f"## {_md_plain(c.radii_title)}", ""] + _md_table(c.radii)
    out += [""] + [_md_plain(note) for note in c.radii_notes] + ([""] if c.radii_notes else [])
    out += ["## Per class", ""] + (_md_table(c.per_class) if c.per_class.rows else ["No rows."])
    if c.notes:
        out += ["", "## Notes", ""] + [f"- {_md_plain(note)}" for note in c.notes]
    out += ["", "## Consistency", ""]
    out += [f"- {_md_plain(line)}" for line in c.consistency] or [_md_plain(_CONSISTENT)]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------
# HTML with plots


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("render_html draws its plots with matplotlib, which is not installed "
                          "(pip install matplotlib)") from error
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> str:
    buffer = io.BytesIO()
    # No "Software" text chunk: the same certificate gives the same bytes. Radii near the largest
    # double (--max-eps 1e308) overflow inside matplotlib's tick spacing, harmlessly: not a warning.
    with np.errstate(over="ignore", invalid="ignore"):
        figure.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _radius_label(run: _Run) -> str:
    # Only a known norm goes into a plot: matplotlib would read '$' in free text as mathtext.
    return f"radius ({run.norm})" if run.norm in ("l1", "l2", "linf") else "radius"


def _accuracy_steps(radius: np.ndarray, good: np.ndarray, x_max: float) -> tuple[np.ndarray, np.ndarray]:
    """The certified-accuracy curve a(r) = #{i: good_i and radius_i >= r} / N, exactly.

    a is constant on each interval (u_{j-1}, u_j] between consecutive distinct radii u_j, so evaluating it at
    0, at every u_j and at x_max, and drawing with steps where="pre" (interval (x[i-1], x[i]] takes y[i]),
    gives the curve exactly, with no grid to choose. Requires x_max > every radius.
    """
    sorted_radii = np.sort(radius[good])
    xs = np.concatenate([[0.0], np.unique(sorted_radii[sorted_radii > 0]), [x_max]])
    ys = (len(sorted_radii) - np.searchsorted(sorted_radii, xs, side="left")) / len(radius)
    return xs, ys


def _curve_png(run: _Run) -> str:
    r = run.rows
    limit = run.number("max_eps") if run.family == "bounds" else None
    top = max([float(r.radius[r.correct_certified].max(initial=0.0)), limit or 0.0, run.attack_eps or 0.0])
    x_max = 1.05 * top if top > 0 else 1.0
    xs, ys = _accuracy_steps(r.radius, r.correct_certified, x_max)
    figure = _figure(6.0, 3.6)
    ax = figure.add_subplot()
    ax.step(xs, ys, where="pre", color="C0", label="certified accuracy (from the rows)")
    # Clean accuracy is where the curve would start if every correct prediction were certified.
    ax.plot([0.0], [float(r.correct.mean())], "o", color="0.4", clip_on=False, label="clean accuracy")
    if limit is not None:
        ax.axvline(limit, color="0.5", linestyle=":", label="max_eps (search limit)")
    if r.attacked is not None and run.attack_eps is not None:
        pgd = float((r.correct & ~r.attacked).mean())
        ax.plot([run.attack_eps], [pgd], "v", color="C3", label="PGD accuracy (upper bound)")
    ax.set_xlim(0.0, x_max)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(_radius_label(run))
    ax.set_ylabel("fraction of inputs")
    ax.set_title("Certified accuracy vs radius")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _png(figure)


def _bars_png(run: _Run) -> str:
    r = run.rows
    eps = run.number("eps")
    names = ["clean", "verified" + (f"\n(eps = {_num(eps)})" if eps is not None else "")]
    values = [float(r.correct.mean()), float(r.correct_certified.mean())]
    if r.attacked is not None:
        names.append("PGD attack\n(upper bound)")
        values.append(float((r.correct & ~r.attacked).mean()))
    figure = _figure(5.0, 3.4)
    ax = figure.add_subplot()
    bars = ax.bar(range(len(values)), values, color=["0.6", "C0", "C3"][: len(values)])
    ax.bar_label(bars, labels=[f"{100 * v:.1f} %" for v in values])
    ax.set_xticks(range(len(values)), names)
    ax.set_ylim(0.0, 1.12)
    ax.set_ylabel("fraction of inputs")
    ax.set_title("Clean, verified and attacked accuracy")
    return _png(figure)


def _histogram_radii(r: _Rows) -> np.ndarray:
    """The radii of the correct certified inputs (a certificate of radius 0 certifies nothing)."""
    return r.radius[r.correct_certified & (r.radius > 0)]


def _histogram_png(run: _Run) -> str:
    r = run.rows
    radii = _histogram_radii(r)
    figure = _figure(6.0, 3.2)
    ax = figure.add_subplot()
    bins = int(min(30, max(5, math.ceil(math.sqrt(len(radii))))))
    ax.hist(radii, bins=bins, range=(0.0, float(radii.max())), color="C0", edgecolor="white")
    ax.set_xlabel(_radius_label(run))
    ax.set_ylabel("inputs")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"Radii of the {len(radii)} correct certified inputs")
    return _png(figure)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 62rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
blockquote { margin: 1rem 0; padding: 0.5rem 1rem; background: #f5f7fa; border-left: 4px solid #4a7bd0; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; background: #f3f3f3;
       padding: 0 0.2em; word-break: break-all; }
figure { margin: 1rem 0; } img { max-width: 100%; height: auto; }
.gap { background: #fff8e6; border: 1px solid #e8c96a; padding: 0.5rem 1rem; }
.missing { color: #6b6b6b; font-style: italic; }
"""


def _samples_png(run: _Run) -> str:
    """Samples used per input (log-spaced bins), with fixed-n CERTIFY's count for comparison."""
    samples = run.samples()
    fixed = run.fixed_samples_per_input()
    figure = _figure(6.0, 3.2)
    ax = figure.add_subplot()
    top = max(int(samples.max()), fixed or 0, 2)
    bins = np.unique(np.geomspace(max(1, int(samples.min())), top * 1.05, 30).astype(np.int64))
    ax.hist(samples, bins=bins if len(bins) > 1 else 10, color="C0", edgecolor="white")
    ax.set_xscale("log")
    if fixed is not None:
        ax.axvline(fixed, color="C3", linestyle="--", label=f"fixed n: {fixed:,} per input")
        ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("noise samples used (n0 + estimation)")
    ax.set_ylabel("inputs")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"Samples per input, mean {samples.mean():,.0f}")
    return _png(figure)


def _html_cell(cell: _Cell) -> str:
    return "".join(f"<code>{html.escape(p.text)}</code>" if isinstance(p, _Code) else html.escape(p)
                   for p in cell)


def _html_table(table: _Table) -> list[str]:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.header) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in table.rows]
    return out + ["</table>"]


def _html_figure(uri: str, alt: str) -> str:
    return (f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def render_html(cert: dict) -> str:
    """One self-contained HTML page (inline CSS, PNG plots as data: URIs, no script, no external URL).

    The same content as render_markdown, plus: certified accuracy against radius (a bar chart of clean,
    verified and PGD accuracy in bounds verify mode) and a histogram of the radii of the correct certified
    inputs. Needs matplotlib. Raises like render_markdown.
    """
    run = _read(cert)
    c = _content(run)
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(c.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           f"<h1>{esc(c.title)}</h1>", f"<blockquote>{esc(c.guarantee)}</blockquote>",
           "<h2>What was certified</h2>"]
    out += _html_table(c.facts)
    out += ["<h2>Summary</h2>"] + _html_table(c.summary)
    if c.gap:
        out.append(f'<p class="gap">{esc(" ".join(c.gap))}</p>')
    if c.sequential is not None:
        out += ["<h2>Sequential sampling</h2>"] + _html_table(c.sequential)
        out.append(_html_figure(_samples_png(run), "Samples used per input against fixed-n CERTIFY"))
    out += [f"<h2>{esc(c.radii_title)}</h2>"] + _html_table(c.radii)
    out += [f"<p>{esc(note)}</p>" for note in c.radii_notes]
    if len(run.rows) == 0:
        out.append('<p class="missing">No inputs: no plots.</p>')
    else:
        if run.verify_mode:
            out.append(_html_figure(_bars_png(run), "Clean, verified and PGD accuracy"))
        else:
            out.append(_html_figure(_curve_png(run), "Certified accuracy against radius, computed from the rows"))
        if len(_histogram_radii(run.rows)) == 0:
            out.append('<p class="missing">No input was certified correct: no radius histogram.</p>')
        elif run.sequential == "sequential-target":
            out.append(f'<p class="missing">At a target radius every certified input has radius '
                       f'{esc(_text(run.method.get("target_radius")))}: no histogram.</p>')
        elif run.verify_mode:
            eps = run.number("eps")
            out.append(f'<p class="missing">In verify mode every certified input has radius '
                       f'{esc(_num(eps) if eps is not None else "eps")}: no histogram.</p>')
        else:
            out.append(_html_figure(_histogram_png(run), "Histogram of the radii of correct certified inputs"))
    out += ["<h2>Per class</h2>"] + (_html_table(c.per_class) if c.per_class.rows else ["<p>No rows.</p>"])
    if c.notes:
        out += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{esc(note)}</li>" for note in c.notes] + ["</ul>"]
    out.append("<h2>Consistency</h2>")
    if c.consistency:
        out += ["<ul>"] + [f"<li>{esc(line)}</li>" for line in c.consistency] + ["</ul>"]
    else:
        out.append(f"<p>{esc(_CONSISTENT)}</p>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------
# Files


def write_report(cert: dict, html_path: str | os.PathLike | None = None,
                 markdown_path: str | os.PathLike | None = None) -> None:
    """Writes the HTML and/or Markdown report of `cert`, each atomically.

    Both documents are rendered before either file is touched, so an unreadable certificate writes
    nothing. Each file is written to a temporary file in its own folder and moved over the target with
    os.replace: a crash leaves either the old file or the new one, never half a report.
    """
    if html_path is None and markdown_path is None:
        raise ValueError("write_report needs html_path, markdown_path or both")
    targets = [(p, render) for p, render in ((markdown_path, render_markdown), (html_path, render_html))
               if p is not None]
    if len(targets) == 2 and Path(html_path).resolve() == Path(markdown_path).resolve():
        raise ValueError(f"html_path and markdown_path must differ, both are {html_path!r}")
    documents = [(Path(path), render(cert)) for path, render in targets]
    for path, text in documents:
        write_text_atomic(path, text)
