"""Scale-out: throughput of the Ray backend with 1 and 2 workers against the local backend, and
what that implies for certifying CIFAR-10 and ImageNet test sets on a cluster of GPUs.

Setup: the digits demo model noise-0.25 as ONNX, 40 test digits, CERTIFY with n0 = 100,
n = 10,000 (chunks of 4 inputs). Local: one process, 2 threads. Ray: a local cluster of 2 CPUs,
workers with 2 threads (1 worker) or 1 thread each (2 workers). The estimate uses the per-image
GPU costs of Cohen et al. 2019 (REFERENCES.md: ~15 s per CIFAR-10 image, ~110-150 s per ImageNet
image at n = 100,000 on one GPU) and the scaling efficiency and per-chunk overhead measured here.
Run: python benchmarks/bench_ray.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import table

from certify import models
from certify.cli import smoothing_method
from certify.formats.data_files import save_npz
from certify.formats.onnx_import import export_onnx
from certify.runs import run
from certify.runs.backends import RayBackend

INPUTS, N = 40, 10_000


def main() -> None:
    import ray

    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    export_onnx(models.load("noise-0.25"), (1, 8, 8), folder / "model.onnx")
    _, _, x, y = models.digits()
    save_npz(folder / "data.npz", x[:INPUTS], y[:INPUTS])
    inputs = run.prepare(folder / "model.onnx", folder / "data.npz")
    method = smoothing_method("gaussian", 0.25, 100, N, 0.001, 10_000, 0, "native")
    samples = INPUTS * (N + 100)

    timings = {}
    start = time.perf_counter()
    run.execute(folder / "local", inputs, method, quiet=True)
    timings["local (1 process, 2 threads)"] = time.perf_counter() - start
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    for workers, threads in ((1, 2), (2, 1)):
        backend = RayBackend(workers=workers, threads=threads)
        backend.start(inputs, method)  # workers up before the clock starts: start-up is paid once per run
        start = time.perf_counter()
        run.execute(folder / f"ray-{workers}", inputs, method, quiet=True, backend=backend)
        timings[f"ray, {workers} worker(s) x {threads} thread(s)"] = time.perf_counter() - start
    ray.shutdown()

    local = timings["local (1 process, 2 threads)"]
    rows = [[name, f"{t:.1f}", f"{INPUTS / t:.2f}", f"{samples / t:,.0f}", f"{local / t:.2f}x"]
            for name, t in timings.items()]
    print(f"{INPUTS} digits, n0 = 100, n = {N:,}, chunks of {run.make_job(inputs, method).chunk} inputs")
    print(table(rows, ["backend", "wall s", "inputs/s", "samples/s", "vs local"]))
    one, two = timings["ray, 1 worker(s) x 2 thread(s)"], timings["ray, 2 worker(s) x 1 thread(s)"]
    chunks = -(-INPUTS // run.make_job(inputs, method).chunk)
    overhead = max(0.0, (one - local) / chunks)
    print("\nRay overhead per chunk (1 worker against local): "
          + (f"{overhead * 1e3:.0f} ms" if one > local else "not measurable (1 Ray worker was not slower than local)")
          + f"; 2 workers x 1 thread against 1 worker x 2 threads on the same 2 cores: {one / two:.2f}x "
          "(process parallelism against thread parallelism; no spare cores here, so not a scaling measurement)")
    print("\nEstimate at n = 100,000, one worker per GPU, per-image GPU time from Cohen et al. 2019; each image "
          "is one chunk of ~100 model batches, so the Ray overhead above is < 0.1 % of it:")
    est = []
    for name, count, per_image in (("CIFAR-10", 10_000, 15.0), ("ImageNet", 50_000, 130.0)):
        for gpus in (1, 8, 64):
            hours = count * (per_image + overhead) / gpus / 3600
            est.append([name, count, f"{per_image:.0f} s", gpus, f"{hours:,.1f} h"])
    print(table(est, ["test set", "inputs", "s per image per GPU", "GPUs", "wall time"]))


if __name__ == "__main__":
    main()
