"""Run store, resume and certificates, in process (the CLI tests run the same in subprocesses)."""

import copy
import json

import pytest
import torch
from run_files import small_chunks, without_times

from certify import certificate
from certify.cli import bounds_method, smoothing_method
from certify.runs import run
from certify.runs.audit import audit_certificate
from certify.runs.progress import ProgressLine
from certify.runs.store import RunStore, RunStoreError

SMOOTH = smoothing_method("gaussian", 0.5, 50, 2_000, 0.01, 1_000, 7, "native")
BOUNDS = bounds_method("crown", "linf", 0.05, None, None, None,
                       {"name": "pgd", "eps": 0.05, "steps": 20, "restarts": 1, "seed": 0})


@pytest.mark.parametrize("method", [SMOOTH, BOUNDS], ids=["smooth", "bounds"])
def test_interrupted_run_resumes_to_the_same_rows(files, tmp_path, monkeypatch, method):
    inputs = run.prepare(*files)
    whole = run.execute(tmp_path / "whole", inputs, method, quiet=True)

    # Interrupt after the first chunk of inputs is committed, as Ctrl-C would.
    original = ProgressLine.add_inputs

    def interrupt(self, count):
        original(self, count)
        raise KeyboardInterrupt

    monkeypatch.setattr(ProgressLine, "add_inputs", interrupt)
    small_chunks(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        run.execute(tmp_path / "cut", inputs, method, quiet=True)
    store = RunStore.load(tmp_path / "cut")
    assert len(store.rows()) == 5  # committed before the interrupt
    store.close()
    assert not (tmp_path / "cut" / run.CERTIFICATE_NAME).exists()

    monkeypatch.setattr(ProgressLine, "add_inputs", original)
    with pytest.raises(RunStoreError, match="--resume"):
        run.execute(tmp_path / "cut", inputs, method, quiet=True)
    resumed = run.execute(tmp_path / "cut", inputs, method, resume=True, quiet=True)
    assert without_times(resumed["results"]) == without_times(whole["results"])
    assert [r["index"] for r in resumed["results"]] == list(range(12))


def test_resume_refuses_other_settings(files, tmp_path):
    inputs = run.prepare(*files, limit=3)
    run.execute(tmp_path / "r", inputs, SMOOTH, quiet=True)
    other = dict(SMOOTH, alpha=0.001)
    with pytest.raises(RunStoreError, match="alpha"):
        run.execute(tmp_path / "r", inputs, other, resume=True, quiet=True)


def test_store_refuses_duplicates_and_foreign_folders(tmp_path):
    store = RunStore.open(tmp_path / "s", {"a": 1}, resume=False)
    store.add([{"index": 0, "x": 1}])
    with pytest.raises(RunStoreError, match="twice"):
        store.add([{"index": 1}, {"index": 0}])
    assert [r["index"] for r in store.rows()] == [0]  # the failed batch left nothing behind
    store.close()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunStoreError, match="not a run folder"):
        RunStore.open(tmp_path / "other", {"a": 1}, resume=False)


def test_bad_input_leaves_no_run_folder(files, tmp_path):
    inputs = run.prepare(*files)
    with pytest.raises(ValueError):
        run.execute(tmp_path / "r", inputs, dict(BOUNDS, method="no-such-method"), quiet=True)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- certificates
@pytest.fixture
def smoothing_certificate(files, tmp_path):
    inputs = run.prepare(*files)
    cert = run.execute(tmp_path / "run", inputs, SMOOTH, quiet=True)
    return cert, tmp_path / "run" / run.CERTIFICATE_NAME


def failed(checks):
    return {name for name, ok, _ in checks if not ok}


def test_certificate_passes_its_checks_and_states_the_guarantee(smoothing_certificate):
    cert, path = smoothing_certificate
    assert failed(certificate.check(cert)) == set()
    assert json.loads(path.read_text()) == cert
    assert "1 - α = 0.99" in cert["guarantee"] and "ℓ2" in cert["guarantee"]
    s = cert["summary"]
    correct = [r["prediction"] == r["label"] for r in cert["results"]]
    assert s["clean_accuracy"] == sum(correct) / len(correct)
    assert s["certified_accuracy"][0]["accuracy"] == s["clean_accuracy"]


