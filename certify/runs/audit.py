"""Auditing a certificate: re-certify random inputs from the model and data files and compare.

The model and data must hash to the certificate's SHA-256 (a swapped file is caught here), and the
re-certified rows must agree: exactly for smoothing (the noise of input i is a function of the
seed, i and the sample index, so the counts are reproducible), and for bound propagation in the
decision (prediction, verified, radius, attacked) with the margin to float rounding. Complete mode
(branch and bound) replays each picked row's search with the row's domain count as its budget
instead of the clock, so a verified or falsified row is decided the same way on any machine; an
"unknown" row claims nothing, and its replay may decide it.
"""

from __future__ import annotations

import copy
import math
import secrets
from pathlib import Path

from certify.formats import DataFileError
from certify.formats.data_files import BUILTIN_DIGITS, load_data
from certify.formats.model_files import sha256_file
from certify.runs.run import make_job, prepare

__all__ = ["audit_certificate"]

SMOOTHING_FIELDS = ("label", "prediction", "correct", "radius", "p_lower", "counts", "num_samples", "certified",
                    "selected", "look_hits")  # the last three: sequential rows only
BOUNDS_FIELDS = ("label", "prediction", "correct", "verified", "radius", "attacked", "float32_disagrees", "status")
SEARCH_FIELDS = ("verified", "radius", "status")  # what complete mode's search decides


def audit_certificate(cert: dict, cert_path: Path, count: int, model_path=None, data_spec=None, *,
                      arch: str | None = None, trust_code: bool = False) -> list[tuple]:
    """[(check, passed, detail)] for the files' hashes and `count` re-certified random inputs.

    Nothing in the certificate decides what code runs: a state dict's architecture comes from
    `arch` (the auditor's --arch), never from the certificate's record of it, and model formats
    that run code while loading need the auditor's trust_code."""
    model_file = _locate(model_path or cert["model"]["path"], cert_path)
    data = data_spec or cert["data"]["path"]
    if data != BUILTIN_DIGITS:
        data = str(_locate(data, cert_path))
    labels = cert["data"].get("labels")
    # Hashes first: a file that is not the one certified is reported as such, whatever it holds.
    # (The model is hashed before it is parsed; data files are read without pickle, so safely.)
    labels_file = None if labels is None else str(_locate(labels, cert_path))
    checks = []
    if not Path(model_file).is_file():
        checks.append(("model file", False, f"{model_file} not found (pass --model)"))
    else:
        checks.append(_hash_check("model", sha256_file(Path(model_file)), cert["model"]["sha256"]))
    try:
        checks.append(_hash_check("data", load_data(data, labels=labels_file).sha256, cert["data"]["sha256"]))
    except DataFileError as exc:
        checks.append(("data file", False, str(exc)))
    if not all(ok for _, ok, _ in checks):
        return checks
    if cert["model"]["format"] == "state_dict" and arch is None:
        checks.append(("audit", False, f"the model is a state dict: pass --arch (the certificate names "
                                       f"{cert['model'].get('arch')!r}; certify does not import code a certificate names)"))
        return checks
    inputs = prepare(model_file, data, arch=arch, labels=labels_file, limit=cert["data"].get("limit"),
                     trust_code=trust_code)
    checks.append(_facts_check(cert, inputs.config(cert["method"])))
    if not checks[-1][1]:
        return checks
    rows = cert["results"]
    falsified = [r for r in rows if r.get("status") == "falsified"]
    if falsified:  # every counterexample, not a sample: each is a claim anyone can check exactly
        checks.append(_replay_counterexamples(falsified, inputs, cert["method"]))
    picked = sorted(secrets.SystemRandom().sample(range(len(rows)), min(count, len(rows))))
    # The files are the certified ones: a method the job refuses (parameters past a limit of the
    # sampler or the bounds, a domain the inputs leave) is the certificate's failure, not bad usage.
    try:
        job = make_job(inputs, cert["method"])
    except ValueError as exc:
        checks.append(("audit", False, f"the certificate's method cannot be re-run: {exc}"))
        return checks
    smoothing = cert["method"]["family"] == "smoothing"
    fields = SMOOTHING_FIELDS if smoothing else BOUNDS_FIELDS
    complete = not smoothing and cert["method"].get("method") == "bab"
    disagree = []
    for k in picked:
        stated = rows[k]
        budget = stated.get("domains") if complete else None
        budget = budget if isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1 else None
        try:
            # Complete mode: the search again with the row's domain budget, not the clock (the
            # clock depends on the machine and its load; the search given its budget does not).
            again = job.certify([stated["index"]], domain_budget=budget)[0] if complete else \
                job.certify([stated["index"]])[0]
        except ValueError as exc:
            checks.append(("audit", False, f"input {stated['index']} cannot be re-certified with the certificate's "
                                           f"method: {exc}"))
            return checks
        compared = fields
        if complete and stated.get("status") == "unknown":
            # "unknown" claims nothing: the replay may decide it (one last batch that ran into the
            # deadline at run time runs whole now); what it decides is no contradiction
            compared = [f for f in fields if f not in SEARCH_FIELDS]
        differs = [f for f in compared if again.get(f) != stated.get(f)]  # optional fields: absent on both
        if not smoothing and "margin" in stated and not math.isclose(again.get("margin", math.inf), stated["margin"],
                                                                     rel_tol=1e-4, abs_tol=1e-5):
            differs.append("margin")
        if differs:
            disagree.append(f"input {stated['index']}: {', '.join(differs)}")
    detail = (f"{len(picked)} random inputs re-certified, all agree" if not disagree else
              f"{len(disagree)} of {len(picked)} re-certified inputs disagree: {'; '.join(disagree[:5])}")
    checks.append(("audit", not disagree, detail))
    return checks


