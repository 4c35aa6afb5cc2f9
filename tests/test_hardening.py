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


# ---------------------------------------------------------------------------- review 2: certificates that contradict themselves
def resum(cert):
    """The summary recomputed from the (edited) rows, as a forger would."""
    cert["summary"] = certificate.summarize(cert["method"], cert["results"],
                                            [c["radius"] for c in cert["summary"]["certified_accuracy"]])
    return cert


def tied_inputs(folder):
    """logits (1000, 1000 + 1e-5 x0): float32 ties them, the exact network prefers class 1. Rows: 0
    verified with a float32 tie at the input (and at the attack's point); 1 correct, not verified;
    2 verified and correct."""
    import torch
    from torch import nn

    from certify.formats.data_files import save_npz
    from certify.formats.onnx_import import export_onnx

    folder.mkdir(parents=True, exist_ok=True)
    net = nn.Sequential(nn.Linear(2, 2)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.0, 0.0], [1e-5, 0.0]]))
        net[0].bias.copy_(torch.tensor([1000.0, 1000.0]))
    export_onnx(net, (2,), folder / "net.onnx")
    save_npz(folder / "data.npz", torch.tensor([[0.5, 0.5], [0.5, 0.5], [5.0, 0.0]]), torch.tensor([1, 0, 1]))
    return run.prepare(folder / "net.onnx", folder / "data.npz")


TIED = bounds_method("crown", "linf", 0.1, None, None, None, {"name": "pgd", "eps": 0.1, "steps": 5, "restarts": 1,
                                                            "seed": 0})


def test_an_old_bounds_store_gives_a_certificate_that_says_what_its_rows_mean(tmp_path):
    """A store without method.inference resumes as exact inference; its certificate must carry the
    field (and its guarantee text), since its rows carry float32_disagrees."""
    inputs = tied_inputs(tmp_path / "files")
    old = {k: v for k, v in TIED.items() if k != "inference"}
    RunStore.open(tmp_path / "r", inputs.config(old), resume=False).close()
    cert = run.execute(tmp_path / "r", inputs, TIED, resume=True, quiet=True)
    assert cert["method"]["inference"] == "exact"
    assert cert["guarantee"] == certificate.guarantee(TIED) and "float32_disagrees" in cert["guarantee"]
    assert cert["results"][0]["float32_disagrees"] == ["input", "attack"] and not cert["results"][0]["correct"]
    assert failed(cert) == []
    assert certificate.load(tmp_path / "r" / run.CERTIFICATE_NAME)["method"]["inference"] == "exact"
    store = RunStore.load(tmp_path / "r")
    assert store.config["method"]["inference"] == "exact"
    store.close()


def test_a_certificate_without_the_inference_field_claims_float32_agrees(tmp_path):
    """Old certificates (no method.inference) say 'the model classifies all of them as the label':
    no row may record a float32 disagreement or be verified yet misclassified."""
    cert = run.execute(tmp_path / "r", tied_inputs(tmp_path / "files"), TIED, quiet=True)
    assert failed(cert) == []
    old = copy.deepcopy(cert)
    del old["method"]["inference"]
    old["guarantee"] = certificate.guarantee(old["method"])
    assert "classifies all of them as the label" in old["guarantee"]
    detail = dict((name, text) for name, ok, text in certificate.check(old) if not ok)
    assert list(detail) == ["rows"] and "input 0" in detail["rows"]
    # without the record the row is still verified but misclassified
    del old["results"][0]["float32_disagrees"]
    assert failed(resum(old)) == ["rows"]
    # the rows without any disagreement are a valid old certificate
    fine = copy.deepcopy(old)
    fine["results"] = fine["results"][1:]
    for i, row in enumerate(fine["results"]):
        row["index"] = i
    fine["data"]["limit"] = 2
    assert "rows" not in failed(resum(fine))


