"""The `certify` command.

Exit codes: 0 success; 2 bad usage or bad input (an unreadable model, data that does not fit it, a
run folder that holds another run, an unsupported operation); 1 failure (a certificate that does
not verify, an internal error); 130 interrupted (committed rows are kept: rerun with --resume).
"""

from __future__ import annotations

import datetime
import functools
import math
import os
import signal
import sys
import time
from pathlib import Path

import click

EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


class BadInput(click.ClickException):
    exit_code = EXIT_BAD_INPUT


class Failure(click.ClickException):
    exit_code = EXIT_FAILURE


def _errors_to_exit_codes(command):
    """ValueError (and its subclasses: model, data, run-store and unsupported-model errors) from
    the library is the user's input: exit 2 with its message. Anything else (TypeError included:
    the CLI converts every argument, so one would be a bug): exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        # SIGTERM (timeout, Slurm, Docker) stops a run like Ctrl-C: finished inputs stay stored.
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, FileExistsError) as exc:
            raise BadInput(str(exc)) from exc
        except BrokenPipeError:  # the reader of our output (e.g. `| head`) went away: nothing left to say
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush stays quiet
            sys.exit(0)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: finished inputs are stored; run the same command with --resume to continue",
                       err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            from certify.certificate import CertificateCheckError

            if isinstance(exc, CertificateCheckError):
                raise Failure(str(exc)) from exc
            if os.environ.get("CERTIFY_DEBUG"):
                raise
            raise Failure(f"{type(exc).__name__}: {exc} (set CERTIFY_DEBUG=1 for the traceback)") from exc

    return wrapper


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _positive(name):
    def check(ctx, param, value):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise click.BadParameter(f"must be finite and > 0, got {value}", param_hint=name)
        return value
    return check


def _probability(ctx, param, value):
    from certify import _checks

    try:
        return _checks.probability_level("alpha", value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("alpha "), param_hint="--alpha") from None


def _radii(ctx, param, value):
    if value is None:
        return None
    try:
        radii = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"must be comma-separated numbers, got {value!r}", param_hint="--radii") from None
    if any(not (math.isfinite(r) and r >= 0) for r in radii):
        raise click.BadParameter("radii must be finite and >= 0", param_hint="--radii")
    return radii


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="certify")
def main():
    """Certified robustness for PyTorch models: randomized smoothing and bound propagation.

    Start with `certify demo`; each run writes a folder with a resumable run store, a
    certificate (JSON, optionally signed) and a report (HTML and Markdown).
    """


# ---------------------------------------------------------------------------- common options
_trust_option = click.option(
    "--trust-model-code", "trust_code", is_flag=True,
    help="Allow torch.export (.pt2) and TorchScript models: loading them runs code stored in the file. "
         "ONNX and state dicts never need this.")


def _model_data_options(command):
    options = [
        click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Model file: ONNX (.onnx), torch.export (.pt2), TorchScript, or a state dict (with --arch)."),
        click.option("--arch", default=None,
                     help="For a state dict: module:function returning the (untrained) model, called with no "
                          "arguments; the module is imported from the current folder or the Python path."),
        _trust_option,
        click.option("--data", "data_spec", required=True,
                     help="Inputs and labels: an .npz file (keys x and y), an .npy file of inputs (with --labels), "
                          "or 'digits' for the bundled 8x8 digits test set."),
        click.option("--labels", default=None, type=click.Path(dir_okay=False),
                     help="Labels (.npy) for an .npy file of inputs."),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Certify only the first N inputs."),
        click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Run folder (created; holds run.sqlite, certificate.json, report.html, report.md)."),
        click.option("--resume", is_flag=True,
                     help="Continue the run in --out where it stopped (same settings); finished inputs are kept."),
        click.option("--sign-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                     help="Ed25519 private key (from `certify keygen`) to sign the certificate with."),
        click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors (for scripts)."),
        click.option("--backend", "backend_name", type=click.Choice(["local", "ray"]), default="local",
                     show_default=True,
                     help="local: this process; ray: shard the inputs over Ray workers (pip install 'certify[ray]'). "
                          "Same certificate either way."),
        click.option("--address", default=None,
                     help="Ray cluster to join (e.g. auto, ray://head:10001); default: start a local one."),
        click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Ray workers (one per GPU where the cluster has GPUs)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _finish(cert: dict, out: Path, quiet: bool, started: float) -> None:
    if quiet:
        return
    s = cert["summary"]
    what = "smoothed" if cert["method"]["family"] == "smoothing" else "model's"
    ran = (f"ran {s['num_inputs']} inputs in {time.perf_counter() - started:.1f} s wall "
           f"(certification time summed over inputs {s['seconds']:.1f} s, as the certificate records it)")
    if "certified_fraction" in s:  # sequential at a target radius: a prediction only where certified
        click.echo(f"{ran}; certified at radius {cert['method']['target_radius']:g}: {s['certified_fraction']:.3f} "
                   "of the inputs")
    else:
        click.echo(f"{ran}; accuracy of the {what} prediction {s['clean_accuracy']:.3f}")
    if "fixed_samples" in s:
        click.echo(f"  samples drawn {s['samples']:,} against {s['fixed_samples']:,} for fixed n "
                   f"({s['fixed_samples'] / max(1, s['samples']):.1f}x fewer)")
    for point in s["certified_accuracy"]:
        click.echo(f"  certified accuracy at radius {point['radius']:<8g} {point['accuracy']:.3f}")
    if s["verified_accuracy"] is not None and s["pgd_accuracy"] is not None:
        click.echo(f"  accuracy under PGD attack           {s['pgd_accuracy']:.3f} (upper bound on robust accuracy)")
    if "falsified_fraction" in s:
        click.echo(f"  decided: verified {s['verified_accuracy']:.3f}, falsified {s['falsified_fraction']:.3f} "
                   f"(counterexample or misclassified), unknown {s['unknown_fraction']:.3f}")
    signed = " (signed)" if "signature" in cert else ""
    click.echo(f"certificate{signed}: {out / 'certificate.json'}\nreport: {out / 'report.html'}, {out / 'report.md'}")


# ---------------------------------------------------------------------------- smooth
@main.command()
@_model_data_options
@click.option("--sigma", required=True, type=float, callback=_positive("--sigma"),
              help="Noise level: σ of Gaussian noise, the scale λ of Laplace noise, the half-width of uniform noise.")
@click.option("--noise", type=click.Choice(["gaussian", "laplace", "uniform"]), default="gaussian", show_default=True,
              help="Noise family: gaussian certifies ℓ2 radii; laplace and uniform certify ℓ1 radii.")
@click.option("--n0", type=click.IntRange(min=1, max=2**48), default=100, show_default=True,
              help="Samples that choose the class.")
@click.option("--n", type=click.IntRange(min=1, max=2**48), default=100_000, show_default=True,
              help="Samples that bound the class probability (independent of the n0 draw).")
@click.option("--alpha", type=float, default=0.001, show_default=True, callback=_probability,
              help="Failure probability of each input's certificate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1_000, show_default=True,
              help="Noisy copies per model call.")
@click.option("--seed", type=click.IntRange(min=0, max=2**64 - 1), default=0, show_default=True,
              help="Philox seed: the noise of input i is a function of (seed, i, sample).")
@click.option("--sampler", type=click.Choice(["native", "torch"]), default="native", show_default=True,
              help="native: the C++ sampler; torch: the plain-PyTorch reference (recorded as method.backend).")
@click.option("--radii", callback=_radii, default=None,
              help="Comma-separated radii for the certified-accuracy table (default 0,0.25,...,3; with "
                   "--target-radius, the target).")
@click.option("--target-radius", type=float, default=None,
              help="Sequential: decide for each input only whether it is certified at this radius, drawing "
                   "samples in looks until the answer is settled (far fewer than --n for most inputs).")
@click.option("--max-samples", type=click.IntRange(min=1, max=10**9), default=None,
              help="--target-radius: most estimation samples per input (default: --n).")
@click.option("--sequential", "budgeted", is_flag=True,
              help="Sequential with budget --n: the certified radius, stopping once the rest of the budget is "
                   "unlikely to add more than --tolerance to it.")
@click.option("--tolerance", type=float, default=None,
              help="--sequential: the radius a full budget may still add when sampling stops (default 0.1 x --sigma).")
@click.option("--boundary", type=click.Choice(["exact", "bonferroni"]), default=None,
              help="--target-radius: exact (default: error spending, its level computed exactly; looks 100, then "
                   "x1.1) or bonferroni (Clopper-Pearson at alpha / K; looks 100, then x2). --sequential uses "
                   "bonferroni, a confidence sequence.")
@click.option("--first-look", type=click.IntRange(min=1, max=2**48), default=100, show_default=True,
              help="Sequential: estimation samples at the first look.")
@click.option("--growth", type=float, default=None,
              help="Sequential: each look has this many times the samples of the one before (default: the "
                   "boundary's, x1.1 exact, x2 bonferroni).")
@_errors_to_exit_codes
def smooth(model_path, arch, trust_code, data_spec, labels, limit, out, resume, sign_key, quiet, backend_name, address,
           workers, sigma, noise, n0, n, alpha, batch_size, seed, sampler, radii, target_radius, max_samples, budgeted,
           tolerance, boundary, first_look, growth):
    """Randomized smoothing: CERTIFY (Cohen et al. 2019) for every input.

    Each input gets the smoothed classifier's prediction (-1 = abstain) and a radius: with
    probability >= 1 - alpha, the smoothed prediction is constant on the ball of that radius.
    With --target-radius R (or --sequential), samples come in looks and each input stops as soon
    as its answer is settled, with the same guarantee whatever the stopping time.
    """
    from certify.runs import run

    started = time.perf_counter()
    sequential = _sequential_settings(target_radius, max_samples, budgeted, tolerance, boundary, growth, sampler, sigma)
    inputs = run.prepare(model_path, data_spec, arch=arch, labels=labels, limit=limit, trust_code=trust_code)
    method = smoothing_method(noise, sigma, n0, n, alpha, batch_size, seed, sampler)
    what = f"smoothing: {noise} noise {sigma}, n0={n0}, n={n:,}, alpha={alpha}, seed={seed}"
    if sequential is not None:
        from certify.runs.jobs import sequential_method

        method = sequential_method(method, inputs.data.input_shape, first_look=first_look, **sequential)
        what = (f"sequential smoothing: {noise} noise {sigma}, n0={n0}, alpha={alpha}, seed={seed}, "
                + (f"target radius {target_radius}, at most {method['max_samples']:,} samples, {method['boundary']} "
                   "boundary" if target_radius is not None else f"budget n={n:,}, tolerance {method['tolerance']}")
                + f", {len(method['looks'])} looks")
        if radii is None and target_radius is not None:
            radii = [target_radius]
    _announce(quiet, inputs, what)
    cert = run.execute(out, inputs, method, resume=resume, quiet=quiet, sign_key=sign_key, radii=radii,
                       backend=_backend(backend_name, address, workers))
    _finish(cert, out, quiet, started)


def _sequential_settings(target_radius, max_samples, budgeted, tolerance, boundary, growth, sampler, sigma):
    """The sequential mode's settings from the options (None for fixed-n CERTIFY); bad mixes refused."""
    if target_radius is None and not budgeted:
        for given, name in ((max_samples, "--max-samples"), (tolerance, "--tolerance"), (boundary, "--boundary"),
                            (growth, "--growth")):
            if given is not None:
                raise BadInput(f"{name} applies to sequential certification (--target-radius or --sequential)")
        return None
    if target_radius is not None and budgeted:
        raise BadInput("give --target-radius (certified at R?) or --sequential (budgeted radius), not both")
    if sampler != "native":
        raise BadInput("sequential certification runs on the native sampler (--sampler native)")
    if growth is not None and not (math.isfinite(growth) and 1 < growth <= 1000):
        raise BadInput(f"--growth must lie in (1, 1000], got {growth}")
    if target_radius is not None:
        if not (math.isfinite(target_radius) and target_radius >= 0):
            raise BadInput(f"--target-radius must be finite and >= 0, got {target_radius}")
        if tolerance is not None:
            raise BadInput("--tolerance applies to --sequential")
        return {"target_radius": float(target_radius), "max_samples": max_samples, "boundary": boundary or "exact",
                "growth": growth}
    if max_samples is not None:
        raise BadInput("--max-samples applies to --target-radius; with --sequential the budget is --n")
    if boundary not in (None, "bonferroni"):
        raise BadInput("--sequential bounds the radius with the bonferroni confidence sequence; the exact boundary "
                       "tests one radius (--target-radius)")
    tolerance = 0.1 * sigma if tolerance is None else tolerance
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise BadInput(f"--tolerance must be finite and >= 0, got {tolerance}")
    return {"tolerance": float(tolerance), "growth": growth}


