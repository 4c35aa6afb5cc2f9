"""`certify demo`: argument checks come before any work; a short demo run writes everything it
promises (models, data, two runs with certificates that verify, reports) and the commands it
prints reproduce its certificates."""

import json
import shlex

import pytest
from run_files import run_cli

certify = run_cli

@pytest.mark.parametrize("args,match", [
    (["--inputs", "-5"], "--inputs"),
    (["--inputs", "0"], "--inputs"),
    (["--n", "0"], "--n"),
    (["--no-such-option"], "No such option"),
])
def test_demo_rejects_bad_arguments(args, match, tmp_path):
    done = certify("demo", *args, "--out", "demo", cwd=tmp_path)
    assert done.returncode == 2
    assert match in done.stderr
    assert not (tmp_path / "demo").exists()


def test_demo_writes_everything_and_its_commands_reproduce_it(tmp_path):
    done = certify("demo", "--out", "demo", "--inputs", "6", "--n", "500", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    demo = tmp_path / "demo"
    assert (demo / "models" / "digits-noise-0.25.onnx").is_file() and (demo / "digits-test.npz").is_file()
    for part in ("smooth", "bounds"):
        for name in ("certificate.json", "report.html", "report.md", "run.sqlite"):
            assert (demo / part / name).is_file(), (part, name)
        check = certify("verify-certificate", demo / part / "certificate.json", "--audit", "2", cwd=tmp_path)
        assert check.returncode == 0, check.stdout

    commands = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("certify smooth")]
    assert len(commands) == 1
    args = shlex.split(commands[0])[1:]
    again = certify(*args, "--quiet", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    first = json.loads((demo / "smooth" / "certificate.json").read_text())
    second = json.loads((demo / "my-smooth" / "certificate.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(first["results"]) == strip(second["results"])
    assert first["model"]["sha256"] == second["model"]["sha256"]
