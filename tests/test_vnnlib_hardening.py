"""VNN-LIB hardening (issue 12): counterexamples that every execution confirms (the model in
float32 and float64, onnxruntime on the ONNX file); a parser with bounded time and memory whose
errors name the line; `certify vnnlib --timeout T` answering within T plus a documented constant,
parsing and CIFAR-sized networks included; and a clear message for models that are not ONNX."""

import copy
import gzip
import re
import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from certify import limits
from certify.cli import main
from certify.formats import vnnlib
from certify.formats.onnx_import import export_onnx
from certify.formats.vnnlib import check_property, parse_vnnlib, read_vnnlib
from certify.verify import property_check


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py says why


def declarations(inputs: int, outputs: int) -> str:
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(inputs)) + \
        "".join(f"(declare-const Y_{j} Real)\n" for j in range(outputs))


def box(bounds) -> str:
    return "".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n" for i, (lo, hi) in enumerate(bounds))


def linear(weight, bias) -> nn.Module:
    weight = torch.tensor(weight, dtype=torch.float32)
    net = nn.Sequential(nn.Linear(weight.shape[1], weight.shape[0]))
    with torch.no_grad():
        net[0].weight.copy_(weight)
        net[0].bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return net.eval()


def run_cli(*args, cwd):
    """`certify ARGS` in this process (the subprocess start-up would dominate the timings)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        started = time.perf_counter()
        done = CliRunner().invoke(main, list(args), catch_exceptions=False)
        return done, time.perf_counter() - started


# ============================================================================ 1. counterexamples
# y = x_0 + x_1 + x_2 with x_0 = 1 and x_1 = x_2 = 2^-24: float32, summing left to right, rounds
# 1 + 2^-24 to 1 (a tie, to even) twice and gives exactly 1; the exact value is 1 + 2^-23.
# (Bounds written as exact fractions: repr(2.0 ** -24) is a decimal a little above 2^-24.)
TINY = 2.0 ** -24
TIGHT = declarations(3, 1) + box([(1, 1), ("(/ 1 16777216)", "(/ 4 16777216)"), ("(/ 1 16777216)", "(/ 4 16777216)")])


def test_premise_float32_sums_the_tight_network_to_exactly_one():
    net = linear([[1.0, 1.0, 1.0]], [0.0])
    with torch.no_grad():
        y = net(torch.tensor([[1.0, TINY, TINY]])).item()
    assert y == 1.0  # float32 meets "Y_0 <= 1" here ...
    assert Fraction(1) + 2 * Fraction(TINY) > 1  # ... the exact network does not


def test_point_that_only_float32_puts_in_the_region_is_never_sat(tmp_path):
    """ "Y_0 <= 1" on the box: the exact minimum, at the lower corner, is 1 + 2^-23 > 1, so no input
    meets it; float32 does there (see the premise). The old checker answered sat with that corner;
    the float64 replay rejects it, and no point inside the box passes."""
    net = linear([[1.0, 1.0, 1.0]], [0.0])
    prop = parse_vnnlib(TIGHT + "(assert (<= Y_0 1))\n")
    verdict = check_property(net, (3,), prop, max_splits=40)
    assert verdict.status in ("unknown", "unsat"), verdict
    export_onnx(net, (3,), tmp_path / "tight.onnx")
    (tmp_path / "tight.vnnlib").write_text(TIGHT + "(assert (<= Y_0 1))\n")
    done, _ = run_cli("vnnlib", "--model", "tight.onnx", "--spec", "tight.vnnlib", "--timeout", "20", cwd=tmp_path)
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[0] in ("unknown", "unsat", "timeout"), done.output


def test_onnxruntime_replay_rejects_a_point_that_it_computes_outside_the_region(tmp_path):
    """The module gives y = x, exactly 1 at the box's top x = 1, the only point meeting "Y_0 >= 1".
    The replayed ONNX file computes y = x - 2^-20 (standing in for an onnxruntime whose rounding
    misses the threshold): with the replay, the point is not a counterexample and no point is."""
    pytest.importorskip("onnxruntime")
    prop = parse_vnnlib(declarations(1, 1) + box([(0.5, 1)]) + "(assert (>= Y_0 1))\n")
    module = linear([[1.0]], [0.0])
    export_onnx(linear([[1.0]], [-(2.0 ** -20)]), (1,), tmp_path / "replay.onnx")
    without = check_property(module, (1,), prop, max_splits=20)
    assert without.status == "sat" and without.counterexample[0].tolist() == [1.0]
    for replay in (tmp_path / "replay.onnx", (tmp_path / "replay.onnx").read_bytes()):
        verdict = check_property(module, (1,), prop, max_splits=20, replay=replay)
        assert verdict.status != "sat", verdict


def relu_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def test_sat_with_slack_comes_with_a_counterexample_that_onnxruntime_confirms(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    net = relu_net()
    export_onnx(net, (4,), tmp_path / "net.onnx")
    # The largest Y_0 - Y_1 over the box, less a little: a region that exists but is small.
    lower, upper = -np.ones(4), np.ones(4)
    grid = torch.from_numpy(np.stack(np.meshgrid(*[np.linspace(-1, 1, 9)] * 4), -1).reshape(-1, 4)).float()
    with torch.no_grad():
        gap = (net(grid)[:, 0] - net(grid)[:, 1]).max().item()
    text = declarations(4, 3) + box(zip(lower, upper)) + f"(assert (>= (- Y_0 Y_1) {gap - 0.01:.6f}))\n"
    (tmp_path / "p.vnnlib").write_text(text)
    prop = read_vnnlib(tmp_path / "p.vnnlib")
    verdict = check_property(net, (4,), prop, replay=tmp_path / "net.onnx", seed=1)
    assert verdict.status == "sat"
    x, y = verdict.counterexample
    case = prop.cases[0]
    assert case.violated_by(x, y)
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    (y_ort,) = session.run(None, {session.get_inputs()[0].name: x.reshape(1, 4)})
    assert case.meets(y_ort)
    with torch.no_grad():
        assert case.meets(copy.deepcopy(net).double()(torch.from_numpy(x).double().unsqueeze(0)).numpy())
    # the reported values round-trip through the result file
    lines = vnnlib.format_result(verdict).splitlines()
    assert [float(v.strip("()").split()[1]) for v in lines[1:5]] == x.tolist()
    # and the CLI (which replays on the ONNX file) answers sat as well
    done, _ = run_cli("vnnlib", "--model", "net.onnx", "--spec", "p.vnnlib", cwd=tmp_path)
    assert done.exit_code == 0 and done.output.splitlines()[0] == "sat", done.output


def test_push_moves_a_boundary_point_into_the_region():
    """Box x_1, x_2 in [-2^-22, 2^-22]: "Y_0 <= 1" holds exactly where x_1 + x_2 <= 0. The point
    (1, 2^-24, 2^-24) meets it in float32 only; confirm refuses it, and push finds a point a little
    inward that every execution confirms."""
    net = linear([[1.0, 1.0, 1.0]], [0.0])
    wide = declarations(3, 1) + box([(1, 1), ("(/ -4 16777216)", "(/ 4 16777216)")] + [("(/ -4 16777216)", "(/ 4 16777216)")])
    prop = parse_vnnlib(wide + "(assert (<= Y_0 1))\n")
    checker = property_check._Checker(net, (3,), prop, "crown", property_check._Clock(None), 16, 0, None)
    point = torch.tensor([1.0, TINY, TINY])
    assert checker.confirm(0, point) is None
    lo, hi = (torch.from_numpy(v) for v in checker.prepared[0].inner)
    found = checker.push(0, point, lo, hi)
    assert found is not None
    x, y = found
    assert x[1] + x[2] <= 0 and x[0] == 1 and y[0] <= 1
    assert sum(Fraction(float(v)) for v in x) <= 1  # exactly, not only in float32


# ============================================================================ 2. the parser's resources
ONE = declarations(1, 1) + box([(0, 1)])


def test_huge_exponent_is_refused_at_once():
    """Fraction("1e99999999") would compute 10^99999999 exactly: minutes, before any clock ran."""
    started = time.perf_counter()
    for literal in ("1e99999999", "1e-99999999", "-7.5E+4000"):
        with pytest.raises(ValueError, match=r"^line 5: the exponent is beyond ±1000"):
            parse_vnnlib(ONE + f"(assert (<= Y_0 {literal}))\n")
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("text", [
    "(assert (<= Y_0 1e400))", "(assert (>= Y_0 -1.8e308))", "(assert (<= (* 1e400 Y_0) 1))",
    "(assert (<= (* 1e300 1e300 Y_0) 1))",
])
def test_numbers_beyond_float64_are_a_clear_error_naming_the_line(text):
    with pytest.raises(ValueError, match=r"^line 5: a coefficient or bound of this output constraint is beyond "
                                         r"the float64 range"):
        parse_vnnlib(ONE + text + "\n")


def test_numbers_within_float64_still_parse():
    prop = parse_vnnlib(ONE + "(assert (<= Y_0 1.7976931348623157e308))\n(assert (>= Y_0 1e-400))\n")
    assert prop.cases[0].bounds.tolist() == [1.7976931348623157e308, -0.0]
    assert prop.cases[0].constraints[1].bound == -Fraction(1, 10 ** 400)


def test_long_literals_and_long_arithmetic_are_refused():
    with pytest.raises(limits.ResourceLimitError, match=r"^line 5: the number 1111.*CERTIFY_LIMIT_LITERAL_DIGITS"):
        parse_vnnlib(ONE + "(assert (<= Y_0 " + "1" * 401 + "))\n")
    product = " ".join(["1234567.891"] * 1000)
    with pytest.raises(ValueError, match=r"^line 5: the arithmetic makes a number longer than 8192 bits"):
        parse_vnnlib(ONE + f"(assert (<= Y_0 (* {product})))\n")
    quotients = " ".join(f"(/ 1 {p})" for p in range(2, 3000))
    with pytest.raises(ValueError, match=r"^line 5: the arithmetic makes a number longer"):
        parse_vnnlib(ONE + f"(assert (<= Y_0 (+ {quotients})))\n")


def test_gzip_bomb_stops_at_the_limit_in_bounded_memory(tmp_path, monkeypatch):
    """40 MB of text compressed to ~40 KB: reading stops at the limit, never holding the whole."""
    (tmp_path / "bomb.vnnlib.gz").write_bytes(gzip.compress(ONE.encode() + b" " * (40 << 20), 9))
    assert (tmp_path / "bomb.vnnlib.gz").stat().st_size < 100_000
    monkeypatch.setenv("CERTIFY_LIMIT_VNNLIB_BYTES", str(4 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(limits.ResourceLimitError, match="bomb.vnnlib.gz.*CERTIFY_LIMIT_VNNLIB_BYTES"):
            read_vnnlib(tmp_path / "bomb.vnnlib.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    # within the limit it reads as before
    (tmp_path / "ok.vnnlib.gz").write_bytes(gzip.compress((ONE + "(assert (<= Y_0 0.5))\n").encode()))
    assert read_vnnlib(tmp_path / "ok.vnnlib.gz").cases[0].constraints[0].bound == Fraction(1, 2)
    # a truncated or corrupt .gz is a clear error too
    (tmp_path / "cut.vnnlib.gz").write_bytes((tmp_path / "ok.vnnlib.gz").read_bytes()[:-12])
    with pytest.raises(ValueError, match="cut.vnnlib.gz: cannot read the VNN-LIB file"):
        read_vnnlib(tmp_path / "cut.vnnlib.gz")


def test_plain_file_size_is_checked_before_reading(tmp_path, monkeypatch):
    (tmp_path / "p.vnnlib").write_text(ONE + "(assert (<= Y_0 0.5))\n" + " " * 5000)
    monkeypatch.setenv("CERTIFY_LIMIT_VNNLIB_BYTES", "1000")
    with pytest.raises(limits.ResourceLimitError, match="p.vnnlib.*CERTIFY_LIMIT_VNNLIB_BYTES"):
        read_vnnlib(tmp_path / "p.vnnlib")
    monkeypatch.setenv("CERTIFY_LIMIT_FILE_BYTES", "1000")
    monkeypatch.delenv("CERTIFY_LIMIT_VNNLIB_BYTES")
    with pytest.raises(limits.ResourceLimitError, match="CERTIFY_LIMIT_FILE_BYTES"):
        read_vnnlib(tmp_path / "p.vnnlib")


def test_parsing_stops_at_the_deadline():
    text = declarations(2000, 1) + box([(0, 1)] * 2000) * 5
    with pytest.raises(TimeoutError):
        parse_vnnlib(text, deadline=time.perf_counter())
    assert parse_vnnlib(text, deadline=time.perf_counter() + 600).num_inputs == 2000


# ============================================================================ 5. crafted files
CRAFTED = [
    # (text, kwargs, line, fragment)
    ("(declare-const X_" + "1" * 5000 + " Real)\n", {}, 1, "variable index beyond 999,999,999"),
    ("(declare-const X_99999999999 Real)\n", {}, 1, "variable index beyond"),
    (declarations(1, 0) + "(declare-const Y_999999999 Real)\n" + box([(0, 1)]) + "(assert (<= Y_999999999 1))\n",
     {}, 6, "CERTIFY_LIMIT_PROPERTY_SIZE"),
    ("(declare-const X_99999999 Real)\n(assert (>= X_99999999 0))\n", {}, 3, "X_0 is never declared"),
    (ONE + "(assert (and" + " (or (<= Y_0 1) (<= Y_0 2))" * 20 + "))\n", {}, 5, "more than 100,000 cases"),
    (declarations(1, 1) + "(assert (or" + " (and (>= X_0 0) (<= X_0 1))" * 3000 + "))\n"
     + "(assert (or" + " (<= Y_0 1)" * 3000 + "))\n", {}, 4, "more than 100,000 cases"),
    (ONE + "(assert " + "(and " * 300 + "true" + ")" * 300 + ")\n", {}, 5, "nested deeper than 200"),
    (ONE + "(assert (<= Y_0 NaN))\n", {}, 5, "unknown symbol 'NaN'"),
    (ONE + "(assert (<= Y_0 +inf))\n", {}, 5, "unknown symbol '+inf'"),
    (ONE + "(assert (<= Y_0 1e5e5))\n", {}, 5, "unknown symbol '1e5e5'"),
    ("(declare-const X_1\u0661 Real)\n", {}, 1, "unknown variable name"),  # a non-ASCII digit
    (ONE + "(assert (<= Y_0 " + "z" * 100_000 + "))\n", {}, 5, "unknown symbol 'zzzz"),
    (declarations(1, 1) + "(assert (>= X_0 (/ 1e400 3)))\n(assert (<= X_0 0))\n", {}, 4, "empty input box: X_0 >= inf"),
    (ONE + "(assert (<= Y_0 1))", {"num_outputs": 3 * 10**6, "num_inputs": 1}, 5, "CERTIFY_LIMIT_PROPERTY_SIZE"),
]


@pytest.mark.parametrize(("text", "kwargs", "line", "fragment"), CRAFTED)
def test_crafted_files_are_a_clear_error_naming_the_line(text, kwargs, line, fragment, monkeypatch):
    """... before allocating for what the file declares (a list per input up to X_99999999 was
    800 MB; one coefficient per output up to Y_999999999, 8 GB)."""
    monkeypatch.setenv("CERTIFY_LIMIT_PROPERTY_SIZE", str(1 << 20))
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            parse_vnnlib(text, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith(f"line {line}: "), message
    assert fragment in message, message
    assert len(message) < 1000  # long tokens are shortened in messages
    assert peak < 64 << 20, peak
    assert time.perf_counter() - started < 10


def test_many_disjuncts_share_one_box():
    """Cases with the same input box share its arrays (no copy per case)."""
    text = declarations(500, 2) + box([(0, 1)] * 500) + "(assert (or" + " (<= Y_0 Y_1)" * 2000 + "))\n"
    prop = parse_vnnlib(text)
    assert len(prop.cases) == 2000
    assert all(case.lower is prop.cases[0].lower and case.exact_upper is prop.cases[0].exact_upper
               for case in prop.cases)


# ============================================================================ 3. timeouts
def cifar_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4096, 100), nn.ReLU(),
        nn.Linear(100, 10)).eval()


def bias_field_property(shift: float = 50.0) -> str:
    """Every pixel anywhere in [0, 1]; "Y_0 >= Y_1 + shift": out of reach for these outputs (of
    size ~0.1), but not provable by bounds over so wide a box."""
    return declarations(3072, 10) + box([(0, 1)] * 3072) + f"(assert (>= Y_0 (+ Y_1 {shift})))\n"


def test_cifar_cnn_wide_box_answers_within_the_timeout():
    """One CROWN call on this network over this box takes 25 s or more here: the old checker ran it
    (and then branch and bound ran two more) past any timeout once the attack was done."""
    prop = parse_vnnlib(bias_field_property())
    net = cifar_cnn()
    started = time.perf_counter()
    verdict = check_property(net, (3, 32, 32), prop, timeout=3.0, attack_restarts=2, attack_steps=4)
    elapsed = time.perf_counter() - started
    assert verdict.status == "timeout"
    assert 3.0 <= elapsed <= 3.0 + vnnlib.OVERRUN_SECONDS, elapsed


def test_cli_timeout_counts_reading_the_model_and_the_property(tmp_path):
    """A property whose parsing alone takes many seconds (every bound stated 30 times): the old
    command started the clock after it (and answered unsat, proven by CROWN, long after 1.5 s)."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)).eval()
    export_onnx(net, (3, 32, 32), tmp_path / "net.onnx")
    text = declarations(3072, 10) + box([(0, 1)] * 3072) * 30 + "(assert (>= Y_0 (+ Y_1 50)))\n"
    (tmp_path / "p.vnnlib").write_text(text)
    done, elapsed = run_cli("vnnlib", "--model", "net.onnx", "--spec", "p.vnnlib", "--timeout", "1.5",
                            "--result", "r.txt", cwd=tmp_path)
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == ["timeout"]
    assert (tmp_path / "r.txt").read_text() == "timeout\n"
    assert elapsed <= 1.5 + vnnlib.OVERRUN_SECONDS, elapsed


