"""Shared by the sandbox tests: a tightly capped pool for hostile programs (few processes, little memory,
a 1 s limit) in each isolation mode, and a grader that keeps the raw results.

`tight_pool` is parametrized over both modes, so every test that uses it runs under full and under
restricted isolation. A mode that cannot start on this machine (restricted isolation as root with an
interpreter an unprivileged uid cannot read, for instance) is skipped with the pool's own refusal as
the reason: that refusal is itself tested in test_findings.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rftkit.data import Example
from rftkit.graders.code import PythonTestsGrader, PythonTestsParams
from rftkit.sandbox import Job, SandboxConfig, SandboxPool, SandboxUnavailable

TESTS_DIR = str(Path(__file__).resolve().parents[1])
SECRET = "rftkit-test-secret-7f3a"
MODES = ("full", "restricted")
TIMEOUT_S = 1.0
LEAK = "LEAKED:"
WRONG = "def add(a, b):\n    return -1234567\n"
CORRECT = "def add(a, b):\n    return a + b\n"


def tight(mode: str, **overrides) -> SandboxConfig:
    options = dict(workers=2, max_processes=8, address_space_mb=256, tmp_size_mb=8, max_file_size_mb=4,
                   max_output_bytes=65536, hide_paths=(TESTS_DIR,), isolation=mode)
    return SandboxConfig(**{**options, **overrides})


ADD = Example(id="add", prompt="write add(a, b)", fields={
    "entry_point": "add", "tests": ["assert add(1, 2) == 3", "assert add(-4, 4) == 0"],
    "hidden_tests": ["assert add(123457, 654321) == 777778", "assert add(-70001, -80002) == -150003"],
    "reference": "def add(a, b):\n    return a + b\n",
    "random_inputs": "def generate(rng):\n    return [rng.randint(-10**6, 10**6), rng.randint(-10**6, 10**6)]\n",
    "num_random": 4})


def start_pool(config: SandboxConfig) -> SandboxPool:
    """The pool, or a skip where the mode refuses this machine on purpose (its message names the key);
    any other failure to start is a failure."""
    try:
        return SandboxPool(config)
    except SandboxUnavailable as exc:
        if f"sandbox.isolation is '{config.isolation}'" not in str(exc):
            raise
        pytest.skip(f"{config.isolation} isolation cannot start on this machine: {exc}")


@pytest.fixture(scope="session", params=MODES)
def tight_pool(request):
    os.environ["RFTKIT_TEST_SECRET"] = SECRET  # set before the workers start: they must not inherit it
    pool = start_pool(tight(request.param))
    yield pool
    pool.close()


def script(pool: SandboxPool, code: str, timeout_s: float = TIMEOUT_S):
    return pool.run(Job("rftkit.sandbox.harness:run_script", {"code": code}, timeout_s))


FORK_PROBE = ("import os, time\nn = 0\ntry:\n    for _ in range(50):\n        if os.fork() == 0:\n"
              "            time.sleep(5)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)")


def forks_allowed(pool: SandboxPool) -> int:
    """How many sleeping children a run could fork before RLIMIT_NPROC refused (at most 50)."""
    return int(script(pool, FORK_PROBE).stdout.split()[-1])


@pytest.fixture(scope="session")
def process_cap_enforced(tight_pool) -> bool:
    return forks_allowed(tight_pool) < 8


class Recorder:
    """Grades through the pool while keeping the raw results (stdout, timings) for the assertions."""

    def __init__(self, pool: SandboxPool, **params):
        self.pool, self.results = pool, []
        options = {"timeout_s": TIMEOUT_S, "ast_check": False, **params}
        self.grader = PythonTestsGrader("tests", PythonTestsParams(**options), runner=self._run)

    def _run(self, jobs):
        results = self.pool.run_many(jobs)
        self.results.extend(results)
        return results

    def grade(self, code: str, example: Example = ADD):
        return self.grader.grade(example, code)

    @property
    def stdout(self) -> str:
        return "".join(r.stdout for r in self.results)


@pytest.fixture
def recorder(tight_pool):
    return Recorder(tight_pool)