def test_tampering_is_caught(smoothing_certificate, tmp_path):
    cert, _ = smoothing_certificate
    certified = next(i for i, r in enumerate(cert["results"]) if r["prediction"] >= 0)

    bigger = copy.deepcopy(cert)
    bigger["results"][certified]["radius"] *= 1.5
    assert "rows" in failed(certificate.check(bigger))

    summary = copy.deepcopy(cert)
    summary["summary"]["clean_accuracy"] = 1.0 if cert["summary"]["clean_accuracy"] < 1 else 0.5
    assert failed(certificate.check(summary)) == {"summary"}

    broken = copy.deepcopy(cert)
    del broken["method"]["alpha"]
    assert failed(certificate.check(broken)) == {"schema"}

    private, public = certificate.keygen(tmp_path / "keys")
    signed = certificate.sign(cert, private)
    assert failed(certificate.check(signed, public)) == set()
    other_private, other_public = certificate.keygen(tmp_path / "keys", name="other")
    assert failed(certificate.check(signed, other_public)) == {"signature"}
    assert failed(certificate.check(cert, public)) == {"signature"}  # unsigned but a key was required
    rehashed = copy.deepcopy(signed)
    rehashed["model"]["sha256"] = "0" * 64
    assert failed(certificate.check(rehashed, public)) == {"signature"}
    with pytest.raises(FileExistsError):
        certificate.keygen(tmp_path / "keys")


def test_audit_recertifies_and_catches_swapped_files(smoothing_certificate, files):
    cert, path = smoothing_certificate
    assert failed(audit_certificate(cert, path, 4)) == set()

    # Counts, p_lower and radius changed consistently: the per-row check cannot see it, the audit can.
    forged = copy.deepcopy(cert)
    for row in forged["results"]:
        if row["prediction"] >= 0:
            row["counts"] = [0] * len(row["counts"])
            row["counts"][row["prediction"]] = SMOOTH["n"]
            p_lower, radius = _bounds_for(SMOOTH["n"])
            row["p_lower"], row["radius"] = p_lower, radius
    forged["summary"] = certificate.summarize(forged["method"], forged["results"],
                                              [c["radius"] for c in cert["summary"]["certified_accuracy"]])
    assert "rows" not in failed(certificate.check(forged))
    assert failed(audit_certificate(forged, path, 12)) == {"audit"}

    model_path, _ = files
    model_path.write_bytes(model_path.read_bytes() + b"\0")
    checks = audit_certificate(cert, path, 2)
    assert failed(checks) == {"model file"}


def _bounds_for(n):
    import numpy as np

    from certify.noise import Gaussian
    from certify.smoothing.smoothed import smoothing_bounds

    noise = Gaussian(SMOOTH["scale"])
    p, r = smoothing_bounds(noise, np.array([n]), n, SMOOTH["alpha"], noise.tail_mass(6, "native"))
    return float(p[0]), float(r[0])


def test_bounds_certificate_has_attack_beside_proof(files, tmp_path):
    inputs = run.prepare(*files)
    cert = run.execute(tmp_path / "b", inputs, BOUNDS, quiet=True)
    assert failed(certificate.check(cert)) == set()
    s = cert["summary"]
    assert s["verified_accuracy"] <= s["pgd_accuracy"] <= s["clean_accuracy"]
    for row in cert["results"]:
        assert not (row["verified"] and row["attacked"])
        assert row["radius"] == (0.05 if row["verified"] else 0.0)
    assert "no failure probability" in cert["guarantee"]


# ---------------------------------------------------------------------------- review regressions
def test_forged_certificates_are_caught(smoothing_certificate):
    """Forgeries that keep the summary consistent with the rows (recomputed with summarize)."""
    cert, _ = smoothing_certificate
    radii = [c["radius"] for c in cert["summary"]["certified_accuracy"]]

    def forge(edit):
        forged = copy.deepcopy(cert)
        edit(forged)
        forged["summary"] = certificate.summarize(forged["method"], forged["results"], radii)
        return failed(certificate.check(forged))

    wrong = next(r["index"] for r in cert["results"] if r["prediction"] != r["label"])

    def mark_correct(c):
        c["results"][wrong]["correct"] = True

    def drop_wrong(c):
        c["results"] = [r for r in c["results"] if r["correct"]]

    def duplicate(c):
        c["results"][wrong] = copy.deepcopy(c["results"][wrong + 1])

    def guarantee_text(c):
        c["guarantee"] = c["guarantee"].replace("1 - α", "1 - α²")

    for edit in (mark_correct, drop_wrong, duplicate, guarantee_text):
        assert "coverage" in forge(edit), edit.__name__


