"""Run store, resume and certificates, in process (the CLI tests run the same in subprocesses)."""

import copy
import json

import pytest
from run_files import make_files

from certify import certificate
from certify.cli import bounds_method, smoothing_method
from certify.runs import run
from certify.runs.audit import audit_certificate
from certify.runs.progress import ProgressLine
from certify.runs.store import RunStore, RunStoreError

SMOOTH = smoothing_method("gaussian", 0.5, 50, 2_000, 0.01, 1_000, 7, "native")
BOUNDS = bounds_method("crown", "linf", 0.05, None, None, None,
                       {"name": "pgd", "eps": 0.05, "steps": 20, "restarts": 1, "seed": 0})


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path)


def without_times(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


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
    for job_chunk in (5,):
        monkeypatch.setattr(run, "make_job", _small_chunks(run.make_job, job_chunk))
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


def _small_chunks(make_job, size):
    def make(inputs, method):
        job = make_job(inputs, method)
        job.chunk = size
        return job
    return make


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
