"""The demo: a noise-trained classifier on scikit-learn's bundled 8x8 digits, certified by
randomized smoothing and verified by bound propagation. Runs offline in well under a minute on 2 cores.

Data: sklearn.datasets.load_digits (1,797 images, shipped inside the scikit-learn wheel),
pixels scaled to [0, 1], a fixed split (first 1,500 train, the rest test).
Model: MLP 64-256-256-10, trained with Gaussian noise augmentation at the smoothing sigma
(Cohen et al. 2019, Sec. 4), seeded, so the run is reproducible.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

import certify

TRAIN_SIZE = 1500


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit("certify demo needs scikit-learn for its bundled data: pip install 'certify[demo]'") from exc
    digits = sklearn_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    return images, torch.tensor(digits.target, dtype=torch.int64)


def noise_trained_mlp(images, labels, sigma: float, epochs: int = 40, seed: int = 0) -> torch.nn.Module:
    """Gaussian noise augmentation: every training step sees x + N(0, sigma^2 I)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for batch in order.split(64):
            noisy = images[batch] + sigma * torch.randn(images[batch].shape, generator=generator)
            loss = torch.nn.functional.cross_entropy(model(noisy), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def run(out: Path, sigma: float = 0.25, num_inputs: int = 100, n: int = 10_000, alpha: float = 0.001,
        quiet: bool = False) -> dict:
    def say(*args):
        if not quiet:
            print(*args, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_digits()
    train_x, train_y = images[:TRAIN_SIZE], labels[:TRAIN_SIZE]
    test_x, test_y = images[TRAIN_SIZE:][:num_inputs], labels[TRAIN_SIZE:][:num_inputs]

    start = time.perf_counter()
    model = noise_trained_mlp(train_x, train_y, sigma)
    with torch.no_grad():
        clean = (model(images[TRAIN_SIZE:]).argmax(1) == labels[TRAIN_SIZE:]).float().mean().item()
    say(f"trained MLP 64-256-256-10 with Gaussian noise sigma={sigma} in {time.perf_counter() - start:.1f} s; "
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
            f.write(f"{TRAIN_SIZE + i}\t{int(test_y[i])}\t{r.prediction}\t{r.radius:.4f}\t{int(correct[i])}\t{per_input:.4f}\n")

    say(f"done in {elapsed:.1f} s ({results.num_samples.sum() / elapsed:,.0f} samples/s)\n")
    say("idx\tlabel\tpredict\tradius\tcorrect")
    for i in range(min(8, len(results))):
        say(f"{TRAIN_SIZE + i}\t{int(test_y[i])}\t{results.prediction[i]}\t{results.radius[i]:.3f}\t{int(correct[i])}")
    say("...\n\ncertified accuracy (l2):")
    table = {}
    for radius in (0.0, 0.25, 0.5, 1.0):
        table[radius] = float((correct & (results.radius >= radius)).mean())
        say(f"  radius {radius:<5} {table[radius]:.3f}")
    say(f"\nper-input certificates written to {tsv}")

    # Bound propagation on the same network: sound CROWN bounds over l_inf balls in [0, 1].
    bounded = certify.BoundedModel(model, input_shape=(1, 8, 8))
    labels = test_y
    verified = {}
    say("\nverified accuracy by bound propagation (l_inf, pixels in [0, 1], sound in float32):")
    say("  eps     IBP    CROWN")
    for eps in (0.01, 0.03, 0.05):
        row = {}
        for method in ("ibp", "crown"):
            ok = bounded.verify(test_x, labels, eps, norm="linf", method=method, domain=(0.0, 1.0))
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
