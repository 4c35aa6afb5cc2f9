"""Complete verification from the run API and the command line: three-valued rows, certificates
whose counterexamples `verify-certificate --audit` replays, alpha-CROWN beside CROWN."""

import copy

import pytest
import torch
from run_files import make_files, run_cli
from torch import nn

from certify import certificate
from certify.cli import bounds_method
from certify.formats.data_files import save_npz
from certify.formats.onnx_import import export_onnx
from certify.runs import run
from certify.runs.audit import audit_certificate

ATTACK = {"name": "pgd", "eps": 0.1, "steps": 20, "restarts": 1, "seed": 0}
BAB = bounds_method("bab", "linf", 0.1, None, None, None, ATTACK, timeout_per_input=20)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A centred MLP (its decision varies) and 10 inputs in [-1, 1] labelled by it, one relabelled."""
    folder = tmp_path_factory.mktemp("bab")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    with torch.no_grad():  # small biases: the decision varies over [-1, 1]^6
        for m in net:
            if isinstance(m, nn.Linear):
                m.bias.uniform_(-0.05, 0.05)
    x = torch.rand(10, 6) * 2 - 1
    with torch.no_grad():
        y = net(x).argmax(1)
    y[0] = (y[0] + 1) % 3
    export_onnx(net, (6,), folder / "net.onnx")
    save_npz(folder / "data.npz", x, y)
    return folder / "net.onnx", folder / "data.npz"


@pytest.fixture(scope="module")
def decided(files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "r"
    return run.execute(folder, run.prepare(*files), BAB, quiet=True), folder


def test_every_input_is_decided_and_the_certificate_checks(decided):
    cert, _ = decided
    statuses = [r["status"] for r in cert["results"]]
    assert "unknown" not in statuses
    assert {"verified", "falsified"} <= set(statuses)  # the eps is chosen so both occur
    assert cert["results"][0]["status"] == "falsified"  # misclassified: the input itself
    assert all(("counterexample" in r) == (r["status"] == "falsified") for r in cert["results"])
    assert [n for n, ok, _ in certificate.check(cert) if not ok] == []
    s = cert["summary"]
    assert s["verified_accuracy"] + s["falsified_fraction"] + s["unknown_fraction"] == pytest.approx(1.0)


def test_the_audit_replays_every_counterexample(decided):
    cert, folder = decided
    checks = {name: (ok, detail) for name, ok, detail in audit_certificate(cert, folder / "certificate.json", 2)}
    assert checks["counterexamples"][0] and checks["audit"][0], checks
    falsified = next(i for i, r in enumerate(cert["results"]) if r["status"] == "falsified" and r["correct"])
    for change, message in ((lambda p: [v + 0.75 for v in p], "outside the ball"), (None, "as the label")):
        forged = copy.deepcopy(cert)
        row = forged["results"][falsified]
        if change is None:  # the input itself, which the model classifies correctly
            row["counterexample"] = _input_of(folder, row["index"])
        else:
            row["counterexample"] = change(row["counterexample"])
        checks = {n: (ok, d) for n, ok, d in audit_certificate(forged, folder / "certificate.json", 0)}
        assert not checks["counterexamples"][0] and message in checks["counterexamples"][1]


def test_the_audit_replays_the_search_on_its_domain_budget_not_the_clock(decided):
    """Review finding: the audit re-ran complete mode on the clock, so an honest row decided within
    the time on one machine ("unknown" on a loaded one, or the reverse) failed the audit elsewhere.
    The replay now runs on the row's domain budget: a row that ran out of time ("unknown") is no
    disagreement whatever the replay decides, and a row claiming "verified" must be verified again
    within its domains."""
    cert, folder = decided
    index = next(i for i, r in enumerate(cert["results"]) if r["status"] == "falsified" and r["correct"])
    timed_out = copy.deepcopy(cert)
    row = timed_out["results"][index]
    row.pop("counterexample")
    row.update(status="unknown", domains=1)
    checks = {n: (ok, d) for n, ok, d in audit_certificate(timed_out, folder / "certificate.json", len(cert["results"]))}
    assert checks["audit"][0], checks["audit"]
    forged = copy.deepcopy(timed_out)
    forged["results"][index].update(status="verified", verified=True, radius=0.1, domains=cert["results"][index]["domains"])
    checks = {n: (ok, d) for n, ok, d in audit_certificate(forged, folder / "certificate.json", len(cert["results"]))}
    assert not checks["audit"][0] and "status" in checks["audit"][1], checks["audit"]


def _input_of(folder, index):
    import json

    from certify.formats.data_files import load_data

    cert = json.loads((folder / "certificate.json").read_text())
    data = load_data(cert["data"]["path"])
    return data.x[index].flatten().double().tolist()


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(verified=True, radius=0.1, attacked=False), "status"),
    (lambda r: r.pop("counterexample"), "counterexample"),
    (lambda r: r.update(counterexample=r["counterexample"][:-1]), "float32 values"),
    (lambda r: r.update(counterexample=[0.1] * len(r["counterexample"])), "float32 values"),
    (lambda r: r.update(margin=-1.0), "margin"),
])
def test_self_contradicting_complete_rows_fail_the_plain_check(decided, edit, message):
    cert, _ = decided
    forged = copy.deepcopy(cert)
    row = next(r for r in forged["results"] if r["status"] == "falsified" and r["correct"])
    edit(row)
    detail = dict((n, d) for n, ok, d in certificate.check(forged) if not ok)
    assert message in detail.get("rows", "") or message in detail.get("schema", ""), detail


@pytest.mark.parametrize("change, message", [
    (dict(timeout_per_input=None), "timeout_per_input"),
    (dict(procedure="radius", eps=None, max_eps=0.5, tol=0.01, attack=None), "verify procedure"),
    (dict(inference="float32"), "exact network"),
])
def test_complete_mode_settings_must_fit_together(files, tmp_path, change, message):
    method = {k: v for k, v in dict(BAB, **change).items() if v is not None or k != "timeout_per_input"}
    with pytest.raises(ValueError, match=message):
        run.execute(tmp_path / "r", run.prepare(*files), method, quiet=True)


def test_the_command_line_runs_complete_mode_and_alpha_crown(tmp_path):
    model, data = make_files(tmp_path)
    out = run_cli("bounds", "--model", model, "--data", data, "--eps", "0.1", "--method", "bab", "--limit", "6",
                  "--timeout-per-input", "60", "--out", tmp_path / "b", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "decided: verified" in out.stdout
    report = (tmp_path / "b" / "report.md").read_text()
    cert = certificate.load(tmp_path / "b" / "certificate.json")
    verified = sum(r["status"] == "verified" for r in cert["results"])
    assert f"verified {100.0 * verified / len(cert['results']):.1f} %" in report and "decided" in report
    check = run_cli("verify-certificate", tmp_path / "b" / "certificate.json", "--audit", "3", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    for method in ("crown", "alpha-crown"):
        out = run_cli("bounds", "--model", model, "--data", data, "--eps", "0.1", "--method", method, "--no-attack",
                      "--limit", "6", "--out", tmp_path / method, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    crown = certificate.load(tmp_path / "crown" / "certificate.json")
    alpha = certificate.load(tmp_path / "alpha-crown" / "certificate.json")
    assert all(a["margin"] >= c["margin"] for a, c in zip(alpha["results"], crown["results"]))


def test_a_refused_method_prints_no_progress_header(files, tmp_path):
    """New-user finding: `--radius --method bab` printed "bounds: bab over linf radius up to ..."
    before its refusal."""
    model, data = files
    done = run_cli("bounds", "--model", model, "--data", data, "--radius", "--method", "bab", "--out", tmp_path / "r",
                   cwd=tmp_path)
    assert done.returncode == 2 and "decides the verify procedure" in done.stderr
    assert "bounds: bab" not in done.stdout + done.stderr and not (tmp_path / "r").exists()