def _replay_counterexamples(rows: list[dict], inputs, method: dict) -> tuple[str, bool, str]:
    """Each falsified row's counterexample: inside the ball (and the domain) in exact rational
    arithmetic, and misclassified by the model run in float32 (argmax not the label) and in float64
    (another logit strictly above the label's): what complete mode promised of it."""
    from fractions import Fraction

    import torch

    module = inputs.model.module
    module64 = copy.deepcopy(module).double().eval()
    eps, domain = Fraction(method["eps"]), method["domain"]
    bad = []
    for row in rows:
        i, label = row["index"], row["label"]
        x = inputs.data.x[i]
        point = torch.tensor(row["counterexample"], dtype=torch.float64)
        if point.numel() != x.numel():
            bad.append(f"input {i}: a counterexample of {point.numel()} values for an input of {x.numel()}")
            continue
        point32 = point.float()
        offsets = [Fraction(float(p)) - Fraction(float(c)) for p, c in zip(point.tolist(), x.flatten().tolist())]
        if method["norm"] == "linf":
            inside = max(abs(d) for d in offsets) <= eps
        else:
            inside = sum(d * d for d in offsets) <= eps * eps
        if inside and domain is not None:
            inside = all(Fraction(domain[0]) <= Fraction(float(p)) <= Fraction(domain[1]) for p in point.tolist())
        if not inside:
            bad.append(f"input {i}: the counterexample lies outside the ball")
            continue
        with torch.no_grad():
            wrong32 = int(module(point32.view(1, *x.shape)).argmax(1)) != label
            logits = module64(point.view(1, *x.shape))[0]
        others = torch.cat([logits[:label], logits[label + 1:]])
        if not (wrong32 and float(others.max()) > float(logits[label])):
            bad.append(f"input {i}: the model classifies the counterexample as the label")
    if bad:
        return ("counterexamples", False, f"{len(bad)} of {len(rows)} do not hold: {'; '.join(bad[:3])}")
    return ("counterexamples", True, f"all {len(rows)} counterexamples replayed: in the ball, misclassified in float32 "
                                     "and float64")


# What the certificate says about its files that the files themselves decide (the paths may differ:
# the auditor may pass --model / --data; the architecture is the auditor's --arch).
FACTS = (("model", "format"), ("model", "input_shape"), ("model", "num_classes"), ("data", "num_inputs"),
         ("data", "limit"))


def _facts_check(cert: dict, found: dict) -> tuple[str, bool, str]:
    """The certificate's record of the model and data (input shape, classes, number of inputs...)
    against what the files hold: the plain check takes these on trust, and the smoothing rows'
    recomputation depends on the input shape (the sampler's tail mass)."""
    differ = [f"{part}.{key}: {cert[part].get(key)!r} in the certificate, {found[part][key]!r} in the files"
              for part, key in FACTS if cert[part].get(key) != found[part][key]]
    if differ:
        return ("files", False, "the certificate misdescribes its files: " + "; ".join(differ))
    return ("files", True, "format, input shape, classes and input count match the files")


def _hash_check(what: str, have: str, want: str) -> tuple[str, bool, str]:
    if have == want:
        return (f"{what} file", True, f"SHA-256 matches ({have[:16]}...)")
    return (f"{what} file", False, f"SHA-256 {have[:16]}... differs from the certificate's {want[:16]}...: "
                                   "not the file certified")


def _locate(path, cert_path: Path) -> Path:
    """A path from the certificate: as written (relative to the current folder), else relative to
    the certificate's folder (certificates travel with their run folder)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    beside = Path(cert_path).parent / path
    return beside if beside.exists() else path