def _backend(name: str, address, workers):
    if name == "local":
        if address is not None:
            raise BadInput("--address applies to --backend ray")
        return None
    from certify.runs.backends import RayBackend

    return RayBackend(workers=workers, address=address)


def smoothing_method(noise, sigma, n0, n, alpha, batch_size, seed, backend) -> dict:
    return {"family": "smoothing", "procedure": "certify", "noise": noise, "scale": float(sigma),
            "norm": "l2" if noise == "gaussian" else "l1", "n0": n0, "n": n, "alpha": float(alpha),
            "batch_size": batch_size, "seed": seed, "backend": backend}


def _announce(quiet: bool, inputs, what: str) -> None:
    if not quiet:
        click.echo(f"model {inputs.model.path} ({inputs.model.format}, sha256 {inputs.model.sha256[:12]}), "
                   f"data {inputs.data.path}: {inputs.count} of {len(inputs.data)} inputs, shape "
                   f"{inputs.data.input_shape}, {inputs.num_classes} classes", err=True)
        click.echo(what, err=True)


# ---------------------------------------------------------------------------- bounds
@main.command()
@_model_data_options
@click.option("--eps", type=float, default=None, callback=_positive("--eps"),
              help="Radius of the input ball to verify (required unless --radius).")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True, help="Ball norm.")