def test_forged_bounds_rows_are_caught(files, tmp_path):
    cert = run.execute(tmp_path / "b", run.prepare(*files), BOUNDS, quiet=True)
    radii = [c["radius"] for c in cert["summary"]["certified_accuracy"]]
    verified = next(i for i, r in enumerate(cert["results"]) if r["verified"])
    attacked = next(i for i, r in enumerate(cert["results"]) if r["attacked"])
    for field, index, value in (("radius", verified, 5.0), ("verified", attacked, True)):
        forged = copy.deepcopy(cert)
        forged["results"][index][field] = value
        forged["summary"] = certificate.summarize(forged["method"], forged["results"], radii)
        assert "rows" in failed(certificate.check(forged)), field


@pytest.mark.parametrize("text,match", [
    ('{"a": 1, "a": 2}', "repeats the key"),
    ('{"a": NaN}', "NaN"),
    ('{"a": 1e400}', "too large"),
])
def test_certificate_files_with_json_tricks_are_refused(tmp_path, text, match):
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(ValueError, match=match):
        certificate.load(tmp_path / "c.json")


def test_unpinned_signature_is_reported_as_such(smoothing_certificate, tmp_path):
    cert, _ = smoothing_certificate
    private, _ = certificate.keygen(tmp_path / "k")
    detail = dict((name, text) for name, _, text in certificate.check(certificate.sign(cert, private)))
    assert "unpinned key" in detail["signature"]
    damaged = certificate.sign(cert, private)
    damaged["signature"]["public_key"] = "***"
    assert failed(certificate.check(damaged)) == {"signature"}


def test_audit_never_imports_the_certificates_arch(files, tmp_path):
    cert = copy.deepcopy(run.execute(tmp_path / "r", run.prepare(*files, limit=2), SMOOTH, quiet=True))
    cert["model"]["format"], cert["model"]["arch"] = "state_dict", "os:getcwd"
    checks = audit_certificate(cert, tmp_path / "r" / run.CERTIFICATE_NAME, 1)
    assert failed(checks) == {"audit"}
    assert "pass --arch" in checks[-1][2]


def test_attack_does_not_depend_on_the_batch(files):
    from certify.attack import pgd
    from certify.formats.data_files import load_data
    from certify.formats.model_files import load_model

    model, data = load_model(files[0]).module, load_data(files[1])
    together = pgd(model, data.x, data.y, 0.2, steps=10, restarts=2, indices=range(12))
    alone = torch.cat([pgd(model, data.x[i:i + 1], data.y[i:i + 1], 0.2, steps=10, restarts=2, indices=[i])
                       for i in range(12)])
    assert together.tolist() == alone.tolist()
    assert 0 < int(together.sum()) < 12


def test_more_review_regressions(files, tmp_path):
    model, data = files
    # inputs outside the domain: refused before any run folder exists
    with pytest.raises(ValueError, match="outside the domain"):
        run.execute(tmp_path / "d", run.prepare(model, data), dict(BOUNDS, domain=[0.0, 0.5]), quiet=True)
    assert not (tmp_path / "d").exists()
    # one input
    one = run.execute(tmp_path / "one", run.prepare(model, data, limit=1), SMOOTH, quiet=True)
    assert len(one["results"]) == 1
    # a store whose creation crashed is replaced; a different batch size is another run (it can
    # change float32 rounding in the model's forward pass, hence rows)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.sqlite.creating").write_bytes(b"half")
    inputs = run.prepare(model, data, limit=3)
    first = run.execute(tmp_path / "c", inputs, SMOOTH, quiet=True)
    with pytest.raises(RunStoreError, match="batch_size"):
        run.execute(tmp_path / "c", inputs, dict(SMOOTH, batch_size=37), resume=True, quiet=True)
    again = run.execute(tmp_path / "c", inputs, SMOOTH, resume=True, quiet=True)
    assert without_times(again["results"]) == without_times(first["results"])
    # a garbage store is a clear error
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "run.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(RunStoreError, match="not a certify run store"):
        RunStore.load(tmp_path / "g").rows()


def test_demo_refuses_a_folder_with_other_settings(tmp_path):
    from certify.demo import run_demo

    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "demo.json").write_text(json.dumps({"inputs": 5, "n": 100}))
    with pytest.raises(ValueError, match="other settings"):
        run_demo(tmp_path / "demo", num_inputs=4, n=100, quiet=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="does not hold a certify demo"):
        run_demo(tmp_path / "other", num_inputs=4, n=100, quiet=True)
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["mine.txt"]
