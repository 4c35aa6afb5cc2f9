"""Where a run's inputs are certified: in this process (LocalBackend, the default) or on the
workers of a Ray cluster (RayBackend, `pip install certify[ray]`).

A backend takes chunks of input indices and yields finished rows; only the driver (run.execute)
writes them to the run store. Rows are a function of (model, data, method, index) alone (noise of
input i is Philox stream i of the seed, PGD starts are seeded per input), so any backend, any
number of workers, and any re-run of a lost chunk give the rows a single process gives.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LocalBackend", "RayBackend"]


class LocalBackend:
    """Chunks certified one after another in this process."""

    def start(self, inputs, method) -> None:
        pass

    def results(self, job, inputs, method, chunks: list[list[int]], on_samples) -> Iterator[list[dict]]:
        for chunk in chunks:
            yield job.certify(chunk, on_samples)

    def close(self) -> None:
        pass


class RayBackend:
    """Chunks spread over `workers` Ray actors, each holding the model and data once.

    The driver sends each worker the model file's bytes and the data arrays (no shared file
    system needed), checks the model hash there, and keeps up to two chunks in flight per
    worker. A worker that dies loses only its in-flight chunks: they go to a fresh worker and are
    certified again, with the same result. With GPUs in the cluster each worker takes one
    (num_gpus=1) and certifies smoothing on it: those rows agree with a CPU run's statistically,
    not row for row (GPU arithmetic), so audit such certificates on a GPU. A cluster that cannot
    place the workers asked for is refused before any work.

    address: a running cluster ("auto", "ray://host:10001", ...); None starts or joins a local one.
    threads: torch / OpenMP threads per worker (default: the CPUs Ray gives it, 1).
    """

    def __init__(self, workers: int = 2, address: str | None = None, threads: int = 1, max_retries: int = 3,
                 startup_timeout: float = 300.0):
        try:
            import ray
        except ImportError as exc:
            raise ValueError("the Ray backend needs Ray: pip install 'certify[ray]'") from exc
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.ray = ray
        self.workers, self.address, self.threads, self.max_retries = workers, address, threads, max_retries
        self.startup_timeout = startup_timeout
        self.actors: list = []
        self.restarts = 0

    # ------------------------------------------------------------------ workers
    def start(self, inputs, method) -> None:
        """Workers up, each with the model loaded; a cluster that cannot place them is a ValueError."""
        ray = self.ray
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), resources.get("CPU", 0)
        # Refuse what the cluster cannot place: an actor that never starts would hold its chunks
        # forever.
        if gpus >= 1 and self.workers > gpus:
            raise ValueError(f"the Ray cluster has {gpus} GPU(s): use --workers {gpus} or fewer (one worker per GPU)")
        if self.workers * self.threads > cpus:
            raise ValueError(f"{self.workers} workers x {self.threads} thread(s) need {self.workers * self.threads} "
                             f"CPUs; the Ray cluster has {cpus:g}")
        self._actor_class = ray.remote(num_cpus=self.threads, num_gpus=1 if gpus >= 1 else 0)(_Worker)
        model_bytes = Path(inputs.model.path).read_bytes()
        if hashlib.sha256(model_bytes).hexdigest() != inputs.model.sha256:  # the bytes sent are the ones certified
            raise ValueError(f"{inputs.model.path} changed since it was loaded; start the run again")
        self._payload = ray.put({
            "model_bytes": model_bytes, "model_name": Path(inputs.model.path).name,
            "model_sha256": inputs.model.sha256, "trust_code": inputs.model.format in ("torchscript", "torch.export"),
            "x": inputs.data.x.numpy(), "y": inputs.data.y.numpy(), "data_path": inputs.data.path,
            "data_sha256": inputs.data.sha256, "method": method, "num_classes": inputs.num_classes,
            "arch": inputs.arch, "threads": self.threads,
        })
        self.actors = [self._actor_class.remote(self._payload) for _ in range(self.workers)]
        try:  # every worker up (model loaded) before any chunk is sent, or a clear error
            ray.get([actor.pid.remote() for actor in self.actors], timeout=self.startup_timeout)
        except ray.exceptions.GetTimeoutError as exc:
            raise RuntimeError(f"Ray workers did not start within {self.startup_timeout:g} s (is the cluster "
                               "short of CPUs or GPUs?)") from exc

    def pids(self) -> list[int]:
        """Process ids of the live workers (the tests kill one)."""
        return self.ray.get([actor.pid.remote() for actor in self.actors])

    def results(self, job, inputs, method, chunks: list[list[int]], on_samples) -> Iterator[list[dict]]:
        """job: the driver's (unused here: each worker builds its own from inputs and method)."""
        ray = self.ray
        if not self.actors:
            self.start(inputs, method)
        pending = list(reversed(chunks))  # popped from the end: index order
        in_flight: dict = {}  # future -> (actor slot, the actor it went to, chunk)
        attempts: dict[int, int] = {}

        def submit(slot: int) -> None:
            chunk = pending.pop()
            future = self.actors[slot].certify.remote(chunk)
            in_flight[future] = (slot, self.actors[slot], chunk)

        for slot in range(len(self.actors)):
            for _ in range(2):
                if pending:
                    submit(slot)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            future = ready[0]
            slot, actor, chunk = in_flight.pop(future)
            try:
                rows = ray.get(future)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                if "creation task" in str(exc):  # the worker cannot even load the model: no retry helps
                    raise RuntimeError(f"a Ray worker failed to start: {exc}") from exc
                attempts[chunk[0]] = attempts.get(chunk[0], 0) + 1
                if attempts[chunk[0]] > self.max_retries:
                    raise RuntimeError(f"inputs {chunk[0]}..{chunk[-1]} failed on {self.max_retries + 1} workers: "
                                       f"{exc}") from exc
                if self.actors[slot] is actor:  # the dead worker's first failed chunk: replace it once
                    self.actors[slot] = self._actor_class.remote(self._payload)
                    self.restarts += 1
                pending.append(chunk)  # certified again from scratch: the same rows
                submit(slot)
                continue
            if on_samples is not None:
                on_samples(sum(int(r.get("num_samples", 0)) for r in rows))
            yield rows
            if pending:
                submit(slot)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