@click.option("--method", type=click.Choice(["ibp", "crown", "crown-ibp", "alpha-crown", "bab"]), default="crown",
              show_default=True,
              help="Bound propagation method (IBP fastest; CROWN; alpha-CROWN optimises CROWN's slopes and is never "
                   "looser). bab: complete verification, each input verified, falsified (with a counterexample) "
                   "or unknown within --timeout-per-input (attack, alpha-CROWN, beta-CROWN branch and bound).")
@click.option("--timeout-per-input", type=float, default=30.0, show_default=True,
              callback=_positive("--timeout-per-input"),
              help="--method bab: seconds per input before it is left unknown (answers within about one more "
                   "batch of bounding).")
@click.option("--radius", "radius_mode", is_flag=True,
              help="Find the largest certified eps per input (bisection up to --max-eps) instead of verifying --eps.")
@click.option("--max-eps", type=float, default=1.0, show_default=True, callback=_positive("--max-eps"),
              help="Upper end of the --radius search.")
@click.option("--tol", type=float, default=1e-3, show_default=True, callback=_positive("--tol"),
              help="Precision of the --radius search.")
@click.option("--domain", type=(float, float), default=None,
              help="Valid input range LO HI (e.g. 0 1 for pixels), intersected with an linf ball.")
@click.option("--attack/--no-attack", default=True, show_default=True,
              help="Also run a PGD attack at eps: the accuracy under attack bounds robust accuracy from above.")
