"""Fuzzing the certificate checker: random mutations of genuine certificates (numbers, keys, rows,
parameters, raw bytes) must never give a traceback, and `check` may accept a mutated certificate
only when its claims are unchanged, or when what changed is a fact about the model and data files
that only `--audit` can see (AUDIT_ONLY below, documented in README's threat model). A signed
certificate checked against its public key accepts no change at all."""

import copy
import json
import random

import pytest
from run_files import make_files

from certify import certificate
from certify.cli import bounds_method, smoothing_method
from certify.runs import run

SMOOTH = smoothing_method("gaussian", 0.5, 50, 1_000, 0.01, 1_000, 7, "native")
BOUNDS = bounds_method("crown", "linf", 0.05, None, None, None,
                       {"name": "pgd", "eps": 0.05, "steps": 5, "restarts": 1, "seed": 0})
RADIUS = bounds_method("ibp", "linf", None, 0.3, 0.01, [0.0, 1.0], None)

# Not claims: where the run was, what it ran on, how long it took (the summary's sums of them
# are recomputed), and the batch size (rows do not depend on it).
HARMLESS = {("created",), ("tool",), ("model", "path"), ("data", "path"), ("data", "labels"),
            ("method", "batch_size")}
# Claims the plain check cannot confirm: facts about the files (--audit re-hashes them and compares
# these with them) and what only re-running inputs shows (--audit re-runs some with the stated
# parameters; a signature shows who stated them). A smoothing row's prediction, p_lower and radius
# are recomputed from its counts, so only its label and counts are the audit's; a bounds row can
# only be re-run, so all of it is, and the test checks its consistency independently instead.
AUDIT_ONLY = {("model", "sha256"), ("data", "sha256"), ("model", "format"), ("model", "arch"), ("model", "input_shape"),
              ("model", "num_classes"), ("data", "num_inputs"), ("data", "limit"), ("method", "seed"),
              ("method", "backend"), ("method", "tol"), ("method", "max_eps"), ("method", "attack"),
              ("method", "domain")}
ROW_AUDIT_ONLY = {"smoothing": {"label", "counts", "seconds"},
                  "bounds": {"label", "prediction", "verified", "radius", "attacked", "margin", "float32_disagrees",
                             "seconds"}}


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    files = make_files(folder)
    keys = certificate.keygen(folder / "keys")
    certs = {}
    for name, method, limit in (("smooth", SMOOTH, 8), ("bounds", BOUNDS, 12), ("radius", RADIUS, 6)):
        certs[name] = run.execute(folder / name, run.prepare(*files, limit=limit), method, quiet=True)
        assert [n for n, ok, _ in certificate.check(certs[name]) if not ok] == []
    return certs, keys


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from paths(item, prefix + (i,))


def get(value, path):
    for key in path:
        value = value[key]
    return value


def alternatives(value, rng):
    if isinstance(value, bool):
        return [not value, int(value), None]
    if isinstance(value, int):
        return [value + 1, value - 1, 0, -1, float(value), 2**62, str(value), None, value * 2]
    if isinstance(value, float):
        return [value * (1 + 1e-12), value + 1, -value, 0.0, 0.5, 1.0, value / 2, 1e300, None, rng.random()]
    if isinstance(value, str):
        return ["", value + "x", value.upper(), None, 1]
    if isinstance(value, list):
        out = [[], list(reversed(value)), None]
        if value:
            out += [value[:-1], value + value[-1:], value[1:] + value[:1]]
        return out
    if isinstance(value, dict):
        out = [dict(value, extra=1), {}, None]
        for key in list(value)[:8]:
            out.append({k: v for k, v in value.items() if k != key})
        return out
    return [0]