def test_seeds_up_to_2_64_give_certificates_that_load_and_check(files, tmp_path):
    inputs = run.prepare(*files, limit=2)
    method = smoothing_method("gaussian", 0.5, 20, 200, 0.01, 1_000, 2**64 - 1, "native")
    run.execute(tmp_path / "r", inputs, method, quiet=True)
    cert = certificate.load(tmp_path / "r" / run.CERTIFICATE_NAME)
    assert cert["method"]["seed"] == 2**64 - 1
    assert failed(cert) == []
    assert certificate.load(write(tmp_path, '{"a": -9223372036854775808}')) == {"a": -2**63}
    for text in ('{"a": 18446744073709551616}', '{"a": -9223372036854775809}', '{"a": 99999999999999999999}'):
        with pytest.raises(ValueError, match="holds the integer"):
            certificate.load(write(tmp_path, text))


@pytest.mark.parametrize("where, value", [
    (("method", "n"), 2**48 + 1), (("method", "n0"), 2**48 + 1), (("results", 0, "index"), 2**32),
])
def test_smoothing_run_limits_are_in_the_schema(files, tmp_path, where, value):
    cert = run.execute(tmp_path / "r", run.prepare(*files, limit=2), SMOOTH, quiet=True)
    forged = copy.deepcopy(cert)
    parent = forged
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    detail = dict((name, text) for name, ok, text in certificate.check(forged) if not ok)
    assert list(detail) == ["schema"], detail
    assert f"at {'/'.join(map(str, where))}: {value} is greater than the maximum" in detail["schema"]
    if where[0] == "method":
        with pytest.raises(ValueError, match=f"invalid smoothing settings: {value} is greater than the maximum"):
            certificate.check_method(forged["method"])


@pytest.mark.parametrize("change", [
    dict(eps=0.0, attack={"name": "pgd", "eps": 0.0, "steps": 5, "restarts": 1, "seed": 0}),
    dict(attack={"name": "pgd", "eps": 0.05, "steps": 10**6 + 1, "restarts": 1, "seed": 0}),
    dict(attack={"name": "pgd", "eps": 0.05, "steps": 5, "restarts": 10**6 + 1, "seed": 0}),
    dict(procedure="radius", eps=None, attack=None, max_eps=0.0, tol=0.1),
])
def test_bounds_run_limits_are_in_the_schema(change):
    method = dict(BOUNDS, **change)
    with pytest.raises(ValueError, match="invalid bounds settings"):
        certificate.check_method(method)
    certificate.check_method(BOUNDS)
    certificate.check_method(dict(BOUNDS, attack=dict(BOUNDS["attack"], steps=10**6, restarts=10**6)))


def test_an_audit_that_cannot_run_the_job_is_a_failure_line(files, tmp_path):
    folder = tmp_path / "r"
    cert = run.execute(folder, run.prepare(*files, limit=2), SMOOTH, quiet=True)
    forged = copy.deepcopy(cert)
    forged["method"]["n"] = 2**60  # past the sampler's limit: make_job / certify refuse it
    checks = audit_certificate(forged, folder / run.CERTIFICATE_NAME, 1)
    assert checks[-1][0] == "audit" and not checks[-1][1]
    assert "2**48" in checks[-1][2] or "2^48" in checks[-1][2] or "281474976710656" in checks[-1][2], checks[-1]


def test_the_audit_reads_certificates_without_a_limit(tmp_path):
    files = make_files(tmp_path, count=3)
    folder = tmp_path / "r"
    cert = run.execute(folder, run.prepare(*files), SMOOTH, quiet=True)
    del cert["data"]["limit"]
    assert failed(cert) == []
    checks = audit_certificate(cert, folder / run.CERTIFICATE_NAME, 1)
    assert all(ok for _, ok, _ in checks), checks