@click.option("--attack-steps", type=click.IntRange(min=1), default=50, show_default=True, help="PGD steps.")
@click.option("--attack-restarts", type=click.IntRange(min=1), default=2, show_default=True, help="PGD restarts.")
@click.option("--inference", type=click.Choice(["exact", "float32"]), default="exact", show_default=True,
              help="What 'verified' speaks of. exact: the network in exact real arithmetic on its stored float32 "
                   "weights (a float32 run may still differ where logits tie to within rounding; rows record "
                   "it). float32: the model's own float32 forward pass, with any summation order and with or "
                   "without FMA, returns the label at every float32 point of the ball (the margin must also "
                   "beat a rigorous bound on the forward pass's rounding error; assumes no Winograd/FFT "
                   "convolution and no TF32/bf16 or fast-math modes).")
@_errors_to_exit_codes
def bounds(model_path, arch, trust_code, data_spec, labels, limit, out, resume, sign_key, quiet, backend_name, address,
           workers, eps, norm, method, timeout_per_input, radius_mode, max_eps, tol, domain, attack, attack_steps,
           attack_restarts, inference):
    """Bound propagation: verify each input's label on a ball (sound in floating point).

    Verified means the label's logit exceeds every other logit everywhere in the ball, proven in
    exact arithmetic for the float32 network (--inference exact), or for the model's float32
    forward pass in any summation order (--inference float32): no failure probability.
    """
    from certify.runs import run

    if radius_mode == (eps is not None):
        raise BadInput("give either --eps (verify) or --radius (largest certified eps), not both or neither")
    if domain is not None and norm != "linf":
        raise BadInput("--domain applies to --norm linf only")
    if domain is not None and not all(math.isfinite(v) for v in domain):
        raise BadInput(f"--domain must be two finite numbers LO HI, got {domain[0]} {domain[1]}")
    started = time.perf_counter()
    inputs = run.prepare(model_path, data_spec, arch=arch, labels=labels, limit=limit, trust_code=trust_code)
    method_ = bounds_method(method, norm, eps, max_eps if radius_mode else None, tol if radius_mode else None, domain,
                            {"name": "pgd", "eps": eps, "steps": attack_steps, "restarts": attack_restarts, "seed": 0}
                            if attack and not radius_mode else None, inference=inference,
                            timeout_per_input=timeout_per_input if method == "bab" else None)
    from certify import certificate

    certificate.check_method(method_)  # a refusal before the progress header (make_job checks again)
    _announce(quiet, inputs, f"bounds: {method} over {norm} " + (f"eps={eps}" if eps else f"radius up to {max_eps}")
              + f", {inference} inference")
    cert = run.execute(out, inputs, method_, resume=resume, quiet=quiet, sign_key=sign_key,
                       backend=_backend(backend_name, address, workers))
    _finish(cert, out, quiet, started)


