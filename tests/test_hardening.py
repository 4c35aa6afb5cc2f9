"""Issue 12: no wrong or unverifiable certificate from the run API, the run store or a crafted
certificate file; clear errors instead of tracebacks. Each test reproduces a way a certificate
went wrong before."""

import copy
import json
import sqlite3

import pytest
from run_files import make_files, run_cli

from certify import certificate
from certify.cli import bounds_method, smoothing_method
from certify.runs import run
from certify.runs.audit import audit_certificate
from certify.runs.store import LOCK_NAME, RunStore, RunStoreError

SMOOTH = smoothing_method("gaussian", 0.5, 50, 2_000, 0.01, 1_000, 7, "native")
LAPLACE = smoothing_method("laplace", 0.5, 50, 2_000, 0.01, 1_000, 7, "native")
BOUNDS = bounds_method("crown", "linf", 0.05, None, None, None,
                       {"name": "pgd", "eps": 0.05, "steps": 5, "restarts": 1, "seed": 0})


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path)


@pytest.fixture
def keys(tmp_path):
    return certificate.keygen(tmp_path / "keys")


def failed(cert, public_key=None):
    return [name for name, ok, _ in certificate.check(cert, public_key) if not ok]


# ---------------------------------------------------------------------------- parameters that must agree
@pytest.mark.parametrize("noise, norm", [("laplace", "l2"), ("uniform", "l2"), ("gaussian", "l1")])
def test_noise_decides_the_norm_at_run_time(files, tmp_path, noise, norm):
    inputs = run.prepare(*files, limit=2)
    method = dict(smoothing_method(noise, 0.5, 50, 500, 0.01, 1_000, 7, "native"), norm=norm)
    with pytest.raises(ValueError, match=f"certifies .* radii, not {norm}"):
        run.execute(tmp_path / "r", inputs, method, quiet=True)
    assert not (tmp_path / "r").exists()


def test_a_signed_laplace_certificate_with_l2_radii_is_rejected(files, tmp_path, keys):
    """The reproduction: the norm and the guarantee text changed together, then signed by the
    right key. The signature is valid; the method check is what catches it."""
    inputs = run.prepare(*files, limit=3)
    genuine = run.execute(tmp_path / "r", inputs, LAPLACE, quiet=True)
    assert failed(genuine) == []
    forged = copy.deepcopy(genuine)
    forged["method"]["norm"] = "l2"
    forged["guarantee"] = certificate.guarantee(forged["method"])
    forged = certificate.sign(forged, keys[0])
    checks = {name: (ok, detail) for name, ok, detail in certificate.check(forged, keys[1])}
    assert checks["signature"][0]
    assert not checks["method"][0] and "laplace noise certifies l1 radii" in checks["method"][1]


@pytest.mark.parametrize("change, message", [
    (dict(domain=[1.0, 0.0]), "is empty"),
    (dict(attack={"name": "pgd", "eps": 0.5, "steps": 5, "restarts": 1, "seed": 0}), "attack's eps"),
    (dict(max_eps=1.0), "takes no max_eps"),
    (dict(norm="l2", domain=[0.0, 1.0]), "linf balls only"),
])
def test_bounds_parameters_that_disagree_are_refused(files, tmp_path, change, message):
    inputs = run.prepare(*files, limit=2)
    genuine = run.execute(tmp_path / "r", inputs, BOUNDS, quiet=True)
    forged = copy.deepcopy(genuine)
    forged["method"].update(change)
    forged["guarantee"] = certificate.guarantee(forged["method"])
    detail = dict((name, text) for name, ok, text in certificate.check(forged) if not ok)
    assert message in detail["method"]
    with pytest.raises(ValueError, match=message):
        run.execute(tmp_path / "other", inputs, forged["method"], quiet=True)


