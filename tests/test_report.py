"""Reports from a certificate: numbers from the rows, escaping, a self-contained HTML file, atomic writes.

The expected numbers below are worked out by hand from the rows (or, for random rows, by a plain loop in the
test), not taken from the report module.
"""

import base64
import copy
import functools
import os
import re
import stat
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from certify import report
from certify.report import render_html, render_markdown, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHA_MODEL = "0123456789abcdef" * 4
SHA_DATA = "fedcba9876543210" * 4


def certificate(method: dict, rows: list[dict], summary: dict | None = None, **top) -> dict:
    cert = {
        "schema": "certify.certificate/1",
        "created": "2026-11-22T19:00:00Z",
        "tool": {"name": "certify", "version": "0.1.0", "python": "3.11.2", "torch": "2.13.0"},
        "model": {"path": "model.onnx", "sha256": SHA_MODEL, "format": "onnx", "input_shape": [1, 8, 8],
                  "num_classes": 3},
        "data": {"path": "digits.npz", "sha256": SHA_DATA, "num_inputs": len(rows)},
        "method": method,
        "guarantee": "For each input, with probability at least 1 - alpha over the noise, the smoothed "
                     "classifier's prediction is constant within the radius.",
        "results": rows,
    }
    if summary is not None:
        cert["summary"] = summary
    cert.update(top)
    return cert


SMOOTHING = {"family": "smoothing", "procedure": "certify", "noise": "gaussian", "scale": 0.25, "norm": "l2",
             "n0": 100, "n": 1000, "alpha": 0.001, "batch_size": 100, "seed": 7, "backend": "native"}


def smoothing_rows(triples) -> list[dict]:
    return [{"index": i, "label": label, "prediction": pred, "correct": label == pred, "radius": radius,
             "p_lower": 0.9, "counts": [1, 2, 3], "num_samples": 1100, "seconds": 0.5}
            for i, (label, pred, radius) in enumerate(triples)]


# (label, prediction, radius); -1 abstains.
SMOOTHING_TRIPLES = [(0, 0, 0.50), (0, 0, 0.10), (0, 1, 0.30), (1, 1, 0.80),
                     (1, -1, 0.0), (1, 1, 0.20), (2, 2, 0.05), (2, -1, 0.0)]


def smoothing_cert(**top) -> dict:
    summary = {"num_inputs": 8, "clean_accuracy": 5 / 8, "abstain_rate": 2 / 8,
               "certified_accuracy": [{"radius": 0.0, "accuracy": 5 / 8}, {"radius": 0.25, "accuracy": 2 / 8},
                                      {"radius": 0.5, "accuracy": 2 / 8}],
               "verified_accuracy": None, "pgd_accuracy": None, "seconds": 4.5}
    return certificate(dict(SMOOTHING), smoothing_rows(SMOOTHING_TRIPLES), summary,
                       signature={"algorithm": "ed25519", "public_key": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
                                  "value": "c2lnbmF0dXJl"}, **top)


def bounds_method(procedure: str, attack_eps: float | None) -> dict:
    attack = None if attack_eps is None else {"name": "pgd", "eps": attack_eps, "steps": 50, "restarts": 2, "seed": 5}
    return {"family": "bounds", "procedure": procedure, "method": "crown", "norm": "linf",
            "eps": 0.1 if procedure == "verify" else None, "max_eps": 1.0 if procedure == "radius" else None,
            "domain": [0.0, 1.0], "sound": True, "attack": attack}


# (label, prediction, verified, attacked) at eps = 0.1.
VERIFY_QUADS = [(0, 0, True, False), (0, 0, False, False), (0, 0, False, True), (1, 1, True, False),
                (1, 0, False, True), (1, 1, False, False), (2, 2, True, False), (2, 2, False, True),
                (2, 2, False, False), (2, 1, False, True)]


