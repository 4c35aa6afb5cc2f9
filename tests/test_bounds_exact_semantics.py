"""Bound-propagation certificates say exactly what they prove.

- Radius mode keeps ε in float64 end to end: the radius written is an ε that was verified, and
  never exceeds --max-eps (issue 12, item 4: a float32 bisection wrote float32(0.1) > 0.1).
- Exact inference speaks of the exact network. Where float32 rounding ties two logits, the float32
  run can disagree with a verified label at the input or at the attack's point: the row records it
  (`float32_disagrees`), the checker accepts such genuine rows and still rejects forged ones, and a
  point that float64 also misclassifies still stops the run (issue 12, item 5a).
"""

import copy

import pytest
import torch
from torch import nn

import certify
from certify import certificate
from certify.cli import bounds_method
from certify.formats.data_files import save_npz
from certify.formats.onnx_import import export_onnx
from certify.runs import run
from certify.runs.jobs import BoundsJob

ATTACK = {"name": "pgd", "eps": 0.3, "steps": 20, "restarts": 1, "seed": 0}


def linear_net(weight, bias):
    net = nn.Sequential(nn.Linear(len(weight[0]), len(weight))).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(weight))
        net[0].bias.copy_(torch.tensor(bias))
    return net


def files(folder, net, x, y):
    export_onnx(net, (x.shape[1],), folder / "net.onnx")
    save_npz(folder / "data.npz", x, y)
    return run.prepare(folder / "net.onnx", folder / "data.npz")


def failed(cert) -> list[str]:
    return [name for name, ok, _ in certificate.check(cert) if not ok]


# ------------------------------------------------------------------ item 4: radii
def test_radius_never_exceeds_max_eps_and_is_verified():
    net = linear_net([[1.0, 0.0], [-1.0, 0.0]], [0.0, 0.0])  # margin 2 x0: verified far beyond 0.1
    bounded = certify.BoundedModel(net, (2,))
    x = torch.tensor([[1.0, 0.0], [0.03, 0.0]])
    for max_eps in (0.1, 0.3, 1 / 3):
        r = bounded.radius(x, [0, 0], max_eps=max_eps, tol=1e-4)
        assert r.dtype == torch.float64
        assert float(r[0]) == max_eps  # verified at max_eps: exactly max_eps, not float32(max_eps)
        assert 0 < float(r[1]) <= 0.03 and float(r[1]) > 0.03 - 1e-4
        assert bool(bounded.verify(x, [0, 0], r).all())  # exactly the eps that was verified


def test_radius_certificate_at_max_eps_checks(tmp_path):
    net = linear_net([[1.0, 0.0], [-1.0, 0.0]], [0.0, 0.0])
    x = torch.tensor([[1.0, 0.0], [0.5, 0.3], [0.02, 0.1], [-0.5, 0.0]])
    inputs = files(tmp_path, net, x, torch.tensor([0, 0, 0, 0]))
    cert = run.execute(tmp_path / "r", inputs, bounds_method("crown", "linf", None, 0.1, 1e-3, None, None), quiet=True)
    radii = [r["radius"] for r in cert["results"]]
    assert radii[0] == radii[1] == 0.1 and 0 < radii[2] <= 0.02 and radii[3] == 0.0
    assert failed(cert) == []
    assert cert["summary"]["certified_accuracy"][-1] == {"radius": 0.1, "accuracy": 0.5}


# ------------------------------------------------------- item 5a: float32-only ties
def tied(slope):
    """logits (1000, 1000 + slope x0): float32 ties them where slope x0 < half an ulp of 1000 (3.05e-5)."""
    return linear_net([[0.0, 0.0], [slope, 0.0]], [1000.0, 1000.0])


