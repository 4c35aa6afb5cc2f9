"""The Ray backend on a local cluster started here: the same certificate as the local backend,
and a worker killed mid-run loses nothing (its chunks are certified again, identically)."""

import os
import signal
import threading
import time

import pytest
from run_files import make_files, small_chunks, stored_rows

from certify.cli import bounds_method, smoothing_method
from certify.runs import run
from certify.runs.jobs import sequential_method

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'certify[ray]')")
from certify.runs.backends import RayBackend  # noqa: E402

SMOOTH = smoothing_method("gaussian", 0.5, 50, 4_000, 0.01, 2_000, 11, "native")
BOUNDS = bounds_method("crown", "linf", 0.05, None, None, None,
                       {"name": "pgd", "eps": 0.05, "steps": 10, "restarts": 1, "seed": 0})
SEQUENTIAL = sequential_method(SMOOTH, (6,), target_radius=0.3, boundary="exact")  # make_files: 6 features


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local cluster started from an empty folder: Ray workers put the driver's working folder on
    their path, and from the repository root that would be certify's source tree, not the
    installed package (the same reason the CLI tests run from tmp_path)."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
    finally:
        ray.shutdown()
        os.chdir(here)


def comparable(cert):
    """The certificate without its timing fields and creation time."""
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in cert["results"]]
    summary = {k: v for k, v in cert["summary"].items() if k != "seconds"}
    rest = {k: v for k, v in cert.items() if k not in ("results", "summary", "created")}
    return rest, rows, summary


@pytest.mark.parametrize("method", [SMOOTH, BOUNDS, SEQUENTIAL], ids=["smooth", "bounds", "sequential"])
def test_ray_certificate_equals_local(cluster, tmp_path, monkeypatch, method):
    model, data = make_files(tmp_path, count=20)
    inputs = run.prepare(model, data)
    local = run.execute(tmp_path / "local", inputs, method, quiet=True)
    small_chunks(monkeypatch, 3)  # many chunks over 2 workers, finishing out of order
    distributed = run.execute(tmp_path / "ray", inputs, method, quiet=True, backend=RayBackend(workers=2))
    assert comparable(distributed) == comparable(local)


def test_killed_worker_loses_nothing(cluster, tmp_path, monkeypatch):
    model, data = make_files(tmp_path, count=40)
    inputs = run.prepare(model, data)
    method = dict(SMOOTH, n=20_000)
    local = run.execute(tmp_path / "local", inputs, method, quiet=True)

    small_chunks(monkeypatch, 2)
    backend = RayBackend(workers=2)
    store = tmp_path / "ray" / "run.sqlite"
    killed = []

    def kill_one_worker_mid_run():
        deadline = time.time() + 120
        while time.time() < deadline:
            if store.exists() and backend.actors and stored_rows(store) >= 4:
                pid = backend.pids()[0]
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, stored_rows(store)))
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_mid_run)
    killer.start()
    distributed = run.execute(tmp_path / "ray", inputs, method, quiet=True, backend=backend)
    killer.join()
    assert killed and killed[0][1] < 40, "the kill must land mid-run"
    assert backend.restarts >= 1
    assert [r["index"] for r in distributed["results"]] == list(range(40))  # none lost, none twice
    assert comparable(distributed) == comparable(local)


def test_driver_resume_with_ray(cluster, tmp_path, monkeypatch):
    """The driver dies (here: interrupted after the first committed chunk); --resume on Ray
    finishes the run with the rows of an uninterrupted one."""
    model, data = make_files(tmp_path, count=12)
    inputs = run.prepare(model, data)
    local = run.execute(tmp_path / "local", inputs, SMOOTH, quiet=True)
    small_chunks(monkeypatch, 3)
    from certify.runs.progress import ProgressLine

    original = ProgressLine.add_inputs

    def interrupt(self, count):
        original(self, count)
        raise KeyboardInterrupt

    monkeypatch.setattr(ProgressLine, "add_inputs", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run.execute(tmp_path / "ray", inputs, SMOOTH, quiet=True, backend=RayBackend(workers=2))
    monkeypatch.setattr(ProgressLine, "add_inputs", original)
    resumed = run.execute(tmp_path / "ray", inputs, SMOOTH, resume=True, quiet=True, backend=RayBackend(workers=2))
    assert comparable(resumed) == comparable(local)


def test_more_workers_than_the_cluster_can_place_is_refused(cluster, tmp_path):
    """Two CPUs, three one-thread workers: refused at once (an unplaceable actor would hang the run)."""
    model, data = make_files(tmp_path, count=4)
    inputs = run.prepare(model, data)
    with pytest.raises(ValueError, match="need 3 CPUs"):
        run.execute(tmp_path / "r", inputs, SMOOTH, quiet=True, backend=RayBackend(workers=3))
    assert not (tmp_path / "r").exists()
