"""`certify demo`: the whole path from model file to signed-off certificate, on bundled data.

On scikit-learn's 8x8 digits with two demo models of certify.models (trained at first use):
1. writes the models as ONNX and the test digits as .npz into OUT, the files a user would bring;
2. certifies the noise-trained CNN by randomized smoothing (`certify smooth`) and verifies the
   IBP-trained CNN by CROWN bound propagation with a PGD attack beside it (`certify bounds`),
   each into a run folder with a run store, certificate and HTML / Markdown report;
3. prints the commands that reproduce each run from those files.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from certify import models
from certify._files import write_text_atomic
from certify.formats.data_files import save_npz
from certify.formats.onnx_import import export_onnx
from certify.runs import run
from certify.runs.store import STORE_NAME

SMOOTHING_MODEL, BOUNDS_MODEL = "noise-0.25", "ibp-0.1"
SIGMA, ALPHA, BOUNDS_EPS = 0.25, 0.001, 0.1
BAB_SECONDS = 10  # complete verification's budget per input (the demo's inputs take well under a second)
SETTINGS = "demo.json"  # the demo's own settings, so a rerun resumes instead of overwriting


def run_demo(out: Path, num_inputs: int = 100, n: int = 10_000, quiet: bool = False) -> dict:
    """Runs both parts; returns {"smooth": certificate, "bounds": certificate}."""
    from certify.cli import bounds_method, smoothing_method

    def say(*lines):
        if not quiet:
            print(*lines, sep="\n", flush=True)

    out = Path(out)
    files = {name: out / "models" / f"digits-{name}.onnx" for name in (SMOOTHING_MODEL, BOUNDS_MODEL)}
    data = out / "digits-test.npz"
    if _reuse(out, {"inputs": num_inputs, "n": n}):
        say(f"resuming the demo in {out} (its models, data and finished inputs are kept)", "")
    else:
        start = time.perf_counter()
        (out / "models").mkdir(parents=True, exist_ok=True)
        for name, path in files.items():
            export_onnx(models.load(name), (1, 8, 8), path)
        _, _, test_x, test_y = models.digits()
        save_npz(data, test_x[:num_inputs], test_y[:num_inputs])
        write_text_atomic(out / SETTINGS, json.dumps({"inputs": num_inputs, "n": n}) + "\n")
        say(f"demo models {SMOOTHING_MODEL} (CNN trained with Gaussian noise) and {BOUNDS_MODEL} (IBP-trained CNN) "
            f"written as ONNX to {out / 'models'} ({time.perf_counter() - start:.1f} s); {num_inputs} test digits "
            f"written to {data}", "")

    parts = {
        "smooth": (files[SMOOTHING_MODEL], smoothing_method("gaussian", SIGMA, 100, n, ALPHA, 10_000, 0, "native"),
                   ["smooth", "--sigma", str(SIGMA), "--n", str(n), "--alpha", str(ALPHA), "--batch-size", "10000"]),
        "bounds": (files[BOUNDS_MODEL], bounds_method("bab", "linf", BOUNDS_EPS, None, None, (0.0, 1.0),
                                                      {"name": "pgd", "eps": BOUNDS_EPS, "steps": 50, "restarts": 2,
                                                       "seed": 0}, timeout_per_input=BAB_SECONDS),
                   ["bounds", "--eps", str(BOUNDS_EPS), "--norm", "linf", "--method", "bab", "--timeout-per-input",
                    str(BAB_SECONDS), "--domain", "0", "1"]),
    }
    certificates, commands = {}, []
    for part, (model_file, method, args) in parts.items():
        folder = out / part
        inputs = run.prepare(model_file, data)
        say(f"{part}: {_describe(method)} on {inputs.count} digits ...")
        # A rerun of the demo into the same folder resumes (and finds every input done).
        cert = run.execute(folder, inputs, method, resume=(folder / STORE_NAME).exists(), quiet=quiet)
        certificates[part] = cert
        s = cert["summary"]
        for point in s["certified_accuracy"]:
            if point["radius"] > 4 * SIGMA:  # out of reach at this noise level (the report has them all)
                break
            say(f"  certified accuracy at radius {point['radius']:<5g} {point['accuracy']:.3f}")
        if "falsified_fraction" in s:
            say(f"  decided: verified {s['verified_accuracy']:.3f}, falsified {s['falsified_fraction']:.3f} "
                f"(a counterexample each, or misclassified), unknown {s['unknown_fraction']:.3f}")
        elif s["pgd_accuracy"] is not None:
            say(f"  accuracy under PGD attack at eps {BOUNDS_EPS}  {s['pgd_accuracy']:.3f} "
                "(what is observed; the verified accuracy is what is proven)")
        say(f"  certificate {folder / run.CERTIFICATE_NAME}, report {folder / 'report.html'}", "")
        commands.append(shlex.join(["certify", args[0], "--model", str(model_file), "--data", str(data), *args[1:],
                                    "--out", str(out / f"my-{part}")]))
    say("reproduce each part (or point --model / --data at your own files):", *[f"  {c}" for c in commands])
    say(f"check a certificate: certify verify-certificate {out / 'smooth' / run.CERTIFICATE_NAME} --audit 5")
    return certificates


def _reuse(out: Path, settings: dict) -> bool:
    """True when `out` holds a demo with these settings (rerun: resume it); False when it is new
    or empty; ValueError, before anything is written, when it holds something else."""
    if not out.exists() or not any(out.iterdir()):
        return False
    try:
        previous = json.loads((out / SETTINGS).read_text())
    except (OSError, ValueError):
        raise ValueError(f"{out} exists and does not hold a certify demo; choose another --out") from None
    if previous != settings:
        raise ValueError(f"{out} holds a demo run with other settings ({previous}); choose another --out")
    return True


def _describe(method: dict) -> str:
    if method["family"] == "smoothing":
        return f"randomized smoothing, Gaussian σ={method['scale']}, n={method['n']:,}, α={method['alpha']}"
    if method["method"] == "bab":
        return (f"complete verification (attack, alpha-CROWN, branch and bound; {method['timeout_per_input']:g} s per "
                f"input at most), {method['norm']} eps={method['eps']}, pixels in [0, 1]")
    return f"{method['method'].upper()} bounds, {method['norm']} eps={method['eps']}, pixels in [0, 1], PGD beside"