def verify_cert(attack: bool = True) -> dict:
    rows = [{"index": i, "label": label, "prediction": pred, "correct": label == pred, "verified": verified,
             "radius": 0.1 if verified else 0.0, "attacked": attacked if attack else None, "seconds": 0.002}
            for i, (label, pred, verified, attacked) in enumerate(VERIFY_QUADS)]
    summary = {"num_inputs": 10, "clean_accuracy": 0.8, "abstain_rate": None,
               "certified_accuracy": [{"radius": 0.1, "accuracy": 0.3}],
               "verified_accuracy": 0.3, "pgd_accuracy": 0.6 if attack else None, "seconds": 0.1}
    return certificate(bounds_method("verify", 0.1 if attack else None), rows, summary)


# (label, prediction, largest certified eps, attacked at eps = 0.3), max_eps = 1.
RADIUS_QUADS = [(0, 0, 0.5, False), (0, 0, 0.2, True), (1, 1, 0.0, True), (1, 1, 0.4, False),
                (1, 2, 0.0, True), (0, 0, 0.1, False)]


def radius_cert() -> dict:
    rows = [{"index": i, "label": label, "prediction": pred, "correct": label == pred, "verified": radius > 0,
             "radius": radius, "attacked": attacked, "seconds": 0.01}
            for i, (label, pred, radius, attacked) in enumerate(RADIUS_QUADS)]
    summary = {"num_inputs": 6, "clean_accuracy": 5 / 6, "abstain_rate": None,
               "certified_accuracy": [{"radius": r, "accuracy": a}
                                      for r, a in [(0.0, 4 / 6), (0.25, 2 / 6), (0.5, 1 / 6), (1.5, 0.0)]],
               "verified_accuracy": 4 / 6, "pgd_accuracy": 3 / 6, "seconds": 0.3}
    return certificate(bounds_method("radius", 0.3), rows, summary)


CERTS = {"smoothing": smoothing_cert, "verify": verify_cert, "radius": radius_cert}


@functools.cache
def html_of(name: str) -> str:
    # matplotlib takes a few tenths of a second a page: each named certificate is drawn once per session.
    return render_html(CERTS[name]())