def test_tie_at_the_input_is_recorded_not_rejected(tmp_path):
    net = tied(1e-5)  # float32 ties everywhere in [0, 1]: argmax 0, while the exact network prefers 1
    x = torch.tensor([[0.5, 0.5], [0.9, 0.2], [0.5, 0.5]])
    inputs = files(tmp_path, net, x, torch.tensor([1, 1, 0]))
    for attack in (None, dict(ATTACK, eps=0.1)):
        cert = run.execute(tmp_path / f"run-{attack is None}", inputs,
                           bounds_method("crown", "linf", 0.1, None, None, None, attack), quiet=True)
        first, second, third = cert["results"]
        for row in (first, second):  # verified for the exact network, misclassified by the float32 run
            assert row["verified"] and row["prediction"] == 0 and not row["correct"]
            assert row["float32_disagrees"] == (["input"] if attack is None else ["input", "attack"])
            assert row["attacked"] is (None if attack is None else False)
        assert not third["verified"] and third["correct"] and "float32_disagrees" not in third
        assert failed(cert) == []
        # verified accuracy counts verified inputs whose float32 prediction is the label: none here
        assert cert["summary"]["verified_accuracy"] == 0.0
        assert "exact network" in cert["guarantee"] and "float32_disagrees" in cert["guarantee"]


def test_tie_at_the_attack_point_is_recorded_not_a_bug(tmp_path):
    # At x0 = 0.5 float32 gets 1000 + 5e-5 -> 1000.00006 (label 1); at x0 = 0.2 the logits tie in float32.
    net = tied(1e-4)
    x = torch.tensor([[0.5, 0.5]])
    with torch.no_grad():
        assert net(x).argmax(1).item() == 1 and net(torch.tensor([[0.2, 0.5]])).argmax(1).item() == 0
    inputs = files(tmp_path, net, x, torch.tensor([1]))
    cert = run.execute(tmp_path / "r", inputs, bounds_method("crown", "linf", 0.3, None, None, None, ATTACK),
                       quiet=True)
    row = cert["results"][0]
    assert row["verified"] and row["correct"] and row["attacked"] is False
    assert row["float32_disagrees"] == ["attack"]
    assert failed(cert) == []
    assert cert["summary"]["verified_accuracy"] == cert["summary"]["pgd_accuracy"] == 1.0
    # Under float32 inference the same input is not verified, and the attack counts.
    cert32 = run.execute(tmp_path / "f32", inputs,
                         bounds_method("crown", "linf", 0.3, None, None, None, ATTACK, inference="float32"), quiet=True)
    row32 = cert32["results"][0]
    assert not row32["verified"] and row32["attacked"] and "float32_disagrees" not in row32
    assert failed(cert32) == []


def genuine(tmp_path):
    """Rows: 0 verified with a float32 tie at the input (and so at the attack's point); 1 correct in
    float32 (the tie picks index 0) but not verified; 2 verified and correct (5e-5 rounds up)."""
    net = tied(1e-5)
    x = torch.tensor([[0.5, 0.5], [0.5, 0.5], [5.0, 0.0]])
    inputs = files(tmp_path, net, x, torch.tensor([1, 0, 1]))
    return run.execute(tmp_path / "g", inputs, bounds_method("crown", "linf", 0.1, None, None, None,
                                                             dict(ATTACK, eps=0.1)), quiet=True)


