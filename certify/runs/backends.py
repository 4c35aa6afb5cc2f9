"""Where a run's inputs are certified: in this process (LocalBackend, the default) or on the
workers of a Ray cluster (RayBackend, `pip install certify[ray]`).

A backend takes chunks of input indices and yields finished rows; only the driver (run.execute)
writes them to the run store. Rows are a function of (model, data, method, index) alone (noise of
input i is Philox stream i of the seed, PGD starts are seeded per input), so any backend, any
number of workers, and any re-run of a lost chunk give the rows a single process gives.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LocalBackend", "RayBackend"]


class LocalBackend:
    """Chunks certified one after another in this process."""

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
    (num_gpus=1) and certifies on it.

    address: a running cluster ("auto", "ray://host:10001", ...); None starts or joins a local one.
    threads: torch / OpenMP threads per worker (default: the CPUs Ray gives it, 1).
    """

    def __init__(self, workers: int = 2, address: str | None = None, threads: int = 1, max_retries: int = 3):
        try:
            import ray
        except ImportError as exc:
            raise ValueError("the Ray backend needs Ray: pip install 'certify[ray]'") from exc
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.ray = ray
        self.workers, self.address, self.threads, self.max_retries = workers, address, threads, max_retries
        self.actors: list = []
        self.restarts = 0

    # ------------------------------------------------------------------ workers
    def _start(self, inputs, method) -> None:
        ray = self.ray
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        gpus = ray.cluster_resources().get("GPU", 0)
        self._actor_class = ray.remote(num_cpus=self.threads, num_gpus=1 if gpus >= 1 else 0)(_Worker)
        self._payload = ray.put({
            "model_bytes": Path(inputs.model.path).read_bytes(), "model_name": Path(inputs.model.path).name,
            "model_sha256": inputs.model.sha256, "trust_code": inputs.model.format in ("torchscript", "torch.export"),
            "x": inputs.data.x.numpy(), "y": inputs.data.y.numpy(), "data_path": inputs.data.path,
            "data_sha256": inputs.data.sha256, "method": method, "num_classes": inputs.num_classes,
            "arch": inputs.arch, "threads": self.threads,
        })
        self.actors = [self._actor_class.remote(self._payload) for _ in range(self.workers)]

    def pids(self) -> list[int]:
        """Process ids of the live workers (the tests kill one)."""
        return self.ray.get([actor.pid.remote() for actor in self.actors])

    def results(self, job, inputs, method, chunks: list[list[int]], on_samples) -> Iterator[list[dict]]:
        """job: the driver's (unused here: each worker builds its own from inputs and method)."""
        ray = self.ray
        if not self.actors and chunks:
            self._start(inputs, method)
        pending = list(reversed(chunks))  # popped from the end: index order
        in_flight: dict = {}  # future -> (actor slot, chunk)
        attempts: dict[int, int] = {}

        def submit(slot: int) -> None:
            chunk = pending.pop()
            future = self.actors[slot].certify.remote(chunk)
            in_flight[future] = (slot, chunk)

        for slot in range(len(self.actors)):
            for _ in range(2):
                if pending:
                    submit(slot)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            future = ready[0]
            slot, chunk = in_flight.pop(future)
            try:
                rows = ray.get(future)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                attempts[chunk[0]] = attempts.get(chunk[0], 0) + 1
                if attempts[chunk[0]] > self.max_retries:
                    raise RuntimeError(f"inputs {chunk[0]}..{chunk[-1]} failed on {self.max_retries + 1} workers: "
                                       f"{exc}") from exc
                self._replace(slot)
                pending.append(chunk)  # certified again from scratch: the same rows
                # the dead worker's other chunk fails on its own and is re-queued the same way
                submit(slot)
                continue
            if on_samples is not None:
                on_samples(sum(int(r.get("num_samples", 0)) for r in rows))
            yield rows
            if pending:
                submit(slot)

    def _replace(self, slot: int) -> None:
        """A fresh worker in the dead one's place (once per death: later failures of the same
        dead actor find it already replaced)."""
        try:
            self.ray.get(self.actors[slot].pid.remote(), timeout=10)
            return  # still alive: the failure was the task's, not the worker's
        except Exception:  # noqa: BLE001 - RayActorError, GetTimeoutError, ...
            pass
        self.actors[slot] = self._actor_class.remote(self._payload)
        self.restarts += 1

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
        folder = tempfile.mkdtemp(prefix="certify-worker-")
        path = Path(folder) / payload["model_name"]
        path.write_bytes(payload["model_bytes"])
        model = load_model(path, arch=payload["arch"], trust_code=payload["trust_code"])
        if model.sha256 != payload["model_sha256"]:
            raise RuntimeError("the model arrived damaged at the worker (SHA-256 differs)")
        data = Dataset(torch.from_numpy(payload["x"]), torch.from_numpy(payload["y"]), payload["data_path"],
                       payload["data_sha256"])
        if torch.cuda.is_available() and payload["method"]["family"] == "smoothing":
            model.module = model.module.cuda()
            data.x = data.x.cuda()
        inputs = Inputs(model, data, payload["num_classes"], None, payload["arch"])
        self.job = make_job(inputs, payload["method"])

    def pid(self) -> int:
        return os.getpid()

    def certify(self, chunk: list[int]) -> list[dict]:
        return self.job.certify(chunk)