class _Worker:
    """A Ray actor: loads the model and data once, then certifies chunks of indices."""

    def __init__(self, payload: dict):
        import torch

        import certify
        from certify.formats.data_files import Dataset
        from certify.formats.model_files import load_model
        from certify.runs.run import Inputs, make_job

        torch.set_num_threads(payload["threads"])
        certify.set_num_threads(payload["threads"])
        with tempfile.TemporaryDirectory(prefix="certify-worker-") as folder:
            path = Path(folder) / payload["model_name"]
            path.write_bytes(payload["model_bytes"])
            model = load_model(path, arch=payload["arch"], trust_code=payload["trust_code"])
        if model.sha256 != payload["model_sha256"]:
            raise RuntimeError("the model arrived damaged at the worker (SHA-256 differs)")
        data = Dataset(torch.from_numpy(payload["x"]), torch.from_numpy(payload["y"]), payload["data_path"],
                       payload["data_sha256"])
        # On a GPU the counts come from the GPU's arithmetic: they agree with a CPU run's
        # statistically, not row for row (audit such certificates on a GPU).
        if torch.cuda.is_available() and payload["method"]["family"] == "smoothing":
            model.module = model.module.cuda()
            data.x = data.x.cuda()
        inputs = Inputs(model, data, payload["num_classes"], None, payload["arch"])
        self.job = make_job(inputs, payload["method"])

    def pid(self) -> int:
        return os.getpid()

    def certify(self, chunk: list[int]) -> list[dict]:
        return self.job.certify(chunk)