def test_the_constant_is_documented():
    done = CliRunner().invoke(main, ["vnnlib", "--help"], terminal_width=200)
    help_text = " ".join(done.output.split())
    assert f"within TIMEOUT + {vnnlib.OVERRUN_SECONDS:g} seconds" in help_text, help_text
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("certify vnnlib"))
    assert re.search(rf"T \+ {vnnlib.OVERRUN_SECONDS:g} s\b", line), line


# ============================================================================ 4. not ONNX
def test_vnnlib_refuses_a_state_dict_without_asking_for_arch(tmp_path):
    net = linear([[1.0, 1.0]], [0.0])
    torch.save(net.state_dict(), tmp_path / "net.pt")
    (tmp_path / "p.vnnlib").write_text(declarations(2, 1) + box([(0, 1)] * 2) + "(assert (<= Y_0 1))\n")
    for name in ("net.pt", "net.onnx"):  # the same bytes named .onnx
        (tmp_path / name).write_bytes((tmp_path / "net.pt").read_bytes())
        done, _ = run_cli("vnnlib", "--model", name, "--spec", "p.vnnlib", cwd=tmp_path)
        assert done.exit_code == 2
        assert "certify vnnlib takes an ONNX model" in done.output and "zip archive" in done.output, done.output
        assert "--arch" not in done.output and "--trust-model-code" not in done.output


def test_the_vnnlib_clock_starts_with_the_process():
    """New-user finding: the clock started after Python, torch and certify had loaded (1-2 s), so a
    harness timing the whole command saw more than TIMEOUT + 2 s. It now starts at the process's
    start: a process that slept 1 s before asking is at least 1 s old."""
    import subprocess
    import sys

    code = ("import time; time.sleep(1.0); from certify.cli import _process_started; "
            "print(time.perf_counter() - _process_started())")
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               cwd="/").stdout)
    assert 1.0 <= age < 60, age


def test_an_error_names_an_atom_once():
    """New-user finding: "undeclared variable Y_3: Y_3" repeated the atom the message names."""
    text = declarations(1, 1) + box([(0, 1)]) + "(assert (>= Y_3 0))\n"
    with pytest.raises(ValueError) as error:
        parse_vnnlib(text)
    assert "undeclared variable Y_3" in str(error.value) and str(error.value).count("Y_3") == 1