def mutate(cert, rng):
    cert = copy.deepcopy(cert)
    path = rng.choice([p for p in paths(cert) if p])
    parent = get(cert, path[:-1])
    parent[path[-1]] = rng.choice(alternatives(parent[path[-1]], rng))
    if rng.random() < 0.3:  # a forger also fixes the guarantee text and the summary
        try:
            cert["guarantee"] = certificate.guarantee(cert["method"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            pass
    return cert, path


def claims(cert):
    """The certificate minus the harmless and audit-only parts (what a plain check must protect)."""
    out = copy.deepcopy(cert)
    out.pop("signature", None)
    out.pop("summary", None)  # a function of the rows, compared through them
    out.pop("guarantee", None)  # a function of the method: consistent() compares them
    if out["method"].get("family") == "bounds":
        out["method"].setdefault("inference", "exact")  # what a certificate without the field means
    for path in HARMLESS | AUDIT_ONLY:
        parent = get(out, path[:-1]) if len(path) > 1 else out
        parent.pop(path[-1], None)
    for row in out["results"]:
        for key in ROW_AUDIT_ONLY[cert["method"]["family"]]:
            row.pop(key, None)
    return out


def consistent(cert) -> bool:
    """What every accepted certificate must satisfy, written out again independently of the checker."""
    m, rows = cert["method"], cert["results"]
    count = min(cert["data"]["num_inputs"], cert["data"]["limit"] or cert["data"]["num_inputs"])
    if [r["index"] for r in rows] != list(range(count)) or cert["guarantee"] != certificate.guarantee(m):
        return False
    for r in rows:
        if r["correct"] != (r["prediction"] == r["label"]) or not 0 <= r["label"] < cert["model"]["num_classes"]:
            return False
        if m["family"] == "smoothing":
            if r["radius"] != 0.0 if r["prediction"] == -1 else not r["p_lower"] > 0.5:
                return False
            continue
        rounding_only = m.get("inference", "exact") == "exact" and "input" in r.get("float32_disagrees", [])
        if r["verified"] and (r["attacked"] or not (r["correct"] or rounding_only)):
            return False
        if m["procedure"] == "verify" and r["radius"] != (m["eps"] if r["verified"] else 0.0):
            return False
        if m["procedure"] == "radius" and not (0 <= r["radius"] <= m["max_eps"] and r["verified"] == (r["radius"] > 0)):
            return False
    return True


def accepted(text, tmp_path, public_key=None):
    """True when the text loads and every check passes; a traceback fails the test."""
    path = tmp_path / "c.json"
    path.write_bytes(text)
    try:
        cert = certificate.load(path)
    except ValueError:
        return None
    return cert if all(ok for _, ok, _ in certificate.check(cert, public_key)) else None


@pytest.mark.parametrize("name", ["smooth", "bounds", "radius"])
def test_mutated_certificates_are_rejected_unless_harmless(genuine, tmp_path, name):
    certs, _ = genuine
    rng = random.Random(f"fuzz-{name}")
    original = certs[name]
    accepted_count = 0
    for _ in range(250):
        cert, path = mutate(original, rng)
        text = json.dumps(cert, indent=1, allow_nan=True).encode()
        got = accepted(text, tmp_path)
        if got is not None:
            accepted_count += 1
            assert claims(got) == claims(original), f"accepted a mutation at {path}"
            assert consistent(got), f"accepted an inconsistent mutation at {path}"
    assert accepted_count < 250  # the oracle is not vacuous: most mutations are caught


@pytest.mark.parametrize("name", ["smooth", "bounds"])
def test_byte_mutations_never_raise_and_are_caught(genuine, tmp_path, name):
    certs, _ = genuine
    rng = random.Random(f"bytes-{name}")
    text = json.dumps(certs[name], indent=1).encode()
    for _ in range(250):
        data = bytearray(text)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            data[at] = rng.choice(b'0123456789.-e"{}[],:x \xff')
        got = accepted(bytes(data), tmp_path)
        if got is not None:
            assert claims(got) == claims(certs[name]) and consistent(got)


def test_signed_certificates_accept_no_change(genuine, tmp_path):
    certs, (private, public) = genuine
    signed = certificate.sign(certs["smooth"], private)
    rng = random.Random("signed")
    for _ in range(150):
        cert, path = mutate(signed, rng)
        got = accepted(json.dumps(cert, allow_nan=True).encode(), tmp_path, public)
        if got is not None:
            assert certificate.canonical_bytes(got) == certificate.canonical_bytes(signed), path