def md_table(md: str, first_header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose first header cell is `first_header`, split into cells."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


class Tags(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f} % ({k}/{n})"


# ---------------------------------------------------------------------------------------------------- numbers


def test_smoothing_tables_match_hand_computed_numbers():
    md = render_markdown(smoothing_cert())
    assert md_table(md, "Label") == [
        # label, inputs, clean, abstain, certified at 0.25, at 0.5, mean radius of correct certified
        ["0", "3", "66.7 % (2/3)", "0.0 % (0/3)", "33.3 % (1/3)", "33.3 % (1/3)", "0.3"],
        ["1", "3", "66.7 % (2/3)", "33.3 % (1/3)", "33.3 % (1/3)", "33.3 % (1/3)", "0.5"],
        ["2", "2", "50.0 % (1/2)", "50.0 % (1/2)", "0.0 % (0/2)", "0.0 % (0/2)", "0.05"],
        ["all", "8", "62.5 % (5/8)", "25.0 % (2/8)", "25.0 % (2/8)", "25.0 % (2/8)", "0.33"],
    ]
    assert md_table(md, "Radius") == [["0", "62.5 % (5/8)"], ["0.25", "25.0 % (2/8)"], ["0.5", "25.0 % (2/8)"]]
    summary = dict(md_table(md, "Quantity"))
    assert summary["Clean accuracy"] == "62.5 % (5/8)"
    assert summary["Abstain rate"] == "25.0 % (2/8)"
    assert summary["Inputs (rows)"] == "8"
    assert summary["Noise samples drawn"] == "8,800"
    assert summary["Certification time (sum over the rows)"] == "4 s"
    facts = dict(md_table(md, "Item"))
    assert facts["Model"] == ("`model.onnx` (sha256 `0123456789ab…`), format onnx, input\\_shape \\[1, 8, 8\\], "
                              "num\\_classes 3")
    assert facts["Data"] == "`digits.npz` (sha256 `fedcba987654…`), num\\_inputs 8, 8 rows"
    assert facts["Seed"] == "7"
    assert "scale 0.25" in facts["Method"] and "alpha 0.001" in facts["Method"]
    assert facts["Signature"].startswith("signed (ed25519")
    assert "The summary agrees with the rows." in md
    assert md.startswith("# Certification report: randomized smoothing, gaussian noise (scale 0.25), l2 radius")
    assert "> For each input, with probability at least 1 - alpha" in md


@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_table_matches_a_plain_loop_over_random_rows(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 200)
    predictions = np.where(rng.random(200) < 0.7, labels, rng.integers(-1, 4, 200))
    radii = np.where(predictions == -1, 0.0, rng.uniform(0, 1, 200).round(3))
    rows = smoothing_rows([(int(a), int(b), float(c)) for a, b, c in zip(labels, predictions, radii)])
    md = render_markdown(certificate(dict(SMOOTHING), rows, {"certified_accuracy": [{"radius": 0.0},
                                                                                     {"radius": 0.4}]}))
    expected = []
    for label in sorted(set(labels.tolist())) + ["all"]:
        mine = [row for row in rows if label == "all" or row["label"] == label]
        good = [row for row in mine if row["prediction"] == row["label"]]
        abstains = sum(row["prediction"] == -1 for row in mine)
        far = sum(row["radius"] >= 0.4 for row in good)
        mean = sum(row["radius"] for row in good) / len(good)
        expected.append([str(label), str(len(mine)), pct(len(good), len(mine)), pct(abstains, len(mine)),
                         pct(far, len(mine)), f"{mean:.4g}"])
    assert md_table(md, "Label") == expected


def test_accuracy_curve_is_exact_on_a_fine_grid():
    # The plotted steps (where="pre": x in (xs[i-1], xs[i]] takes ys[i]) equal the brute-force fraction of
    # rows that are correct with radius >= r, at every r of a fine grid and at every radius itself.
    rng = np.random.default_rng(3)
    radius = np.concatenate([rng.uniform(0, 2, 300).round(2), np.zeros(20)])
    correct = rng.random(len(radius)) < 0.8
    xs, ys = report._accuracy_steps(radius, correct, x_max=2.5)
    for r in np.concatenate([np.linspace(0, 2.5, 5001), radius]):
        step = ys[np.searchsorted(xs, r, side="left")]
        assert step == pytest.approx(np.mean(correct & (radius >= r)), abs=1e-12), r


def test_bounds_verify_states_verified_and_pgd_accuracy_and_the_gap():
    md = render_markdown(verify_cert())
    summary = dict(md_table(md, "Quantity"))
    assert summary["Verified accuracy"] == "30.0 % (3/10)"
    assert summary["PGD accuracy at eps = 0.1 (upper bound)"] == "60.0 % (6/10)"
    assert summary["Clean accuracy"] == "80.0 % (8/10)"
    gap = ("proven 30.0 %, observed under attack 60.0 %: at most 30.0 points of robust accuracy are "
           "unaccounted for (3 of 10 inputs)")
    assert gap in md
    assert gap in html_of("verify")
    assert md_table(md, "Label") == [
        # label, inputs, clean, verified at eps, PGD, mean radius
        ["0", "3", "100.0 % (3/3)", "33.3 % (1/3)", "66.7 % (2/3)", "0.1"],
        ["1", "3", "66.7 % (2/3)", "33.3 % (1/3)", "66.7 % (2/3)", "0.1"],
        ["2", "4", "75.0 % (3/4)", "25.0 % (1/4)", "50.0 % (2/4)", "0.1"],
        ["all", "10", "80.0 % (8/10)", "30.0 % (3/10)", "60.0 % (6/10)", "0.1"],
    ]
    assert md_table(md, "Radius") == [["0.1", "30.0 % (3/10)"]]
    assert dict(md_table(md, "Item"))["Seed"] == "5 (the attack's)"
    assert "The summary agrees with the rows." in md


def test_bounds_radius_mode_compares_at_the_attack_eps_and_marks_unsearched_radii():
    md = render_markdown(radius_cert())
    assert ("At eps = 0.3 (linf): proven 33.3 %, observed under attack 50.0 %: at most 16.7 points of robust "
            "accuracy are unaccounted for (1 of 6 inputs).") in md
    # Certified at r: correct, verified and radius >= r; at r = 0 the verified accuracy, not the clean one.
    assert md_table(md, "Radius") == [["0", "66.7 % (4/6)"], ["0.25", "33.3 % (2/6)"], ["0.5", "16.7 % (1/6)"],
                                      ["1.5 \\*", "0.0 % (0/6)"]]
    assert dict(md_table(md, "Quantity"))["Clean accuracy"] == "83.3 % (5/6)"
    assert "Beyond 1: the radius search stopped at max\\_eps" in md
    rows = md_table(md, "Label")
    assert rows[0] == ["0", "3", "100.0 % (3/3)", "33.3 % (1/3)", "33.3 % (1/3)", "0.0 % (0/3)", "66.7 % (2/3)",
                       f"{(0.5 + 0.2 + 0.1) / 3:.4g}"]
    assert rows[1] == ["1", "3", "66.7 % (2/3)", "33.3 % (1/3)", "0.0 % (0/3)", "0.0 % (0/3)", "33.3 % (1/3)", "0.4"]
    assert "The summary agrees with the rows." in md


def test_a_verified_row_broken_by_the_attack_is_called_a_contradiction():
    cert = verify_cert()
    cert["results"][0]["attacked"] = True
    md = render_markdown(cert)
    assert "Contradiction: 1 input(s) proven robust at eps = 0.1 were broken by the attack." in md
    assert "1 row(s) are certified at the attack's eps and yet attacked." in md
    # In radius mode a row certified only below the attack's eps (0.2 < 0.3) may be attacked.
    assert "Contradiction" not in render_markdown(radius_cert())


def test_summary_that_disagrees_with_the_rows_is_reported():
    cert = smoothing_cert()
    cert["summary"]["clean_accuracy"] = 0.9
    cert["summary"]["num_inputs"] = 100
    cert["summary"]["certified_accuracy"][1]["accuracy"] = 0.5
    cert["results"][2]["correct"] = True
    md = render_markdown(cert)
    consistency = md.split("## Consistency")[1]
    assert "summary clean\\_accuracy is 0.9, the rows give 0.625 (5/8)." in consistency
    assert "summary num\\_inputs is 100, the rows number 8." in consistency
    assert "summary certified\\_accuracy at radius 0.25 is 0.5, the rows give 0.25 (2/8)." in consistency
    assert "1 row(s) have a 'correct' field that disagrees" in consistency
    # The tables still show the rows.
    assert dict(md_table(md, "Quantity"))["Clean accuracy"] == "62.5 % (5/8)"


# ---------------------------------------------------------------------------------------------------- HTML


@pytest.mark.parametrize("name,images", [("smoothing", 2), ("verify", 1), ("radius", 2)])
def test_html_is_self_contained_with_decodable_pngs(name, images):
    page = html_of(name)
    tags = Tags(page).tags
    sources = [attrs["src"] for tag, attrs in tags if tag == "img"]
    assert len(sources) == images
    for src in sources:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix):], validate=True).startswith(PNG_MAGIC)
    for tag, attrs in tags:
        assert tag not in ("script", "link", "iframe", "object", "embed")
        for key in ("src", "href", "action", "srcset"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("http://", "https://", "//")), (tag, key, value)
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert page.count("<table>") == 4  # what was certified, summary, radii, per class
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_html_has_the_same_tables_as_the_markdown():
    md = render_markdown(verify_cert())
    page = html_of("verify")
    for row in md_table(md, "Label") + md_table(md, "Radius"):
        assert "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" in page
    assert "Verified accuracy</td><td>30.0 % (3/10)</td>" in page


