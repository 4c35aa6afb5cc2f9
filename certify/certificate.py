"""Certificates: what a run proved, as a JSON document with a versioned schema, optionally signed.

Schema: certify/schemas/certificate-2.schema.json (JSON Schema 2020-12), id "certify.certificate/2";
version 2 adds sequential smoothing to version 1 (certificate-1.schema.json), and a version-1
certificate is still checked against version 1. The summary is a function of the rows
(`summarize`), and every smoothing row's p_lower and radius are a function of its counts and the
method's parameters (a sequential row's every decision, of its hits at each look and the method's
schedule and boundary), so a checker recomputes them: a changed radius is caught even in an
unsigned certificate. The Ed25519 signature covers the canonical JSON
(sorted keys, no whitespace) of everything but the signature itself: any other change (model hash,
a label, a parameter) breaks it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import platform
from importlib import resources
from pathlib import Path

import numpy as np

from certify._checks import MIN_ALPHA
from certify._files import write_text_atomic

__all__ = ["SCHEMA_ID", "build", "summarize", "guarantee", "sign", "load_signing_key", "check", "check_method",
           "method_problems", "failures", "CertificateCheckError", "load", "write_json", "keygen", "DEFAULT_SMOOTHING_RADII"]

SCHEMA_ID = "certify.certificate/2"
SCHEMA_FILES = {"certify.certificate/1": "certificate-1.schema.json", SCHEMA_ID: "certificate-2.schema.json"}
SEQUENTIAL = ("sequential-target", "sequential-budget")
DEFAULT_SMOOTHING_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
NORM_NAMES = {"l2": "ℓ2", "l1": "ℓ1", "linf": "ℓ∞"}


class CertificateCheckError(RuntimeError):
    """A certificate about to be written fails its own checks (a run store edited or damaged):
    nothing is written or signed. The command line exits 1 (failure), not 2."""


# ---------------------------------------------------------------------------- building
def build(config: dict, rows: list[dict], radii=None) -> dict:
    """The certificate of a finished run: config = {"model", "data", "method"} as stored in the run."""
    import torch

    from certify import __version__

    method = config["method"]
    return {
        "schema": SCHEMA_ID,
        "created": _now(),
        "tool": {"name": "certify", "version": __version__, "python": platform.python_version(),
                 "torch": torch.__version__, "numpy": np.__version__, "platform": platform.platform(),
                 "cpu": platform.processor() or platform.machine()},
        "model": config["model"],
        "data": config["data"],
        "method": method,
        "guarantee": guarantee(method),
        "results": rows,
        "summary": summarize(method, rows, radii if radii is not None else default_radii(method)),
    }


def default_radii(method: dict) -> list[float]:
    if method.get("procedure") == "sequential-target":
        return [float(method["target_radius"])]
    if method["family"] == "smoothing":
        return list(DEFAULT_SMOOTHING_RADII)
    if method["procedure"] == "verify":
        return [method["eps"]]
    # k / 10 first: max_eps * k overflows to infinity for max_eps near the largest double
    radii = [round(method["max_eps"] * (k / 10), 12) for k in range(11)]
    if not all(math.isfinite(r) for r in radii):
        raise ValueError(f"max_eps {method['max_eps']} gives radii that are not finite")
    return radii


def summarize(method: dict, rows: list[dict], radii) -> dict:
    """Certified accuracy at each radius r: the fraction of inputs whose prediction is the label
    and is certified at r (smoothing: radius >= r and not abstaining; bounds: verified and radius
    >= r). Bounds runs with an attack add the accuracy under attack: correct and not attacked.
    seconds: the certification time summed over the rows (so it adds up across resumed sessions
    and does not count the attack)."""
    count = len(rows)
    smoothing = method["family"] == "smoothing"

    def fraction(flags) -> float:
        return sum(bool(f) for f in flags) / count if count else 0.0

    certified = [r["correct"] and (smoothing or r["verified"]) for r in rows]
    summary = {
        "num_inputs": count,
        "clean_accuracy": fraction(r["correct"] for r in rows),
        "abstain_rate": fraction(r["prediction"] == -1 for r in rows) if smoothing else None,
        "certified_accuracy": [
            {"radius": float(radius), "accuracy": fraction(c and r["radius"] >= radius for c, r in zip(certified, rows))}
            for radius in radii
        ],
        "verified_accuracy": None if smoothing else fraction(certified),
        "pgd_accuracy": None,
        "seconds": sum(float(r["seconds"]) for r in rows),
    }
    if not smoothing and method.get("attack") is not None:
        summary["pgd_accuracy"] = fraction(r["correct"] and not r["attacked"] for r in rows)
    if method.get("procedure") in SEQUENTIAL:
        summary["fixed_samples"] = count * (method["n0"] + method.get("max_samples", method.get("n")))
    if method.get("procedure") == "sequential-target":
        summary["certified_fraction"] = fraction(r["certified"] for r in rows)
    if smoothing:
        summary["samples"] = sum(int(r["num_samples"]) for r in rows)
    elif method["method"] == "bab":
        summary["falsified_fraction"] = fraction(r.get("status") == "falsified" for r in rows)
        summary["unknown_fraction"] = fraction(r.get("status") == "unknown" for r in rows)
    return summary


def guarantee(method: dict) -> str:
    """The statement the certificate makes, in words."""
    if method.get("procedure") in SEQUENTIAL:
        return _sequential_guarantee(method)
    if method["family"] == "smoothing":
        norm = NORM_NAMES[method["norm"]]
        noise = {"gaussian": f"N(0, σ²I) with σ = {method['scale']}",
                 "laplace": f"i.i.d. Laplace noise of scale λ = {method['scale']}",
                 "uniform": f"i.i.d. uniform noise on [-λ, λ] with λ = {method['scale']}"}[method["noise"]]
        return (
            f"For each input whose prediction is not -1 (abstain), with probability at least 1 - α = "
            f"{1 - method['alpha']:.12g} over the Monte-Carlo sampling, the smoothed classifier "
            f"g(x) = argmax_c P(f(x + δ) = c), δ ~ {noise}, predicts the reported class at every point within "
            f"{norm} distance `radius` of the input. It is a statement about g, not about the base model f; it "
            f"holds for each input separately at level α (Cohen et al. 2019, CERTIFY, with a one-sided "
            f"Clopper-Pearson bound from {method['n']} samples, the class chosen from {method['n0']} independent "
            f"samples; noise from Philox4x32-10 with seed {method['seed']})."
        )
    text = _bounds_guarantee(method)
    if method["method"] == "bab":
        text += (
            " Complete mode (attack, alpha-CROWN, then beta-CROWN branch and bound with sound bounds in every leaf): "
            "each input's `status` is 'verified' (as above), 'falsified' (its `counterexample` is a float32 point of "
            "the ball on which the model, run in float32 and in float64, does not put the label first, which "
            "`verify-certificate --audit` replays for every such row; it speaks of those two executions, and where "
            "logits lie within float64 rounding of each other the exact network could still favour the label) or "
            "'unknown' "
            f"(the {method['timeout_per_input']} s per input ran out first; nothing is claimed)."
        )
    return text


def _smoothed_classifier(method: dict) -> str:
    noise = {"gaussian": f"N(0, σ²I) with σ = {method['scale']}",
             "laplace": f"i.i.d. Laplace noise of scale λ = {method['scale']}",
             "uniform": f"i.i.d. uniform noise on [-λ, λ] with λ = {method['scale']}"}[method["noise"]]
    return f"the smoothed classifier g(x) = argmax_c P(f(x + δ) = c), δ ~ {noise},"


def _sequential_guarantee(method: dict) -> str:
    """Sequential CERTIFY (certify.smoothing.sequential): the statement, with the boundary's argument."""
    norm = NORM_NAMES[method["norm"]]
    looks = method["looks"]
    schedule = (f"The estimation samples were drawn in looks of {looks[0]}, ..., {looks[-1]} samples (`looks`: "
                f"{method['first_look']}, then ×{method['growth']!r}), a schedule fixed before any sample was drawn; "
                f"the class was chosen from {method['n0']} independent samples; noise from Philox4x32-10 with seed "
                f"{method['seed']}.")
    if method["procedure"] == "sequential-budget":
        return (
            f"For each input whose prediction is not -1 (abstain), with probability at least 1 - α = "
            f"{1 - method['alpha']:.12g} over the Monte-Carlo sampling, whatever the stopping time, "
            f"{_smoothed_classifier(method)} predicts the reported class at every point within {norm} distance "
            f"`radius` of the input (budgeted sequential CERTIFY). {schedule} At each of the K = {len(looks)} looks "
            f"the one-sided Clopper-Pearson bound is taken at level α / K, so all K hold together with probability "
            f"≥ 1 - α (union bound) and the bound at whichever look sampling stopped is valid. Sampling stopped when "
            f"the radius at the full budget of {method['n']} samples, were the hit rate to stay where it was, would "
            f"be within {method['tolerance']} of the radius then: a stopping rule, not a promise about the radius a "
            f"full run would give.")
    if method["boundary"] == "exact":
        test = (
            "At look j an input was certified when the hits of the chosen class reached `critical[j]`. The table is "
            "an error-spending boundary (Lan & DeMets 1983, spending α·ln(1 + (e - 1)·n_j / n_K)) for the null "
            "hypothesis that P(f(x + δ) = chosen class) is at most the probability at which the certified radius "
            "reaches the target (plus the sampler's cut tail mass), with its level computed exactly by recursion over "
            "the hit count's distribution (csrc/stats/sequential.cpp) rather than by a union bound. The event of "
            "crossing grows with that probability, so the level holds under the whole null, and stopping at a look "
            "for any other reason only removes chances to cross.")
    else:
        test = (
            f"At each of the K = {len(looks)} looks the one-sided Clopper-Pearson bound is taken at level α / K "
            f"(Horváth et al. 2022; union bound); an input was certified at the first look where that bound gives a "
            f"radius of at least the target, i.e. where its hits reached `critical[j]`.")
    return (
        f"For each input marked certified, with probability at least 1 - α = {1 - method['alpha']:.12g} over the "
        f"Monte-Carlo sampling, whatever the stopping time, {_smoothed_classifier(method)} predicts the reported "
        f"class at every point within {norm} distance {method['target_radius']} (`radius`) of the input (sequential "
        f"CERTIFY at a target radius, at most {method['max_samples']} estimation samples). {schedule} {test} An input "
        f"stopped as not certified at the last look, or earlier when no later look could reach its critical count or "
        f"even the upper Clopper-Pearson bound at α / K gave a radius below the target: a rule that only ever says "
        f"no and cannot make a certificate false. It is a statement about g, not about the base model f; it holds "
        f"for each input separately at level α. Inputs not certified may still be robust at the target.")


