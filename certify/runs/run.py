"""A certification run, from a model file and data to a run folder:

    RUN/run.sqlite         the run store: settings and one committed row per finished input
    RUN/certificate.json   the certificate (certify.certificate/2), written when every input is done
    RUN/report.html        self-contained report with plots;  RUN/report.md: the same, in Markdown

`prepare` reads the model and data and checks they fit before anything is written, so bad input
leaves no run folder behind. `execute` certifies what the store does not hold yet, committing rows
as they finish: stop it at any point (Ctrl-C, SIGKILL, power loss) and run again with resume=True.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from certify import certificate
from certify._files import remove_stale_temporaries
from certify.bounds import UnsupportedModelError
from certify.formats.data_files import Dataset, load_data
from certify.formats.model_files import LoadedModel, load_model
from certify.runs.backends import LocalBackend
from certify.runs.jobs import BoundsJob, SmoothingJob, num_classes_of
from certify.runs.progress import ProgressLine
from certify.runs.store import RunStore

__all__ = ["Inputs", "prepare", "make_job", "execute", "CERTIFICATE_NAME"]

CERTIFICATE_NAME = "certificate.json"


@dataclass
class Inputs:
    """A loaded model and data set, checked against each other, and the run settings they give."""

    model: LoadedModel
    data: Dataset
    num_classes: int
    limit: int | None
    arch: str | None = None  # the state dict's architecture, as given
    labels: str | None = None  # the labels file of .npy data, as given

    @property
    def count(self) -> int:
        return len(self.data) if self.limit is None else min(self.limit, len(self.data))

    def config(self, method: dict) -> dict:
        return {
            "model": {"path": str(self.model.path), "sha256": self.model.sha256, "format": self.model.format,
                      "arch": self.arch, "input_shape": list(self.data.input_shape), "num_classes": self.num_classes},
            "data": {"path": self.data.path, "sha256": self.data.sha256, "labels": self.labels,
                     "num_inputs": len(self.data), "limit": self.limit},
            "method": method,
        }


def prepare(model_path, data_spec, *, arch: str | None = None, labels=None, limit: int | None = None,
            trust_code: bool = False) -> Inputs:
    """Loads and cross-checks model and data (ValueError subclasses on any mismatch).
    trust_code: allow model formats whose loading runs code from the file (see load_model)."""
    for what, value in (("model file", model_path), ("data file", data_spec), ("labels file", labels)):
        _require_utf8(what, value)
    model = load_model(model_path, arch=arch, trust_code=trust_code)
    data = load_data(data_spec, labels=labels)
    if model.input_shape is not None and tuple(model.input_shape) != data.input_shape:
        raise ValueError(f"the model takes inputs of shape {tuple(model.input_shape)} but the data's inputs have "
                         f"shape {data.input_shape}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    return Inputs(model, data, num_classes_of(model.module, data), limit, arch,
                  None if labels is None else str(labels))


def _require_utf8(what: str, value) -> None:
    """The certificate records these names in JSON (UTF-8): a file name whose bytes are not UTF-8
    (os.fsdecode turns them into lone surrogates) could not be written at the end of the run."""
    if value is None:
        return
    text = os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"the {what} name {os.fsencode(text)!r} is not valid UTF-8, so the certificate (JSON) cannot record "
                         "it; rename the file (or its folder) to a UTF-8 name") from None


def make_job(inputs: Inputs, method: dict):
    """The job for `method` (checked against the certificate schema's method definitions first)."""
    certificate.check_method(method)
    if method["family"] == "smoothing":
        return SmoothingJob(inputs.model.module, inputs.num_classes, inputs.data, method)
    try:
        return BoundsJob(inputs.model.module, inputs.data, method)
    except UnsupportedModelError as exc:
        if inputs.model.format in ("torchscript", "torch.export"):
            raise UnsupportedModelError(
                f"bound propagation reads ONNX models and state dicts (traced with torch.fx); a {inputs.model.format} "
                f"archive cannot be traced ({exc}). Export the model with torch.onnx.export and pass the .onnx file"
            ) from exc
        raise


def execute(folder: Path, inputs: Inputs, method: dict, *, resume: bool = False, quiet: bool = False,
            sign_key: Path | None = None, radii=None, backend=None) -> dict:
    """Certifies the inputs the run store lacks, then writes certificate and report; returns the
    certificate. Committed rows survive any interruption; resume=True continues a stopped run.
    backend: where chunks are certified (certify.runs.backends; default: this process). Only this
    process writes the store, whatever the backend, and it holds the run folder's lock throughout.

    Before a certificate is written (and signed) it passes the checks `verify-certificate` runs
    (certificate.CertificateCheckError otherwise): rows edited in the store are never signed."""
    folder = Path(folder)
    config = inputs.config(method)
    key = certificate.load_signing_key(sign_key) if sign_key is not None else None  # a wrong key: refused now
    job = make_job(inputs, method)  # before the store: a model the job refuses leaves no run folder
    backend = backend if backend is not None else LocalBackend()
    try:
        backend.start(inputs, method)  # also before the store: a cluster that cannot run it leaves nothing
        store = RunStore.open(folder, config, resume)
    except BaseException:
        backend.close()
        raise
    try:
        remove_stale_temporaries(folder)  # from a process killed while writing (we hold the lock now)
        done = store.done()
        todo = [i for i in range(inputs.count) if i not in done]
        chunks = [todo[start:start + job.chunk] for start in range(0, len(todo), job.chunk)]
        progress = ProgressLine(inputs.count, inputs.count - len(todo), job.samples_per_input, quiet)
        try:
            for rows in backend.results(job, inputs, method, chunks, progress.add_samples):
                store.add(rows)
                progress.add_inputs(len(rows))
        finally:
            progress.close()
            backend.close()
        # The settings asked for, which the store has just matched (an older store's missing settings
        # taken as what it meant, RunStore.DEFAULTS): the guarantee must speak of what the rows record.
        # A bounds method given without `inference` (the form of certificates from before the field)
        # keeps the old text, which says the float32 run agrees everywhere in a verified ball; where a
        # row records that it does not, the certificate states the inference the run used, filled in
        # by RunStore.config, and that inference's text.
        rows = store.rows()
        legacy_text_holds = not any("float32_disagrees" in row for row in rows)
        cert = certificate.build(config if legacy_text_holds else store.config, rows, radii)
        problems = certificate.failures(cert)
        if problems:
            raise certificate.CertificateCheckError(
                f"the rows in {store.path} fail the certificate checks ({'; '.join(problems[:3])}): the run store "
                "was edited or damaged. No certificate was written; certify the affected inputs again in a new run "
                "folder")
        if key is not None:
            cert = certificate.sign(cert, key)
        certificate.write_json(folder / CERTIFICATE_NAME, cert)
        write_reports(folder, cert)
    finally:
        store.close()
    return cert


def write_reports(folder: Path, cert: dict, html: Path | None = None, markdown: Path | None = None) -> None:
    from certify.report import write_report

    write_report(cert, html_path=html or Path(folder) / "report.html", markdown_path=markdown or Path(folder) / "report.md")
