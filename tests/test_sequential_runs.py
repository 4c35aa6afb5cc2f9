"""Sequential certification as a run: CLI, run store (kill and resume), certificate (schema 2,
every decision replayed by the checker, tampering caught), audit, report. Ray: tests/test_ray.py."""

import copy
import time

import numpy as np
import pytest
from run_files import kill_mid_run, make_files, run_cli, store_rows

from certify import certificate
from certify.cli import smoothing_method
from certify.report import render_html, render_markdown
from certify.runs import run
from certify.runs.audit import audit_certificate
from certify.runs.jobs import sequential_method

BASE = smoothing_method("gaussian", 0.5, 50, 20_000, 0.01, 2_000, 3, "native")


def target(input_shape, boundary="exact", radius=0.3):
    return sequential_method(BASE, input_shape, target_radius=radius, boundary=boundary, first_look=50)


def budget(input_shape):
    return sequential_method(BASE, input_shape, tolerance=0.05, first_look=50)


@pytest.fixture
def runs(files, tmp_path):
    """The three sequential procedures on the same 12 inputs."""
    inputs = run.prepare(*files)
    shape = inputs.data.input_shape
    return {name: run.execute(tmp_path / name, inputs, method, quiet=True)
            for name, method in (("exact", target(shape)), ("bonferroni", target(shape, "bonferroni")),
                                 ("budget", budget(shape)))}


def failed(checks):
    return {name for name, ok, _ in checks if not ok}


def test_certificates_pass_their_checks(runs):
    for name, cert in runs.items():
        assert cert["schema"] == "certify.certificate/2"
        assert not failed(certificate.check(cert)), name
        rows = cert["results"]
        assert all(r["num_samples"] == BASE["n0"] + cert["method"]["looks"][len(r["look_hits"]) - 1] for r in rows)
        s = cert["summary"]
        assert s["fixed_samples"] == len(rows) * (BASE["n0"] + BASE["n"])
        assert s["samples"] < s["fixed_samples"]  # some inputs stopped early
    exact, bonferroni = runs["exact"], runs["bonferroni"]
    assert exact["summary"]["certified_fraction"] == np.mean([r["certified"] for r in exact["results"]])
    assert "whatever the stopping time" in exact["guarantee"] and "error-spending" in exact["guarantee"]
    assert "α / K" in bonferroni["guarantee"]
    # The two boundaries decide the same clear inputs the same way; certified rows carry radius = target.
    for row in exact["results"]:
        assert row["radius"] == (0.3 if row["certified"] else 0.0)
        assert row["prediction"] == (row["selected"] if row["certified"] else -1)


def test_every_decision_is_replayed_so_edits_are_caught(runs):
    exact = runs["exact"]
    certified = next(i for i, r in enumerate(exact["results"]) if r["certified"] and len(r["look_hits"]) > 1)
    refused = next((i for i, r in enumerate(exact["results"]) if not r["certified"]), None)

    def edited(cert, change):
        forged = copy.deepcopy(cert)
        change(forged)
        forged["summary"] = certificate.summarize(forged["method"], forged["results"],
                                                  [c["radius"] for c in forged["summary"]["certified_accuracy"]])
        return failed(certificate.check(forged))

    def stop_earlier(c):  # drop the stopping look, counts made consistent: the boundary said continue there
        row = c["results"][certified]
        row["look_hits"] = row["look_hits"][:-1]
        drawn = c["method"]["looks"][len(row["look_hits"]) - 1]
        row["num_samples"] = BASE["n0"] + drawn
        row["counts"] = [0] * len(row["counts"])
        row["counts"][row["selected"]] = row["look_hits"][-1]
        row["counts"][(row["selected"] + 1) % len(row["counts"])] = drawn - row["look_hits"][-1]

    def lower_boundary(c):
        c["method"]["critical"] = [k - 1 for k in c["method"]["critical"]]

    def more_hits(c):  # a look with more hits than samples added
        row = c["results"][certified]
        row["look_hits"][0] = c["method"]["looks"][0] + 1

    def flip(c):
        row = c["results"][refused if refused is not None else certified]
        row["certified"] = not row["certified"]

    def growth(c):
        c["method"]["growth"] = 1.2

    def alpha(c):
        c["method"]["alpha"] = 0.05

    for change in (stop_earlier, lower_boundary, more_hits, flip, growth, alpha):
        assert "rows" in edited(exact, change), change.__name__
    assert not edited(exact, lambda c: None)


def test_method_records_what_was_used():
    """A first look past the budget is recorded as the budget (the schedule it gives); a target of
    -0.0 as 0.0; the guarantee states the growth as given."""
    method = sequential_method(BASE, (6,), target_radius=-0.0, max_samples=300, first_look=100_000, growth=1.1000001)
    assert method["first_look"] == 300 and method["looks"] == [300]
    assert str(method["target_radius"]) == "0.0"
    assert "×1.1000001" in certificate.guarantee(method)