def test_abstaining_rows_carry_the_p_lower_of_their_counts(files, tmp_path):
    import numpy as np

    from certify.runs.jobs import NOISES
    from certify.smoothing.smoothed import smoothing_bounds

    cert = run.execute(tmp_path / "r", run.prepare(*files, limit=3), SMOOTH, quiet=True)
    index = next(i for i, r in enumerate(cert["results"]) if r["prediction"] != -1)
    m = cert["method"]
    tail = NOISES[m["noise"]](m["scale"]).tail_mass(6, m["backend"])

    def abstaining(counts, p_lower):
        forged = copy.deepcopy(cert)
        row = forged["results"][index]
        row.update(prediction=-1, correct=False, radius=0.0, counts=counts, p_lower=p_lower)
        return resum(forged)

    def bound(hits):
        return float(smoothing_bounds(NOISES[m["noise"]](m["scale"]), np.array([hits]), m["n"], m["alpha"], tail)[0][0])

    row = cert["results"][index]
    assert failed(abstaining(row["counts"], 0.99)) == ["rows"]  # p_lower above 1/2: it would certify
    even = [1_000, 1_000, 0]
    assert failed(abstaining(even, 0.3)) == ["rows"]  # not the bound of any class's count
    assert failed(abstaining(even, bound(1_000))) == []  # genuine: the chosen class had 1000 hits
    assert failed(abstaining(even, bound(0))) == []  # or none
    assert failed(abstaining(row["counts"], bound(max(row["counts"])))) == ["rows"]  # that bound is > 1/2


def test_bounds_rows_agree_with_their_margin_and_attack(files, tmp_path):
    cert = run.execute(tmp_path / "r", run.prepare(*files, limit=8), BOUNDS, quiet=True)
    rows = cert["results"]
    assert failed(cert) == []
    wrong = next(i for i, r in enumerate(rows) if not r["correct"])
    assert rows[wrong]["attacked"] is True  # PGD counts a misclassified input as broken
    unverified = next(i for i, r in enumerate(rows) if not r["verified"] and "margin" in r)
    verified = next(i for i, r in enumerate(rows) if r["verified"])
    forged = copy.deepcopy(cert)
    forged["results"][unverified]["margin"] = 5.0
    assert failed(resum(forged)) == ["rows"]
    forged = copy.deepcopy(cert)
    forged["results"][verified]["margin"] = 0.0
    assert failed(resum(forged)) == ["rows"]
    forged = copy.deepcopy(cert)
    forged["results"][wrong]["attacked"] = False
    assert failed(resum(forged)) == ["rows"]


def test_radius_rows_carry_no_margin(files, tmp_path):
    method = bounds_method("ibp", "linf", None, 0.3, 0.01, [0.0, 1.0], None)
    cert = run.execute(tmp_path / "r", run.prepare(*files, limit=3), method, quiet=True)
    assert failed(cert) == [] and not any("margin" in r for r in cert["results"])
    forged = copy.deepcopy(cert)
    forged["results"][0]["margin"] = 1.0 if forged["results"][0]["verified"] else -1.0
    assert failed(forged) == ["rows"]


def test_a_verified_row_misclassified_by_float32_rounding_needs_no_attack(tmp_path):
    cert = run.execute(tmp_path / "r", tied_inputs(tmp_path / "files"), TIED, quiet=True)
    row = cert["results"][0]
    assert row["verified"] and not row["correct"] and row["attacked"] is False and failed(cert) == []