def _bounds_guarantee(method: dict) -> str:
    """Bounds: what "verified" means for the method's inference ("exact", the default of
    certificates written before the field existed, or "float32")."""
    norm = NORM_NAMES[method["norm"]]
    where = f"intersected with the box [{method['domain'][0]}, {method['domain'][1]}] " if method["domain"] else ""
    size = f"ε = {method['eps']}" if method["procedure"] == "verify" else "`radius`"
    ball = f"every point x' with ||x' - x||{norm[1:]} <= {size} {where}"
    proof = f"{method['method'].upper()} bound propagation with outward rounding"
    if "inference" not in method:  # the text of certificates written before the inference field (exact)
        return (
            f"For each input marked verified, the model's logit for the label exceeds every other logit at {ball}"
            f"(so the model classifies all of them as the label), proven by {proof}: the statement holds in exact "
            "real arithmetic for the network with its stored float32 weights. It is deterministic: there is no "
            "failure probability. Inputs not verified may still be robust; the PGD accuracy, where given, bounds the "
            "true robust accuracy from above."
        )
    if method["inference"] == "exact":
        return (
            "For each input marked verified, the exact network (the model's layers evaluated in exact real "
            f"arithmetic on its stored float32 weights) gives the label a larger logit than every other class at "
            f"{ball}(so the exact network classifies all of them as the label), proven by {proof}. It is a "
            "statement about the exact network, not about the model run in float32: where logits lie within float32 "
            "rounding of each other, the float32 forward pass may return another class. A row's `float32_disagrees` "
            "lists where that happened on a verified input: at the input itself ('input'; its prediction, the "
            "float32 argmax, is then not the label) or at the point the PGD attack found ('attack'; not counted as "
            "attacked), each confirmed to be float32 rounding by a float64 run of the model, which classifies the "
            "point as the label. The verified accuracy counts the inputs that are verified and whose float32 "
            "prediction is the label. It is deterministic: there is no failure probability. Inputs not verified may "
            "still be robust; the PGD accuracy (inputs whose float32 prediction is the label and that the attack, "
            "run in float32, did not break), where given, bounds the robust accuracy from above."
        )
    return (
        "For each input marked verified, the model run in float32 returns the label as its argmax (the label's "
        f"float32 logit strictly exceeds every other) at every float32 point x' with ||x' - x||{norm[1:]} <= "
        f"{size}{' ' + where.strip() if where else ''}: for any float32 forward pass that sums the products of "
        "each Linear and Conv2d layer in any order and grouping, with or without fused multiply-add, and computes batch norm, normalisation by "
        "constants, average pooling, ReLU and residual additions in float32 with the stored parameters, with or "
        f"without flushing subnormal numbers to zero. Proven by {proof} (bounds on the exact network with the "
        "stored float32 weights), less a rigorous bound on the rounding error of such a forward pass at every "
        "neuron (Higham's γ_n terms propagated through the layers, certify.bounds.float32). It assumes IEEE float32 "
        "arithmetic throughout: no Winograd or FFT convolution, no TF32, bfloat16 or other reduced-precision "
        "float32 modes, no fast-math rewriting. It is deterministic: there is no failure probability. The verified "
        "accuracy counts the verified inputs (each classified as the label in float32). Inputs not verified may "
        "still be robust; the PGD accuracy, where given, bounds the robust accuracy from above."
    )