def bounds_method(method, norm, eps, max_eps, tol, domain, attack, inference: str = "exact",
                  timeout_per_input: float | None = None) -> dict:
    settings = {"family": "bounds", "procedure": "verify" if eps is not None else "radius", "method": method,
                "norm": norm, "eps": eps, "max_eps": max_eps, "tol": tol,
                "domain": list(domain) if domain is not None else None, "sound": True, "attack": attack,
                "inference": inference}
    if timeout_per_input is not None:
        settings["timeout_per_input"] = float(timeout_per_input)
    return settings


# ---------------------------------------------------------------------------- vnnlib
@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The network, as ONNX.")
@click.option("--spec", required=True, type=click.Path(dir_okay=False, path_type=Path), help="VNN-LIB property file.")
@click.option("--timeout", type=float, default=None, callback=_positive("--timeout"),
              help="Seconds before answering 'timeout', counted from the process's start (Python's start-up, "
                   "reading the model and the property included). The answer comes within TIMEOUT + 2 seconds, "
                   "for networks whose forward pass on one input takes well under a second.")
@click.option("--method", type=click.Choice(["ibp", "crown", "crown-ibp"]), default="crown", show_default=True)
@click.option("--result", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the answer to this result file (VNN-COMP form).")
@_errors_to_exit_codes
def vnnlib(model_path, spec, timeout, method, result):
    """Check a VNN-LIB property (VNN-COMP format) on an ONNX network.

    Prints `unsat` (proven: no input in the box satisfies the output constraints), `sat` and a
    counterexample (found by attack, checked by running the model in float32 and float64 and, when
    onnxruntime is installed, by onnxruntime on the ONNX file), `unknown`, or `timeout`.
    """
    started = _process_started()
    deadline = None if timeout is None else started + timeout
    _refuse_non_onnx(model_path)

    import torch

    from certify.formats import vnnlib as vnn
    from certify.formats.model_files import load_model
    from certify.verify.property_check import Verdict, check_property

    def answer(verdict) -> None:
        text = vnn.format_result(verdict)
        if result is not None:
            from certify._files import write_text_atomic

            write_text_atomic(result, text)
        click.echo(text.rstrip("\n"))

    def time_up() -> None:
        answer(Verdict("timeout", None, time.perf_counter() - started))

    loaded = load_model(model_path)
    if loaded.input_shape is None:
        raise BadInput("certify vnnlib takes an ONNX model (the input shape comes from its graph)")
    with torch.no_grad():
        num_outputs = int(loaded.module(torch.zeros(1, *loaded.input_shape)).numel())
    try:
        prop = vnn.read_vnnlib(spec, num_inputs=math.prod(loaded.input_shape), num_outputs=num_outputs,
                               deadline=deadline)
    except TimeoutError:
        return time_up()
    remaining = None if deadline is None else deadline - time.perf_counter()
    if remaining is not None and remaining <= 0:
        return time_up()
    answer(check_property(loaded.module, loaded.input_shape, prop, timeout=remaining, method=method,
                          replay=model_path))
    return None


def _process_started() -> float:
    """When this process started, on the time.perf_counter() clock: a harness times the whole
    command, Python's start-up and imports (1-2 s with torch) included. Linux: /proc/self/stat's
    start time against /proc/uptime; elsewhere (or unreadable): now."""
    now = time.perf_counter()
    try:
        import os

        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, in ticks
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - age if 0 <= age < 3600 else now


def _refuse_non_onnx(path: Path) -> None:
    """`certify vnnlib` reads ONNX only (the input shape comes from the graph, and onnxruntime
    replays counterexamples on the file): refuse state dicts and torch archives with a message that
    says so, before load_model asks for options (--arch, --trust-model-code) this command lacks."""
    if not path.is_file():
        return  # load_model says that it does not exist
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        what = "a zip archive (a torch.save state dict, a torch.export or a TorchScript archive)"
    elif head[:1] == b"\x80":
        what = "a pickle (torch.save)"
    elif path.suffix != ".onnx":
        what = "not an .onnx file"
    else:
        return
    raise BadInput(f"certify vnnlib takes an ONNX model (a .onnx file); {path} is {what}. Export the network "
                   "to ONNX with certify.formats.onnx_import.export_onnx(model, input_shape, path) or "
                   "torch.onnx.export(..., dynamo=False)")


# ---------------------------------------------------------------------------- report / export
@main.command()
@click.argument("run_folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML report path (default RUN/report.html).")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Markdown summary path (default RUN/report.md).")
@_errors_to_exit_codes
def report(run_folder, html, markdown):
    """Write the HTML and Markdown reports of a finished run from its certificate."""
    from certify import certificate
    from certify.runs.run import CERTIFICATE_NAME, write_reports

    path = run_folder / CERTIFICATE_NAME
    if not path.exists():
        raise BadInput(f"{run_folder} has no {CERTIFICATE_NAME}: the run has not finished (resume it first)")
    cert = certificate.load(path)
    # The report reads the certificate's fields as the schema defines them: check that first.
    schema_check = next(result for result in certificate.check(cert) if result[0] == "schema")
    if not schema_check[1]:
        raise BadInput(f"{path} is not a valid certificate (schema: {schema_check[2]}); no report was written")
    write_reports(run_folder, cert, html, markdown)
    click.echo(f"report: {html or run_folder / 'report.html'}, {markdown or run_folder / 'report.md'}")


@main.command()
@click.argument("run_folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--tsv", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output file, locuslab/smoothing's columns: idx label predict radius correct time.")
@_errors_to_exit_codes
def export(run_folder, tsv):
    """Export a run's rows (finished so far) as TSV for existing analysis scripts."""
    from certify._files import write_text_atomic
    from certify.runs.store import RunStore

    store = RunStore.load(run_folder)
    try:
        rows = store.rows()
    finally:
        store.close()
    # Radii exactly as certified (repr round-trips; rounding to nearest could move them up); time
    # as locuslab writes it, str(datetime.timedelta).
    lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
    for r in rows:
        problem = _export_problem(r)
        if problem is not None:
            raise BadInput(f"{store.path}: input {r['index']}: {problem}; the run store was edited or damaged, "
                           "nothing was exported")
        lines.append(f"{r['index']}\t{r['label']}\t{r['prediction']}\t{r['radius']!r}\t{int(r['correct'])}\t"
                     f"{datetime.timedelta(seconds=r['seconds'])}")
    write_text_atomic(tsv, "\n".join(lines) + "\n")
    click.echo(f"{len(rows)} rows written to {tsv}")


def _export_problem(row: dict) -> str | None:
    """What keeps a stored row from being a TSV line (None: nothing). RunStore.rows has checked
    that it is a JSON object holding its own integer index."""
    for key in ("label", "prediction"):
        value = row.get(key)
        if key not in row:
            return f"'{key}' is missing"
        if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value < 2**63:
            return f"'{key}' must be a class index, got {value!r:.40}"
    for key in ("radius", "seconds"):
        value = row.get(key)
        if key not in row:
            return f"'{key}' is missing"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            return f"'{key}' must be a finite number >= 0, got {value!r:.40}"
    if row["seconds"] >= datetime.timedelta.max.days * 86_400:  # timedelta() overflows
        return f"'seconds' is {row['seconds']!r}, beyond any duration"
    if "correct" not in row:
        return "'correct' is missing"
    if not isinstance(row["correct"], bool):
        return f"'correct' must be true or false, got {row['correct']!r:.40}"
    return None


# ---------------------------------------------------------------------------- keys and verification
@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Folder for the key files.")
@click.option("--name", default="certify-key", show_default=True, help="Key file name (NAME.pem, NAME.pub.pem).")
@_errors_to_exit_codes
def keygen(out, name):
    """Create an Ed25519 key pair for signing certificates (private key file mode 0600)."""
    from certify import certificate

    private, public = certificate.keygen(out, name)
    click.echo(f"private key: {private} (keep it secret; sign with --sign-key)\npublic key: {public} "
               "(give it to whoever checks your certificates)")


@main.command("verify-certificate")
@click.argument("cert_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--public-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Require a valid signature by this Ed25519 public key.")
@click.option("--audit", type=click.IntRange(min=0), default=0, show_default=True,
              help="Re-certify this many random inputs and check they agree (needs the model and data files).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Model file for --audit (default: the path in the certificate).")
@click.option("--data", "data_spec", default=None, help="Data for --audit (default: the path in the certificate).")
@click.option("--arch", default=None,
              help="For --audit of a state-dict model: the architecture (never taken from the certificate).")
@_trust_option
@_errors_to_exit_codes
def verify_certificate(cert_path, public_key, audit, model_path, data_spec, arch, trust_code):
    """Check a certificate: schema, signature, rows and summary recomputed; optionally re-certify.

    Exit 0 when every check passes, 1 when any fails.
    """
    from certify import certificate
    from certify.runs.audit import audit_certificate

    cert = certificate.load(cert_path)
    checks = certificate.check(cert, public_key)
    if audit and all(ok for _, ok, _ in checks):
        checks += audit_certificate(cert, cert_path, audit, model_path, data_spec, arch=arch, trust_code=trust_code)
    for name, ok, detail in checks:
        click.echo(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if not all(ok for _, ok, _ in checks):
        raise Failure(f"{cert_path} does not verify")
    click.echo(f"{cert_path}: verified")


# ---------------------------------------------------------------------------- demo / bench
@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("certify-demo"),
              show_default=True, help="Folder for models, data, runs, certificates and reports.")
@click.option("--inputs", type=click.IntRange(min=1), default=100, show_default=True, help="Test digits to certify.")
@click.option("--n", type=click.IntRange(min=1), default=10_000, show_default=True, help="Noise samples per input.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing.")
@_errors_to_exit_codes
def demo(out, inputs, n, quiet):
    """Certify the bundled digits with the demo models: smoothing and bound propagation.

    Writes the models (ONNX), the data (.npz), two runs with certificates and reports, and prints
    the `certify smooth` / `certify bounds` commands that reproduce them.
    """
    from certify.demo import run_demo

    run_demo(out, num_inputs=inputs, n=n, quiet=quiet)


@main.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Model file to time (default: the digits demo CNN and a 784-256-256-10 MLP).")
@click.option("--input-shape", default=None, help="Input shape for a non-ONNX --model, e.g. 1,28,28.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the results as JSON (to compare machines).")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed repetitions per entry (medians are reported).")
@_trust_option
@_errors_to_exit_codes
def bench(model_path, input_shape, device, json_path, repeats, trust_code):
    """Time the standard matrix: native core against the plain-PyTorch twin, in one process."""
    from certify import bench as bench_module

    bench_module.run(model_path, input_shape, device, json_path, repeats, trust_code=trust_code)


if __name__ == "__main__":  # pragma: no cover
    main()