def test_hostile_schedules_are_refused_quickly(runs):
    """A few bytes of method can ask for a schedule of billions of looks or a boundary at 2^48
    samples; the plain check must refuse them within seconds, not rebuild them."""
    def forged(name, **changes):
        cert = copy.deepcopy(runs[name])
        cert["method"].update(changes)
        cert["guarantee"] = certificate.guarantee(cert["method"])
        cert["summary"] = certificate.summarize(cert["method"], cert["results"],
                                                [c["radius"] for c in cert["summary"]["certified_accuracy"]])
        start = time.perf_counter()
        problems = failed(certificate.check(cert))
        assert time.perf_counter() - start < 20, (name, changes)
        return problems

    huge = 2**48
    assert forged("budget", n=huge, growth=1.000000001, looks=[50, huge])
    assert forged("budget", n=10**9, growth=1.000000001, looks=[50, 10**9])
    assert forged("bonferroni", max_samples=huge, growth=1.001, looks=[50, huge], critical=[51, huge + 1])
    assert forged("bonferroni", max_samples=10**9, growth=1.0000001, looks=[50, 10**9], critical=[51, 10**9 + 1])
    assert forged("exact", max_samples=10**8, looks=[50, 10**8], critical=[51, 10**8 + 1])
    assert forged("exact", alpha=1e-310)
    # Parameters a run never records: a first look other than the schedule's first, a target of -0.0.
    assert forged("exact", first_look=2**48)
    assert forged("exact", target_radius=-0.0)


def test_audit_recertifies_identically(runs, files, tmp_path):
    for name, cert in runs.items():
        path = tmp_path / name / run.CERTIFICATE_NAME
        checks = audit_certificate(cert, path, 4, *files)
        assert not failed(checks), (name, checks)
    forged = copy.deepcopy(runs["exact"])
    forged["method"]["seed"] = 4  # the same boundary, another noise: the audit's rows differ
    checks = audit_certificate(forged, tmp_path / "exact" / run.CERTIFICATE_NAME, 12, *files)
    assert "audit" in failed(checks)


def test_a_version_1_certificate_still_verifies(files, tmp_path):
    inputs = run.prepare(*files, limit=4)
    cert = run.execute(tmp_path / "fixed", inputs, BASE, quiet=True)
    old = dict(cert, schema="certify.certificate/1")
    assert not failed(certificate.check(old))
    assert "schema" in failed(certificate.check(dict(old, method=target(inputs.data.input_shape))))
    assert "Certification report" in render_markdown(old)
    # Schema 1 took any alpha in (0, 1); one among subnormals is refused, not an exception.
    tiny = copy.deepcopy(old)
    tiny["method"]["alpha"] = 1e-310
    tiny["guarantee"] = certificate.guarantee(tiny["method"])
    assert failed(certificate.check(tiny)) == {"rows"}


def test_report_shows_samples_and_saving(runs):
    markdown = render_markdown(runs["exact"])
    assert "## Sequential sampling" in markdown and "Certified at the target radius 0.3" in markdown
    assert "fewer" in markdown
    page = render_html(runs["exact"])
    assert page.count("data:image/png;base64,") == 2  # certified accuracy, samples per input
    assert "Samples used per input" in page


def test_kill_and_resume_gives_identical_rows(tmp_path):
    model, data = make_files(tmp_path, count=80)
    args = ("smooth", "--model", model, "--data", data, "--sigma", "0.5", "--n0", "100", "--target-radius", "0.2",
            "--max-samples", "200000", "--batch-size", "4000", "--alpha", "0.01", "--quiet")
    whole = run_cli(*args, "--out", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    stored = kill_mid_run(args, tmp_path, "cut", at_least=1)
    assert 1 <= stored < 80, "the kill must land mid-run"
    resumed = run_cli(*args, "--out", "cut", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr

    cut = store_rows(tmp_path / "cut" / "run.sqlite")
    assert [r["index"] for r in cut] == list(range(80))
    assert cut == store_rows(tmp_path / "whole" / "run.sqlite")
    checked = run_cli("verify-certificate", tmp_path / "cut" / "certificate.json", "--audit", "3", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("extra,match", [
    (("--target-radius", "0.3", "--sequential"), "not both"),
    (("--max-samples", "100"), "--max-samples applies"),
    (("--sequential", "--max-samples", "100"), "budget is --n"),
    (("--target-radius", "0.3", "--tolerance", "0.1"), "--tolerance applies"),
    (("--sequential", "--boundary", "exact"), "bonferroni"),
    (("--target-radius", "0.3", "--sampler", "torch"), "native sampler"),
    (("--target-radius", "0.3", "--growth", "1"), "--growth"),
    (("--target-radius", "-1"), "--target-radius"),
    (("--target-radius", "0.3", "--max-samples", "20000000"), "bonferroni"),
])
def test_bad_sequential_options(files, tmp_path, extra, match):
    model, data = files
    result = run_cli("smooth", "--model", model, "--data", data, "--sigma", "0.5", "--out", "r", *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert match in result.stderr
    assert not (tmp_path / "r").exists()