# ---------------------------------------------------------------------------- review 2: stale files, clear errors
def test_leftovers_of_a_killed_store_creation_do_not_block_the_folder(files, tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    for suffix in ("", "-wal", "-shm", "-journal"):
        (folder / f"run.sqlite.creating{suffix}").write_bytes(b"half a database")
    cert = run.execute(folder, run.prepare(*files, limit=2), SMOOTH, quiet=True)
    assert failed(cert) == []
    assert not list(folder.glob("run.sqlite.creating*"))


def test_file_names_that_are_not_utf8_are_refused_up_front(files, tmp_path):
    import os
    import shutil

    model, data = files
    odd = tmp_path / os.fsdecode(b"n\xff.onnx")
    shutil.copy(model, odd)
    with pytest.raises(ValueError, match="not valid UTF-8.*rename"):
        run.prepare(odd, data)
    odd_data = tmp_path / os.fsdecode(b"d\xfe.npz")
    shutil.copy(data, odd_data)
    with pytest.raises(ValueError, match="not valid UTF-8.*rename"):
        run.prepare(model, str(odd_data))


def test_default_radii_do_not_overflow():
    method = bounds_method("ibp", "linf", None, 1e308, 0.01, None, None)
    radii = certificate.default_radii(method)
    assert radii[0] == 0.0 and radii[-1] == 1e308 and all(r < float("inf") for r in radii)
    assert radii == sorted(radii) and len(radii) == 11
    assert certificate.default_radii(dict(method, max_eps=1.0)) == [k / 10 for k in range(11)]


@pytest.mark.parametrize("domain", [("0", "inf"), ("nan", "1"), ("-inf", "1")])
def test_a_domain_that_is_not_finite_is_refused(files, tmp_path, domain):
    from click.testing import CliRunner

    from certify.cli import main

    model, data = files
    result = CliRunner().invoke(main, ["bounds", "--model", str(model), "--data", str(data), "--eps", "0.1",
                                       "--domain", *domain, "--out", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "--domain" in result.output and "finite" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("change, message", [
    (dict(label=None), "input 1: 'label'"),
    (dict(seconds=1e300), "input 1: 'seconds'"),
    (dict(radius="big"), "input 1: 'radius'"),
    (dict(correct=2), "input 1: 'correct'"),
])
def test_export_of_an_edited_store_names_the_row(files, tmp_path, change, message):
    from click.testing import CliRunner

    from certify.cli import main

    folder = tmp_path / "r"
    run.execute(folder, run.prepare(*files, limit=2), SMOOTH, quiet=True)
    edit_row(folder, 1, **change)
    if change.get("label", 0) is None:
        with sqlite3.connect(folder / "run.sqlite") as db:  # the key missing altogether
            (text,) = db.execute("SELECT row FROM results WHERE idx = 1").fetchone()
            row = json.loads(text)
            del row["label"]
            db.execute("UPDATE results SET row = ? WHERE idx = 1", (json.dumps(row),))
    result = CliRunner().invoke(main, ["export", str(folder), "--tsv", str(tmp_path / "out.tsv")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "edited or damaged" in result.output
    assert not (tmp_path / "out.tsv").exists()


def test_report_of_a_malformed_certificate_is_bad_input(files, tmp_path):
    from click.testing import CliRunner

    from certify.cli import main

    folder = tmp_path / "r"
    run.execute(folder, run.prepare(*files, limit=2), SMOOTH, quiet=True)
    path = folder / run.CERTIFICATE_NAME
    cert = json.loads(path.read_text())
    cert["results"][0]["radius"] = "big"
    path.write_text(json.dumps(cert))
    (folder / "report.html").unlink()
    result = CliRunner().invoke(main, ["report", str(folder)])
    assert result.exit_code == 2, result.output
    assert "schema" in result.output and "results/0/radius" in result.output
    assert not (folder / "report.html").exists()


def test_a_radius_run_up_to_1e308_gives_a_certificate_and_report(files, tmp_path):
    method = bounds_method("ibp", "linf", None, 1e308, 0.01, None, None)
    cert = run.execute(tmp_path / "r", run.prepare(*files, limit=2), method, quiet=True)  # warnings are errors here
    assert failed(cert) == []
    assert [c["radius"] for c in cert["summary"]["certified_accuracy"]] == certificate.default_radii(method)
    assert (tmp_path / "r" / "report.html").stat().st_size > 0


def test_a_method_without_inference_states_it_where_a_row_needs_it(tmp_path):
    """From Python, a bounds method in the older form (no inference): its certificate keeps the old
    text only while that text holds; rows recording a float32 disagreement get the field."""
    inputs = tied_inputs(tmp_path / "files")
    old = {k: v for k, v in TIED.items() if k != "inference"}
    cert = run.execute(tmp_path / "r", inputs, old, quiet=True)
    assert cert["method"] == TIED and cert["guarantee"] == certificate.guarantee(TIED)
    assert "float32_disagrees" in cert["results"][0] and failed(cert) == []
    (tmp_path / "r" / run.CERTIFICATE_NAME).unlink()
    again = run.execute(tmp_path / "r", inputs, old, resume=True, quiet=True)  # the older form resumes its own run
    assert again["method"] == TIED
