"""The certify command: argument checks come before any work."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args,match", [
    (["--inputs", "-5"], "--inputs must be >= 1"),
    (["--inputs", "0"], "--inputs must be >= 1"),
    (["--n", "0"], "--n must be >= 1"),
    (["--alpha", "2"], "--alpha must lie in"),
    (["--sigma", "nan"], "--sigma must be finite"),
])
def test_demo_rejects_bad_arguments(args, match, tmp_path):
    # Run from an empty folder: from the repository root, `python -m` would import the source tree.
    done = subprocess.run([sys.executable, "-m", "certify.cli", "demo", *args], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert match in done.stderr
