"""The findings and the sandbox's guarantees again, run by an unprivileged user (nobody): the case of a
laptop, where full isolation needs unprivileged user namespaces and restricted isolation keeps the
trainer's uid. Needs root (to become nobody), setpriv, and an interpreter nobody can read: this
one, or RFTKIT_TEST_PYTHON (a pyenv Python under /root is not readable; the test says so and skips)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _readable_python(env: dict) -> str | None:
    for python in (os.environ.get("RFTKIT_TEST_PYTHON"), sys.executable):
        # the workers are started by the test process, so it must be able to start this interpreter itself
        probe = ("import os, subprocess, sys, pytest, rftkit.sandbox.pool\nos.listdir(sys.base_prefix)\n"
                 "subprocess.run([sys.executable, '-c', 'import rftkit.sandbox.zygote'], check=True)")
        if python and subprocess.run([*NOBODY, python, "-c", probe], env=env, cwd="/", capture_output=True,
                                     timeout=60).returncode == 0:
            return python
    return None


def test_findings_hold_for_an_unprivileged_user():
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: this run of the suite is the unprivileged one")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    tmp = tempfile.mkdtemp(prefix="rftkit-nobody-", dir="/var/tmp")
    os.chown(tmp, 65534, 65534)
    env = {"PATH": os.environ.get("PATH", os.defpath), "TMPDIR": tmp, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": str(REPO / "src"), "LANG": "C.UTF-8"}
    try:
        python = _readable_python(env)
        if python is None:
            pytest.skip(f"no interpreter readable by nobody ({sys.executable} is not; set RFTKIT_TEST_PYTHON)")
        run = subprocess.run([*NOBODY, python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/sandbox/test_findings.py", "tests/sandbox/test_sandbox.py"],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert "passed" in summary and "failed" not in summary, summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