def test_plots_do_not_touch_pyplot():
    # pyplot keeps global figures; the report draws on its own Figure objects.
    if "matplotlib.pyplot" in sys.modules:
        pytest.skip("something else imported pyplot earlier in this session")
    render_html(radius_cert())
    assert "matplotlib.pyplot" not in sys.modules


def test_same_certificate_gives_the_same_html():
    assert render_html(smoothing_cert()) == html_of("smoothing")


def test_strings_from_the_certificate_are_escaped():
    cert = smoothing_cert()
    cert["model"]["path"] = "<script>alert(1)</script>"
    cert["data"]["path"] = "\"><img src=x onerror=alert(1)> a|b`c"
    cert["guarantee"] = "Holds <b>always</b>\n| broken | table |"
    cert["tool"]["platform"] = "</td></tr></table><iframe>"
    page = render_html(cert)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "<iframe>" not in page and "<b>" not in page
    tags = Tags(page).tags
    assert not [tag for tag, _ in tags if tag in ("script", "iframe", "b")]
    assert all(attrs["src"].startswith("data:image/png;base64,") for tag, attrs in tags if tag == "img")

    md = render_markdown(cert)
    facts = md_table(md, "Item")
    assert all(len(row) == 2 for row in facts)  # '|' in a path did not split a cell
    facts = dict(facts)
    assert facts["Model"].startswith("`<script>alert(1)</script>` (sha256")  # a code span shows it as text
    assert facts["Data"].startswith('``"><img src=x onerror=alert(1)> a\\|b`c`` (sha256')
    assert "> Holds \\<b\\>always\\</b\\> \\| broken \\| table \\|" in md  # one line, no live markup
    assert "\\</td\\>\\</tr\\>\\</table\\>\\<iframe\\>" in facts["Tool"]