def test_rows_must_name_classes_of_the_model(files, tmp_path):
    inputs = run.prepare(*files, limit=3)
    genuine = run.execute(tmp_path / "r", inputs, SMOOTH, quiet=True)
    for field, value in (("label", 3), ("prediction", 7), ("counts", [0, 0, 0, 2_000])):
        forged = copy.deepcopy(genuine)
        forged["results"][0][field] = value
        forged["results"][0]["correct"] = forged["results"][0]["prediction"] == forged["results"][0]["label"]
        forged["summary"] = certificate.summarize(forged["method"], forged["results"],
                                                  certificate.DEFAULT_SMOOTHING_RADII)
        assert "coverage" in failed(forged), field


# ---------------------------------------------------------------------------- the run store is not trusted
def edit_row(folder, index, **change):
    with sqlite3.connect(folder / "run.sqlite") as db:
        (text,) = db.execute("SELECT row FROM results WHERE idx = ?", (index,)).fetchone()
        row = json.loads(text)
        row.update(change)
        db.execute("UPDATE results SET row = ? WHERE idx = ?", (json.dumps(row), index))


def test_resume_never_signs_rows_that_fail_the_checks(files, tmp_path, keys):
    inputs = run.prepare(*files, limit=4)
    folder = tmp_path / "r"
    genuine = run.execute(folder, inputs, SMOOTH, quiet=True)
    (folder / run.CERTIFICATE_NAME).unlink()
    certified = next(r for r in genuine["results"] if r["prediction"] != -1)
    edit_row(folder, certified["index"], radius=certified["radius"] * 2)
    with pytest.raises(certificate.CertificateCheckError, match="edited or damaged"):
        run.execute(folder, inputs, SMOOTH, resume=True, quiet=True, sign_key=keys[0])
    assert not (folder / run.CERTIFICATE_NAME).exists()
    # From the command line: exit 1 (a certificate that does not verify), nothing written.
    model, data = files
    result = run_cli("smooth", "--model", model, "--data", data, "--limit", 4, "--sigma", 0.5, "--n0", 50,
                     "--n", 2_000, "--alpha", 0.01, "--seed", 7, "--out", folder, "--resume", "--sign-key", keys[0],
                     "--quiet", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "fail the certificate checks" in result.stderr
    assert not (folder / run.CERTIFICATE_NAME).exists()


def test_a_damaged_row_is_a_clear_error(files, tmp_path):
    inputs = run.prepare(*files, limit=2)
    folder = tmp_path / "r"
    run.execute(folder, inputs, SMOOTH, quiet=True)
    with sqlite3.connect(folder / "run.sqlite") as db:
        db.execute("UPDATE results SET row = '{\"index\": 0, ' WHERE idx = 0")
    store = RunStore.load(folder)
    with pytest.raises(RunStoreError, match="row of input 0 is not valid JSON"):
        store.rows()
    store.close()
    with sqlite3.connect(folder / "run.sqlite") as db:
        db.execute("UPDATE results SET row = '{\"index\": 1}' WHERE idx = 0")
    store = RunStore.load(folder)
    with pytest.raises(RunStoreError, match="not that input's row"):
        store.rows()
    store.close()


def test_a_wrong_signing_key_is_refused_before_any_work(files, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "ec.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    inputs = run.prepare(*files, limit=2)
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        run.execute(tmp_path / "r", inputs, SMOOTH, quiet=True, sign_key=pem)
    assert not (tmp_path / "r").exists()  # refused before the run folder, so before any certification


def test_a_second_process_on_the_run_folder_is_refused(files, tmp_path):
    folder = tmp_path / "r"
    config = run.prepare(*files, limit=2).config(SMOOTH)
    holder = RunStore.open(folder, config, resume=False)
    with pytest.raises(RunStoreError, match="another certify process .* is running"):
        RunStore.open(folder, config, resume=True)
    holder.close()
    RunStore.open(folder, config, resume=True).close()  # free again once the holder closed
    assert (folder / LOCK_NAME).exists()


def test_temporaries_of_a_killed_writer_are_removed_on_resume(files, tmp_path):
    inputs = run.prepare(*files, limit=2)
    folder = tmp_path / "r"
    run.execute(folder, inputs, SMOOTH, quiet=True)
    stale = folder / ".certificate.json.k1ll3d.tmp"
    stale.write_text('{"half": ')
    run.execute(folder, inputs, SMOOTH, resume=True, quiet=True)
    assert not stale.exists()
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME) == []


# ---------------------------------------------------------------------------- crafted certificate files
def write(tmp_path, text, name="c.json"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ('{"a": ' + "1" * 5_000 + "}", "beyond ±2\\^63"),
    ('{"a": 123456789012345678901}', "beyond ±2\\^63"),
    ('{"a": 1e400}', "too large for a double"),
    ("[" * 100_000 + "]" * 100_000, "nesting depth"),
    ('{"a": NaN}', "NaN"),
    ('{"a": 1, "a": 2}', "repeats the key"),
    ("\xff\xfe", "not a JSON certificate"),
])
def test_crafted_certificate_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "c.json"
    path.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    with pytest.raises(ValueError, match=message):
        certificate.load(path)