FORGERIES = {
    "drop the record": "verified but its prediction is not the label",
    "record on an unverified row": "belongs to verified inputs",
    "record on a correct row": "whose prediction is the label",
    "attack record without attack": "attack point outside",
    "float32 inference": "belongs to verified inputs under exact inference",
    "verified and attacked": "verified, yet the attack broke it",
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_forged_rows_are_rejected(tmp_path, forgery):
    cert = genuine(tmp_path)
    assert failed(cert) == []
    rows = cert["results"]
    assert rows[0]["float32_disagrees"] == ["input", "attack"]
    assert not rows[1]["verified"] and rows[1]["correct"] and not rows[1]["attacked"]
    assert rows[2]["verified"] and rows[2]["correct"] and not rows[2]["attacked"] and "float32_disagrees" not in rows[2]
    forged = copy.deepcopy(cert)
    f = forged["results"]
    if forgery == "drop the record":
        del f[0]["float32_disagrees"]
    elif forgery == "record on an unverified row":
        f[1]["float32_disagrees"] = ["attack"]
    elif forgery == "record on a correct row":
        f[2]["float32_disagrees"] = ["input"]
    elif forgery == "attack record without attack":
        forged["method"]["attack"] = None
        forged["guarantee"] = certificate.guarantee(forged["method"])
        for row in f:
            row["attacked"] = None
    elif forgery == "float32 inference":
        forged["method"]["inference"] = "float32"
        forged["guarantee"] = certificate.guarantee(forged["method"])
    else:
        f[0]["attacked"] = True
    forged["summary"] = certificate.summarize(forged["method"], f, [0.1])
    results = {name: (ok, detail) for name, ok, detail in certificate.check(forged)}
    assert [name for name, (ok, _) in results.items() if not ok] == ["rows"]
    assert FORGERIES[forgery] in results["rows"][1]


def test_certificates_without_the_inference_field_still_check(tmp_path):
    """Certificates written before the field: method without 'inference', the old guarantee text."""
    net = linear_net([[1.0, 0.0], [-1.0, 0.0]], [0.0, 0.0])
    x = torch.tensor([[1.0, 0.0], [0.02, 0.1], [-0.5, 0.0]])
    inputs = files(tmp_path, net, x, torch.tensor([0, 0, 1]))
    method = bounds_method("crown", "linf", 0.05, None, None, None, dict(ATTACK, eps=0.05))
    del method["inference"]
    cert = run.execute(tmp_path / "old", inputs, method, quiet=True)
    assert "inference" not in cert["method"]
    assert cert["guarantee"].startswith("For each input marked verified, the model's logit for the label exceeds")
    assert failed(cert) == []
    assert [r["verified"] for r in cert["results"]] == [True, False, True]


# ------------------------------------------------------- real contradictions still stop
@pytest.mark.parametrize("inference", ["exact", "float32"])
@pytest.mark.parametrize("attack", [None, ATTACK])
def test_a_wrong_bound_still_stops_the_run(tmp_path, monkeypatch, inference, attack):
    """A bound that claims a misclassified input (in float64 too) is verified: no certificate."""
    net = linear_net([[1.0, 0.0], [-1.0, 0.0]], [0.0, 0.0])
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    inputs = files(tmp_path, net, x, torch.tensor([0, 0]))  # input 1 is class 1 by a wide margin
    job = BoundsJob(inputs.model.module, inputs.data,
                    bounds_method("crown", "linf", 0.3, None, None, None, attack, inference=inference))
    monkeypatch.setattr(job.bounded, "margins", lambda x, *a, **k: torch.ones(len(x), 1))  # a broken engine
    with pytest.raises(RuntimeError, match="a bound is wrong"):
        job.certify([0, 1])


def test_a_wrong_bound_caught_by_the_attack_alone(tmp_path, monkeypatch):
    """Input correct, attack point misclassified in float64 too, bound claims verified: stop."""
    net = linear_net([[1.0, 0.0], [-1.0, 0.0]], [0.0, 0.0])
    x = torch.tensor([[0.1, 0.0]])  # correct (class 0), but x0 - 0.3 < 0 is class 1
    inputs = files(tmp_path, net, x, torch.tensor([0]))
    job = BoundsJob(inputs.model.module, inputs.data, bounds_method("crown", "linf", 0.3, None, None, None, ATTACK))
    monkeypatch.setattr(job.bounded, "margins", lambda x, *a, **k: torch.ones(len(x), 1))
    with pytest.raises(RuntimeError, match=r"float64 network misclassifies.*\(attack\)"):
        job.certify([0])
