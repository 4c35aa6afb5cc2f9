"""Sequential certification end to end from the command line, on the digits demo model.

`certify smooth --target-radius 0.25` on the 297 test digits (sigma = 0.25, alpha = 0.001, at most
100,000 samples per input): one uninterrupted run; one killed with SIGKILL part-way and finished
with --resume; one on Ray (2 workers). Prints wall times, samples against fixed n, and whether the
three run stores hold identical rows (timing fields aside); with --fixed also times fixed-n CERTIFY
(n = 100,000) from the CLI. Run: python benchmarks/bench_sequential_cli.py [--fixed] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def certify(*args):
    return [sys.executable, "-m", "certify.cli", *map(str, args)]


def rows(folder: Path) -> list[dict]:
    with sqlite3.connect(folder / "run.sqlite") as db:
        out = [json.loads(r) for (r,) in db.execute("SELECT row FROM results ORDER BY idx")]
    for row in out:
        del row["seconds"]
    return out


def stored(folder: Path) -> int:
    try:
        with sqlite3.connect(folder / "run.sqlite") as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def timed(command, cwd) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixed", action="store_true", help="also time fixed-n CERTIFY (about 6 minutes here)")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="certify-seq-"))
    subprocess.run(certify("demo", "--out", work / "demo", "--quiet"), cwd=work, check=True)
    model = work / "demo" / "models" / "digits-noise-0.25.onnx"
    common = ["smooth", "--model", model, "--data", "digits", "--sigma", "0.25", "--alpha", "0.001",
              "--batch-size", "10000", "--quiet"] + (["--limit", args.limit] if args.limit else [])
    sequential = common + ["--target-radius", "0.25", "--max-samples", "100000"]

    whole = timed(certify(*sequential, "--out", work / "whole"), work)
    process = subprocess.Popen(certify(*sequential, "--out", work / "cut"), cwd=work,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while stored(work / "cut") < 40 and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = stored(work / "cut")
    resumed = timed(certify(*sequential, "--out", work / "cut", "--resume"), work)
    ray = timed(certify(*sequential, "--out", work / "ray", "--backend", "ray", "--workers", "2"), work)
    cert = json.loads((work / "whole" / "certificate.json").read_text())
    s = cert["summary"]
    print(f"digits demo model, {s['num_inputs']} inputs, sigma = 0.25, target radius 0.25, alpha = 0.001, "
          f"{cert['method']['boundary']} boundary")
    print(f"uninterrupted: {whole:.1f} s wall; certified {s['certified_fraction']:.3f}; samples {s['samples']:,} "
          f"against {s['fixed_samples']:,} for fixed n ({s['fixed_samples'] / s['samples']:.1f}x fewer)")
    print(f"killed after {killed_at} committed rows, resumed in {resumed:.1f} s; Ray (2 workers) {ray:.1f} s")
    print(f"rows identical: resumed {rows(work / 'cut') == rows(work / 'whole')}, "
          f"Ray {rows(work / 'ray') == rows(work / 'whole')}")
    if args.fixed:
        fixed = timed(certify(*common, "--n", "100000", "--out", work / "fixed"), work)
        print(f"fixed n = 100,000 from the CLI: {fixed:.1f} s wall ({fixed / whole:.1f}x the sequential run)")


if __name__ == "__main__":
    main()