# ---------------------------------------------------------------------------- signing
def canonical_bytes(cert: dict) -> bytes:
    body = {k: v for k, v in cert.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def keygen(folder: Path, name: str = "certify-key") -> tuple[Path, Path]:
    """A new Ed25519 key pair: NAME.pem (private, mode 0600) and NAME.pub.pem (public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; certify keygen never overwrites a key")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public_path.write_bytes(public)
    return private_path, public_path


def load_signing_key(private_key_path: Path):
    """The Ed25519 private key in a PEM file (ValueError otherwise). Runs call this before any work,
    so a wrong key is refused at once, not after hours of certification."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise ValueError(f"cannot read the signing key {private_key_path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{private_key_path} is not an Ed25519 private key (make one with certify keygen)")
    return key


def sign(cert: dict, key) -> dict:
    """cert with an Ed25519 signature; key: a private key from load_signing_key, or its PEM file."""
    from cryptography.hazmat.primitives import serialization

    if isinstance(key, (str, os.PathLike)):
        key = load_signing_key(key)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signed = {k: v for k, v in cert.items() if k != "signature"}
    signed["signature"] = {"algorithm": "ed25519", "public_key": base64.b64encode(public).decode(),
                           "value": base64.b64encode(key.sign(canonical_bytes(signed))).decode()}
    return signed


def _public_key_raw(path: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (ValueError, TypeError, OSError) as exc:
        raise ValueError(f"cannot read the public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ---------------------------------------------------------------------------- checking
def load(path: Path) -> dict:
    """The certificate in `path`. Refused, each with a ValueError naming the problem: files over the
    size limit, JSON nested deeper than the depth limit (certificates are 4 levels deep; a deep file
    would exhaust the parser's recursion), duplicate keys (a signature covers one reading of the
    file, and another reader could take the other value), NaN, infinities, numbers that overflow to
    them, and integers outside [-2^63, 2^64) (seeds reach 2^64 - 1; no count or index is that
    large, and a larger one would overflow the arithmetic that checks it)."""
    from certify import limits

    path = Path(path)
    try:
        limits.check("file_bytes", path.stat().st_size, f"certificate {path}")
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ValueError(f"certificate {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise ValueError(f"certificate {path} is a folder, not a file") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a JSON certificate: {exc}") from exc
    depth = _nesting_depth(text)
    if depth > limits.value("json_depth"):
        limits.check("json_depth", depth, f"certificate {path}")
    try:
        cert = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a JSON certificate: {exc}") from exc
    _finite(cert, path)
    return cert


def _nesting_depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings, found without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


INT_MIN, INT_LIMIT = -2**63, 2**64  # int64 below, uint64 above (a seed may be any 64-bit value)


def _bounded_int(digits: str) -> int:
    # 2^64 has 20 digits: the length test keeps int() from parsing thousands of them
    if len(digits.lstrip("-")) > 20 or not INT_MIN <= int(digits) < INT_LIMIT:
        shown = digits if len(digits) <= 24 else digits[:20] + f"... ({len(digits)} digits)"
        raise ValueError(f"the certificate holds the integer {shown}, beyond ±2^63 (integers must lie in "
                         "[-2^63, 2^64))")
    return int(digits)


def _unique_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"the certificate repeats the key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _no_constant(name):
    raise ValueError(f"the certificate contains {name}, which JSON certificates may not hold")


def _finite(value, path) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} holds a number too large for a double")
    if isinstance(value, dict):
        for item in value.values():
            _finite(item, path)
    elif isinstance(value, list):
        for item in value:
            _finite(item, path)


@functools.lru_cache(maxsize=2)
def _schema_text(schema_id: str) -> str:
    return resources.files("certify").joinpath("schemas", SCHEMA_FILES[schema_id]).read_text()


def schema(schema_id: str = SCHEMA_ID) -> dict:
    """The JSON schema of `schema_id` (a version this code reads; the newest by default)."""
    return json.loads(_schema_text(schema_id))


def _validator(definition: dict):
    """A JSON Schema validator whose "integer" means a JSON integer: the standard one also takes
    0.0 and 1e3, which would then reach range() and list indices as floats."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(base, type_checker=checker)(definition)


def method_problems(method: dict) -> list[str]:
    """What the schema cannot say about a method's parameters taken together: each pair whose
    values must agree for the guarantee to mean what it says. [] for a consistent method."""
    from certify.runs.jobs import NOISES

    problems = []
    if method["family"] == "smoothing":
        norm = NOISES[method["noise"]].norm  # Gaussian -> l2, Laplace / uniform -> l1 (Yang et al. 2020)
        if method["norm"] != norm:
            problems.append(f"{method['noise']} noise certifies {norm} radii, not {method['norm']}")
        if method["procedure"] in SEQUENTIAL:
            looks = method["looks"]
            budget = method.get("max_samples", method.get("n"))
            if looks[-1] != budget or any(b <= a for a, b in zip(looks, looks[1:])):
                problems.append(f"the looks must increase and end at the budget {budget}")
            if len(method.get("critical", looks)) != len(looks):
                problems.append("critical needs one count per look")
            if method["first_look"] != looks[0]:  # a run records the first look it made (at most the budget)
                problems.append(f"first_look {method['first_look']} is not the first look {looks[0]}")
            if math.copysign(1.0, method.get("target_radius", 0.0)) < 0:
                problems.append("target_radius is -0.0 (a run records 0.0)")
        return problems
    verify = method["procedure"] == "verify"
    for key, wanted in (("eps", verify), ("max_eps", not verify), ("tol", not verify)):
        if (method[key] is not None) != wanted:
            problems.append(f"procedure {method['procedure']!r} {'needs' if wanted else 'takes no'} {key}")
    if method["domain"] is not None:
        lo, hi = method["domain"]
        if not lo <= hi:
            problems.append(f"the domain [{lo}, {hi}] is empty (it must be LO HI with LO <= HI)")
        if method["norm"] != "linf":
            problems.append("a domain applies to linf balls only")
    bab = method["method"] == "bab"
    if bab != ("timeout_per_input" in method):
        problems.append("timeout_per_input belongs to method 'bab', which needs it")
    if bab and not verify:
        problems.append("method 'bab' decides the verify procedure (one eps), not radius")
    if bab and method.get("inference", "exact") != "exact":
        problems.append("method 'bab' proves the exact network (inference 'exact')")
    attack = method["attack"]
    if attack is not None:
        if not verify:
            problems.append("the radius procedure runs no attack")
        elif attack["eps"] != method["eps"]:
            problems.append(f"the attack's eps {attack['eps']} differs from the verified eps {method['eps']}")
    return problems


def check_method(method: dict) -> None:
    """ValueError unless `method` is a valid smoothing or bounds method of the schema whose
    parameters agree with each other (method_problems)."""
    definitions = schema()
    family = method.get("family") if isinstance(method, dict) else None
    if family not in ("smoothing", "bounds"):
        raise ValueError(f"method family must be 'smoothing' or 'bounds', got {family!r}")
    definition = family
    if family == "smoothing" and method.get("procedure") in SEQUENTIAL:
        definition = method["procedure"].replace("-", "_")
    validator = _validator({**definitions["$defs"][definition], "$defs": definitions["$defs"]})
    error = next(iter(validator.iter_errors(method)), None)
    if error is not None:
        raise ValueError(f"invalid {family} settings: {error.message}")
    problems = method_problems(method)
    if problems:
        raise ValueError(f"invalid {family} settings: {'; '.join(problems)}")


def check(cert: dict, public_key: Path | None = None) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) for each check of a certificate: schema, signature, method
    consistency, per-row checks (smoothing rows recomputed from their counts), summary
    recomputation. Stops after a schema or method failure (later checks assume both)."""
    results = []
    import jsonschema

    schema_id = cert.get("schema") if isinstance(cert, dict) else None
    errors = list(_validator(schema(schema_id if schema_id in SCHEMA_FILES else SCHEMA_ID)).iter_errors(cert))
    if errors:
        # The deepest error: inside a row (from the family's row schema), not "no oneOf branch matched".
        relevant = jsonschema.exceptions.best_match(errors)
        best = _innermost(max(errors, key=lambda e: (len(e.absolute_path), e is relevant)))
        where = "/".join(str(p) for p in best.absolute_path) or "(top level)"
        results.append(("schema", False, f"{len(errors)} problem(s); at {where}: {best.message[:300]}"))
        return results
    results.append(("schema", True, schema_id))
    results.append(_check_signature(cert, public_key))
    problems = method_problems(cert["method"])
    results.append(("method", not problems, "; ".join(problems) if problems else "parameters consistent"))
    if problems:
        return results
    results.append(_check_coverage(cert))
    if cert["method"].get("procedure") in SEQUENTIAL:
        results.append(_check_sequential_rows(cert))
    elif cert["method"]["family"] == "smoothing":
        results.append(_check_smoothing_rows(cert))
    else:
        results.append(_check_bounds_rows(cert))
    expected = summarize(cert["method"], cert["results"], [c["radius"] for c in cert["summary"]["certified_accuracy"]])
    differ = sorted(k for k in expected.keys() | cert["summary"].keys() if expected.get(k) != cert["summary"].get(k))
    results.append(("summary", not differ, "recomputed from the rows" if not differ else
                    f"does not match the rows: {', '.join(differ)}"))
    return results


def _innermost(error):
    """For "matches none of oneOf's schemas" (a method): the deepest error of the branch with the
    fewest errors, the one the value was meant for (e.g. 'method/n: ... greater than the maximum')."""
    while error.context:
        branches: dict = {}
        for inner in error.context:
            branches.setdefault(inner.relative_schema_path[0], []).append(inner)
        closest = min(branches.values(), key=len)
        error = max(closest, key=lambda e: len(e.absolute_path))
    return error


def failures(cert: dict) -> list[str]:
    """The checks a freshly built certificate fails (signature aside): what `execute` runs before
    it signs or writes one, so a run store edited by hand never becomes a signed certificate."""
    return [f"{name}: {detail}" for name, ok, detail in check(cert) if not ok and name != "signature"]


def _check_coverage(cert: dict) -> tuple[str, bool, str]:
    """One row per certified input, in order, each consistent with itself, and the stated guarantee
    exactly the method's: rows dropped, duplicated or relabelled are caught here."""
    data = cert["data"]
    count = data["num_inputs"] if data.get("limit") is None else min(data["limit"], data["num_inputs"])
    indices = [r["index"] for r in cert["results"]]
    if len(indices) != count or indices != list(range(count)):  # the length first: count may be huge
        return ("coverage", False, f"the rows must be inputs 0..{count - 1} in order, one each; "
                                   f"got {len(indices)} rows" + ("" if len(indices) != count else " out of order"))
    wrong = [r["index"] for r in cert["results"] if r["correct"] != (r["prediction"] == r["label"])]
    if wrong:
        return ("coverage", False, f"'correct' does not equal prediction == label for input {wrong[0]}")
    classes = cert["model"]["num_classes"]
    smoothing = cert["method"]["family"] == "smoothing"
    for r in cert["results"]:
        if not (0 <= r["label"] < classes and -smoothing <= r["prediction"] < classes):
            return ("coverage", False, f"input {r['index']}: label {r['label']} or prediction {r['prediction']} is "
                                       f"not a class of the model's {classes}")
        if smoothing and len(r["counts"]) != classes:
            return ("coverage", False, f"input {r['index']}: {len(r['counts'])} class counts for {classes} classes")
    if cert["guarantee"] != guarantee(cert["method"]):
        return ("coverage", False, "the guarantee's text is not the one this method proves")
    return ("coverage", True, f"{count} rows, inputs 0..{count - 1} in order; guarantee matches the method")


def _check_bounds_rows(cert: dict) -> tuple[str, bool, str]:
    """What a bounds row can claim: the radius its procedure gives, no verified input broken by
    the attack, verified exactly when the margin bound (where recorded: verify procedure only) is
    positive, a verified input's float32 prediction the label unless (exact inference)
    `float32_disagrees` records the float32 rounding effect, and every misclassified input broken
    by the attack (PGD starts from the input itself) unless that record explains it. Certificates
    from before method.inference state that the model classifies every verified ball as the label:
    their rows may record no float32 disagreement."""
    m = cert["method"]
    exact = m.get("inference", "exact") == "exact"
    for row in cert["results"]:
        i = row["index"]
        if m["procedure"] == "verify":
            if row["radius"] != (m["eps"] if row["verified"] else 0.0):
                return ("rows", False, f"input {i}: radius {row['radius']} is not eps = {m['eps']} (verified) or 0")
            # BoundsJob: verified = every margin bound > 0, and `margin` is their minimum (the one
            # verified was decided on, float32 inference included), recorded where finite.
            if "margin" in row and row["verified"] != (row["margin"] > 0):
                return ("rows", False, f"input {i}: verified is {row['verified']} with a margin bound of "
                                       f"{row['margin']} (verified exactly when it is > 0)")
        elif not 0.0 <= row["radius"] <= m["max_eps"] or row["verified"] != (row["radius"] > 0):
            return ("rows", False, f"input {i}: radius {row['radius']} outside (0, max_eps = {m['max_eps']}] "
                                   "or not matching its verified flag")
        elif "margin" in row:
            return ("rows", False, f"input {i}: a margin bound, which the radius procedure does not record")
        if row["verified"] and row["attacked"]:
            return ("rows", False, f"input {i}: verified, yet the attack broke it")
        disagrees = row.get("float32_disagrees", [])
        if disagrees and "inference" not in m:
            return ("rows", False, f"input {i}: float32_disagrees in a certificate without method.inference, whose "
                                   "guarantee says the model classifies every point of a verified ball as the label")
        if disagrees and not (exact and row["verified"]):
            return ("rows", False, f"input {i}: float32_disagrees belongs to verified inputs under exact inference")
        if row["verified"] and not row["correct"] and "input" not in disagrees:
            return ("rows", False, f"input {i}: verified but its prediction is not the label")
        if "input" in disagrees and row["correct"]:
            return ("rows", False, f"input {i}: float32_disagrees lists the input, whose prediction is the label")
        if "attack" in disagrees and (m["attack"] is None or m["attack"]["eps"] > row["radius"]):
            return ("rows", False, f"input {i}: float32_disagrees lists an attack point outside any attack "
                                   "inside its verified ball")
        if (m["attack"] is None) != (row["attacked"] is None):
            return ("rows", False, f"input {i}: 'attacked' does not match whether an attack was run")
        if row["attacked"] is False and not row["correct"] and not (row["verified"] and "input" in disagrees):
            return ("rows", False, f"input {i}: misclassified, yet not attacked (the attack counts a misclassified "
                                   "input as broken)")
        problem = _complete_mode_problem(m, row, math.prod(cert["model"]["input_shape"]))
        if problem:
            return ("rows", False, f"input {i}: {problem}")
    return ("rows", True, f"{len(cert['results'])} rows consistent with the method")


def _complete_mode_problem(method: dict, row: dict, size: int) -> str | None:
    """Method 'bab': a status per row, verified exactly when the status says so, a counterexample
    of the input's size (float32 values) exactly on falsified rows, no margin (the decision is not
    one bound). Whether the counterexample lies in the ball and fools the model needs the data and
    the model: --audit replays every one."""
    if method["method"] != "bab":
        if {"status", "counterexample", "domains"} & row.keys():
            return "status, counterexample and domains belong to method 'bab'"
        return None
    status = row.get("status")
    if status is None or "domains" not in row:
        return "a 'bab' row needs its status and domains"
    if row["verified"] != (status == "verified"):
        return f"verified is {row['verified']} with status {status!r}"
    if (status == "falsified") != ("counterexample" in row):
        return "a counterexample belongs to falsified rows, and each needs one"
    if "margin" in row:
        return "a margin bound, which complete mode does not record"
    point = row.get("counterexample")
    with np.errstate(over="ignore"):
        exact = point is None or all(float(np.float32(v)) == v for v in point)
    if point is not None and (len(point) != size or not exact):
        return f"the counterexample must be {size} float32 values"
    return None


def _check_signature(cert: dict, public_key: Path | None) -> tuple[str, bool, str]:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    signature = cert.get("signature")
    if signature is None:
        if public_key is not None:
            return ("signature", False, "the certificate is not signed, but --public-key asks for a signature")
        return ("signature", True, "unsigned: the certificate's integrity rests on the recomputations below only")
    try:
        embedded = base64.b64decode(signature["public_key"], validate=True)
        value = base64.b64decode(signature["value"], validate=True)
    except ValueError:  # binascii.Error
        return ("signature", False, "INVALID: the signature or its key is not valid base64")
    if public_key is not None and _public_key_raw(public_key) != embedded:
        return ("signature", False, f"signed with a different key than {public_key}")
    try:
        Ed25519PublicKey.from_public_bytes(embedded).verify(value, canonical_bytes(cert))
    except (InvalidSignature, ValueError):
        return ("signature", False, "INVALID: the certificate was changed after signing (or the signature is damaged)")
    if public_key is not None:
        return ("signature", True, f"valid Ed25519 signature by the key in {public_key}")
    fingerprint = hashlib.sha256(embedded).hexdigest()[:16]
    return ("signature", True, f"valid Ed25519 signature by an unpinned key (SHA-256 {fingerprint}...): anyone can "
                               "sign; pass --public-key with the signer's key to check who signed")


def _check_smoothing_rows(cert: dict) -> tuple[str, bool, str]:
    """Each certified row's p_lower and radius, recomputed from its counts exactly as the run did."""
    from certify.runs.jobs import NOISES
    from certify.smoothing.smoothed import smoothing_bounds

    m = cert["method"]
    if not m["alpha"] >= MIN_ALPHA:  # schema 1 allowed it; the bounds' arithmetic does not
        return ("rows", False, f"alpha = {m['alpha']} is below {MIN_ALPHA:g}, where no bound can be recomputed")
    noise = NOISES[m["noise"]](m["scale"])
    dim = math.prod(cert["model"]["input_shape"])
    tail = noise.tail_mass(dim, m["backend"])
    if not 0.0 <= tail < 1.0:
        return ("rows", False, f"the input shape {cert['model']['input_shape']} leaves the sampler no probability "
                               "to certify (its tail mass reaches 1)")
    bad = []
    for row in cert["results"]:
        counts = row["counts"]
        if sum(counts) != m["n"] or row["num_samples"] != m["n0"] + m["n"]:
            bad.append(row["index"])
            continue
        if row["prediction"] == -1:
            # An abstention's p_lower is the bound of the class the n0 draw chose (not recorded): it
            # must be the bound of some class's count, and at most 1/2 (above it the run certifies).
            bounds = {float(b) for b in smoothing_bounds(noise, np.array(counts), m["n"], m["alpha"], tail)[0]}
            if row["radius"] != 0.0 or not row["p_lower"] <= 0.5 or row["p_lower"] not in bounds:
                bad.append(row["index"])
            continue
        if not 0 <= row["prediction"] < len(counts):
            bad.append(row["index"])
            continue
        p_lower, radius = smoothing_bounds(noise, np.array([counts[row["prediction"]]]), m["n"], m["alpha"], tail)
        if float(p_lower[0]) != row["p_lower"] or float(radius[0]) != row["radius"] or not p_lower[0] > 0.5:
            bad.append(row["index"])
    if bad:
        return ("rows", False, f"{len(bad)} row(s) whose p_lower or radius do not follow from their counts, "
                               f"e.g. input {bad[0]}")
    return ("rows", True, f"p_lower and radius of {len(cert['results'])} rows recomputed from their counts")


def _check_sequential_rows(cert: dict) -> tuple[str, bool, str]:
    """Sequential CERTIFY: the method's looks and critical counts are the ones its parameters give
    (recomputed, the exact boundary's recursion included), and each row's every decision follows
    from its hits at each look: continue at every look but the last, stop at the last, and the
    prediction, radius and p_lower the stopping look gives."""
    from certify.runs.jobs import NOISES, sequential_plan
    from certify.smoothing.sequential import CERTIFIED, CONTINUE, budget_decider, target_decider, target_test

    m = cert["method"]
    shape = cert["model"]["input_shape"]
    try:
        plan = sequential_plan(m, shape)
    except ValueError as exc:
        return ("rows", False, f"the sequential method cannot be recomputed: {exc}")
    differ = [key for key, value in plan.items() if m.get(key) != value]
    if differ:
        return ("rows", False, f"the method's {' and '.join(differ)} are not what its parameters give (recomputed)")
    noise = NOISES[m["noise"]](m["scale"])
    tail = noise.tail_mass(math.prod(shape), "native")
    looks = np.array(m["looks"], dtype=np.int64)
    target = m["procedure"] == "sequential-target"
    if target:
        decide = target_decider(target_test(noise, m["target_radius"], tail, looks, m["alpha"], m["boundary"]))
    else:
        decide = budget_decider(noise, m["alpha"] / len(looks), tail, m["n"], m["tolerance"])
    bad = []
    for row in cert["results"]:
        hits, counts, chosen = row["look_hits"], row["counts"], row["selected"]
        made = len(hits)
        steps = np.diff(np.concatenate([[0], looks[:made]])) if made <= len(looks) else None
        gains = np.diff(np.concatenate([[0], hits]))
        if (steps is None or chosen >= len(counts) or sum(counts) != looks[made - 1] or counts[chosen] != hits[-1]
                or row["num_samples"] != m["n0"] + looks[made - 1] or (gains < 0).any() or (gains > steps).any()):
            bad.append(row["index"])
            continue
        d, p, r = decide(np.array(hits, dtype=np.int64), looks[:made].copy(), np.arange(made, dtype=np.int64),
                         np.arange(made) == len(looks) - 1)
        if (d[:-1] != CONTINUE).any() or d[-1] == CONTINUE:
            bad.append(row["index"])
            continue
        certified = bool(d[-1] == CERTIFIED) if target else bool(p[-1] > 0.5)
        radius = (float(m["target_radius"]) if target else float(r[-1])) if certified else 0.0
        if (row["prediction"] != (chosen if certified else -1) or row["radius"] != radius
                or row["p_lower"] != float(p[-1]) or (target and row["certified"] != certified)):
            bad.append(row["index"])
    if bad:
        return ("rows", False, f"{len(bad)} row(s) whose decisions do not follow from their hits at each look, "
                               f"e.g. input {bad[0]}")
    return ("rows", True, f"every look's decision of {len(cert['results'])} rows recomputed from their hits, on "
                          f"the recomputed {m['boundary']} boundary")


# ---------------------------------------------------------------------------- files
def write_json(path: Path, value: dict) -> None:
    """Written to a temporary file and renamed: a crash never leaves half a certificate."""
    write_text_atomic(path, json.dumps(value, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