# ---------------------------------------------------------------------------------------------------- edge cases


def test_all_abstains():
    cert = certificate(dict(SMOOTHING), smoothing_rows([(0, -1, 0.0), (1, -1, 0.0), (1, -1, 0.0)]))
    md = render_markdown(cert)
    assert "Every input abstained" in md
    assert "No input was certified correct, so there is no radius histogram." in md
    assert dict(md_table(md, "Quantity"))["Abstain rate"] == "100.0 % (3/3)"
    assert md_table(md, "Label")[-1][-1] == "none certified"
    page = render_html(cert)
    assert page.count("<img") == 1  # the accuracy curve, flat at 0; no histogram
    assert "No input was certified correct: no radius histogram." in page


def test_bounds_with_nothing_verified_no_attack_no_signature():
    rows = [{"index": i, "label": i % 2, "prediction": i % 2, "correct": True, "verified": False, "radius": 0.0,
             "attacked": None, "seconds": 0.001} for i in range(4)]
    cert = certificate(bounds_method("radius", None), rows)
    md = render_markdown(cert)
    assert "No attack was run, so only a lower bound on robust accuracy is known: proven 0.0 % (0/4)." in md
    assert "No attack was run: there is no PGD accuracy" in md
    assert "PGD" not in "".join(cell for row in md_table(md, "Quantity") for cell in row)
    assert "PGD accuracy" not in md_table_header(md, "Label")
    facts = dict(md_table(md, "Item"))
    assert facts["Signature"] == "not signed" and "The certificate is not signed." in md
    assert facts["Attack"] == "none: no attack was run"
    assert facts["Seed"] == "none needed: bound propagation is deterministic"
    page = render_html(cert)
    assert page.count("<img") == 1 and "no radius histogram" in page