def test_float_indices_fail_the_schema_not_the_audit(files, tmp_path):
    """0.0 is an integer to standard JSON Schema; it reached range() and list slicing in --audit."""
    inputs = run.prepare(*files, limit=3)
    folder = tmp_path / "r"
    run.execute(folder, inputs, SMOOTH, quiet=True)
    text = (folder / run.CERTIFICATE_NAME).read_text().replace('"index": 0,', '"index": 0.0,')
    path = write(tmp_path, text)
    cert = certificate.load(path)
    detail = dict((name, text) for name, ok, text in certificate.check(cert) if not ok)
    assert "not of type 'integer'" in detail["schema"]
    result = run_cli("verify-certificate", path, "--audit", 2, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr


def test_the_audit_compares_what_the_certificate_says_of_its_files(files, tmp_path):
    inputs = run.prepare(*files, limit=3)
    folder = tmp_path / "r"
    genuine = run.execute(folder, inputs, SMOOTH, quiet=True)
    forged = copy.deepcopy(genuine)
    forged["data"]["num_inputs"] = 40  # the limit hides it from the coverage check
    assert failed(forged) == []
    checks = audit_certificate(forged, folder / run.CERTIFICATE_NAME, 1)
    detail = dict((name, text) for name, ok, text in checks if not ok)
    assert "data.num_inputs: 40 in the certificate, 12 in the files" in detail["files"]
    assert all(ok for _, ok, _ in audit_certificate(genuine, folder / run.CERTIFICATE_NAME, 1))


# ---------------------------------------------------------------------------- limits
def test_readme_lists_every_limit_with_its_variable_and_default():
    from pathlib import Path

    from certify import limits

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for limit in limits.LIMITS.values():
        line = next((ln for ln in readme.splitlines() if ln.startswith(f"| {limit.name} |")), None)
        assert line is not None, limit.name
        assert f"`{limit.env}`" in line and limit.what in line


def test_a_limit_names_itself_and_how_to_raise_it(monkeypatch):
    from certify import limits

    limits.check("json_depth", 64, "x")
    with pytest.raises(limits.ResourceLimitError, match="65 levels exceeds .* set CERTIFY_LIMIT_JSON_DEPTH"):
        limits.check("json_depth", 65, "x")
    monkeypatch.setenv("CERTIFY_LIMIT_JSON_DEPTH", "1e3")
    limits.check("json_depth", 65, "x")
    monkeypatch.setenv("CERTIFY_LIMIT_JSON_DEPTH", "lots")
    with pytest.raises(limits.ResourceLimitError, match="not a number"):
        limits.check("json_depth", 65, "x")


def test_a_bounds_run_from_before_the_inference_field_resumes(files, tmp_path):
    inputs = run.prepare(*files, limit=3)
    old = {k: v for k, v in BOUNDS.items() if k != "inference"}
    assert "inference" in BOUNDS  # the field the old store lacks
    RunStore.open(tmp_path / "r", inputs.config(old), resume=False).close()
    cert = run.execute(tmp_path / "r", inputs, BOUNDS, resume=True, quiet=True)
    assert failed(cert) == [] and len(cert["results"]) == 3
    with pytest.raises(RunStoreError, match="method.inference"):
        run.execute(tmp_path / "r", inputs, dict(BOUNDS, inference="float32"), resume=True, quiet=True)
