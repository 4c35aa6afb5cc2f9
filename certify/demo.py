"""The demo, on scikit-learn's bundled 8x8 digits and the demo models of certify.models: the
noise-trained CNN certified by randomized smoothing, the IBP-trained CNN verified by bound
propagation. Runs offline in well under a minute on 2 cores (models train at first use).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import certify
from certify import models


def run(out: Path, sigma: float = 0.25, num_inputs: int = 100, n: int = 10_000, alpha: float = 0.001,
        quiet: bool = False) -> dict:
    def say(*args):
        if not quiet:
            print(*args, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    _, _, test_x, test_y = models.digits()
    test_x, test_y = test_x[:num_inputs], test_y[:num_inputs]
    first_index = models.TRAIN_SIZE

    start = time.perf_counter()
    name = "noise-0.5" if sigma >= 0.5 else "noise-0.25"
    model = models.load(name)
    clean = models.clean_accuracy(model)
    say(f"demo model '{name}' (CNN trained with Gaussian noise) ready in {time.perf_counter() - start:.1f} s; "
        f"clean test accuracy {clean:.3f}")

    smoothed = certify.Smoothed(model, num_classes=10, noise=certify.Gaussian(sigma), input_shape=(1, 8, 8))
    say(f"certifying {len(test_x)} test digits: n0=100, n={n:,}, alpha={alpha} ...")
    start = time.perf_counter()
    results = smoothed.certify_batch(test_x, n0=100, n=n, alpha=alpha, batch_size=10_000, seed=0,
                                     progress=None if quiet else _progress_bar())
    elapsed = time.perf_counter() - start
    if not quiet:
        print(file=sys.stderr)

    correct = results.prediction == test_y.numpy()
    per_input = elapsed / len(test_x)
    tsv = out / "smoothing.tsv"
    with tsv.open("w") as f:  # the column layout of locuslab/smoothing's certify.py
        f.write("idx\tlabel\tpredict\tradius\tcorrect\ttime\n")
        for i, r in enumerate(results):
            f.write(f"{first_index + i}\t{int(test_y[i])}\t{r.prediction}\t{r.radius:.4f}\t{int(correct[i])}\t{per_input:.4f}\n")

    say(f"done in {elapsed:.1f} s ({results.num_samples.sum() / elapsed:,.0f} samples/s)\n")
    say("idx\tlabel\tpredict\tradius\tcorrect")
    for i in range(min(8, len(results))):
        say(f"{first_index + i}\t{int(test_y[i])}\t{results.prediction[i]}\t{results.radius[i]:.3f}\t{int(correct[i])}")
    say("...\n\ncertified accuracy (l2):")
    table = {}
    for radius in (0.0, 0.25, 0.5, 1.0):
        table[radius] = float((correct & (results.radius >= radius)).mean())
        say(f"  radius {radius:<5} {table[radius]:.3f}")
    say(f"\nper-input certificates written to {tsv}")

    # Bound propagation on the IBP-trained model: sound bounds over l_inf balls in [0, 1].
    robust = models.load("ibp-0.1")
    bounded = certify.BoundedModel(robust, input_shape=(1, 8, 8))
    verified = {}
    say("\nverified accuracy by bound propagation, demo model 'ibp-0.1' (l_inf, pixels in [0, 1], sound):")
    say("  eps     IBP    CROWN")
    for eps in (0.05, 0.1):
        row = {}
        for method in ("ibp", "crown"):
            ok = bounded.verify(test_x, test_y, eps, norm="linf", method=method, domain=(0.0, 1.0))
            row[method] = float(ok.float().mean())
        verified[eps] = row
        say(f"  {eps:<6}  {row['ibp']:.3f}  {row['crown']:.3f}")
    return {"clean_accuracy": clean, "certified_accuracy": table, "verified_accuracy": verified, "seconds": elapsed}


def _progress_bar():
    started = time.perf_counter()
    last_drawn = [0.0]

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last_drawn[0] < 0.2 and done < total:  # redraw at most 5 times a second
            return
        last_drawn[0] = now
        rate = done / max(now - started, 1e-9)
        eta = (total - done) / max(rate, 1e-9)
        sys.stderr.write(f"\r  {done:>10,}/{total:,} samples  {rate:,.0f}/s  ETA {eta:4.0f} s")
        sys.stderr.flush()

    return show