def md_table_header(md: str, first_header: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {first_header} |"))


def test_single_class_and_single_input():
    cert = certificate(dict(SMOOTHING), smoothing_rows([(3, 3, 0.4)]))
    md = render_markdown(cert)
    assert "A single input" in md and "One class only (label 3)" in md
    assert md_table(md, "Label") == [["3", "1", "100.0 % (1/1)", "0.0 % (0/1)", "100.0 % (1/1)", "100.0 % (1/1)",
                                      "100.0 % (1/1)", "100.0 % (1/1)", "0.4"],
                                     ["all", "1", "100.0 % (1/1)", "0.0 % (0/1)", "100.0 % (1/1)",
                                      "100.0 % (1/1)", "100.0 % (1/1)", "100.0 % (1/1)", "0.4"]]
    page = render_html(cert)
    assert page.count("<img") == 2


def test_no_rows_and_missing_optional_fields():
    cert = certificate(dict(SMOOTHING), [])
    for key in ("tool", "created", "guarantee"):
        del cert[key]
    del cert["model"]["sha256"]
    md = render_markdown(cert)
    assert "The certificate has no rows" in md
    assert "The certificate has no summary: every number here comes from the rows." in md
    assert "The certificate states no guarantee." in md
    facts = dict(md_table(md, "Item"))
    assert facts["Tool"] == "not recorded" and facts["Created"] == "not recorded"
    assert "(sha256 not recorded)" in facts["Model"]
    assert dict(md_table(md, "Quantity"))["Clean accuracy"] == "n/a (no inputs)"
    page = render_html(cert)
    assert "<img" not in page and "No inputs: no plots." in page


@pytest.mark.parametrize("change,error,match", [
    (lambda c: c.update(schema="certify.certificate/3"), ValueError, "cert\\['schema'\\] must be one of"),
    (lambda c: c["method"].update(family="magic"), ValueError, "family"),
    (lambda c: c["results"][1].pop("prediction"), TypeError, "cert\\['results'\\]\\[1\\]\\['prediction'\\]"),
    (lambda c: c["results"][2].update(radius=-0.5), ValueError, "radius'\\] must be a finite number >= 0"),
    (lambda c: c["results"][2].update(radius=float("nan")), ValueError, "finite"),
    (lambda c: c.update(results="rows"), TypeError, "cert\\['results'\\] must be a list"),
])
def test_malformed_certificates_are_refused_with_the_field_named(change, error, match):
    cert = smoothing_cert()
    change(cert)
    with pytest.raises(error, match=match):
        render_markdown(cert)


def test_bounds_rows_need_verified_and_attacked():
    cert = verify_cert()
    cert["results"][4]["attacked"] = None
    with pytest.raises(TypeError, match="\\[4\\]\\['attacked'\\] must be true or false"):
        render_markdown(cert)
    with pytest.raises(TypeError, match="cert must be a dict"):
        render_markdown([cert])


# ---------------------------------------------------------------------------------------------------- files


def test_write_report_writes_both_files_and_no_temporaries(tmp_path):
    cert = smoothing_cert()
    (tmp_path / "report.md").write_text("old")
    os.chmod(tmp_path / "report.md", 0o640)
    write_report(cert, html_path=tmp_path / "report.html", markdown_path=str(tmp_path / "report.md"))
    assert sorted(os.listdir(tmp_path)) == ["report.html", "report.md"]
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == render_markdown(cert)
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == html_of("smoothing")
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o640  # an existing file keeps its mode
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_a_crash_while_writing_leaves_the_old_report_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    target.write_text("old report")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_report(smoothing_cert(), markdown_path=target)
    assert os.listdir(tmp_path) == ["report.md"]
    assert target.read_text() == "old report"


def test_an_unreadable_certificate_writes_nothing(tmp_path):
    cert = copy.deepcopy(smoothing_cert())
    cert["results"][0]["label"] = "three"
    with pytest.raises(TypeError, match="label"):
        write_report(cert, html_path=tmp_path / "r.html", markdown_path=tmp_path / "r.md")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="html_path, markdown_path or both"):
        write_report(smoothing_cert())
    with pytest.raises(ValueError, match="must differ"):
        write_report(smoothing_cert(), html_path=tmp_path / "r", markdown_path=tmp_path / "r")
