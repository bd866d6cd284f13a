"""Shared by the sandbox tests: a tightly capped pool for hostile programs (few processes, little memory,
a 1 s limit) and a grader that keeps the raw results."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rftkit.data import Example
from rftkit.graders.code import PythonTestsGrader, PythonTestsParams
from rftkit.sandbox import SandboxConfig, SandboxPool

TESTS_DIR = str(Path(__file__).resolve().parents[1])
SECRET = "rftkit-test-secret-7f3a"
TIGHT = SandboxConfig(workers=2, max_processes=8, address_space_mb=256, tmp_size_mb=8, max_file_size_mb=4,
                      max_output_bytes=65536, hide_paths=(TESTS_DIR,))
TIMEOUT_S = 1.0

ADD = Example(id="add", prompt="write add(a, b)", fields={
    "entry_point": "add", "tests": ["assert add(1, 2) == 3", "assert add(-4, 4) == 0"],
    "hidden_tests": ["assert add(123457, 654321) == 777778", "assert add(-70001, -80002) == -150003"],
    "reference": "def add(a, b):\n    return a + b\n",
    "random_inputs": "def generate(rng):\n    return [rng.randint(-10**6, 10**6), rng.randint(-10**6, 10**6)]\n",
    "num_random": 4})


@pytest.fixture(scope="session")
def tight_pool():
    os.environ["RFTKIT_TEST_SECRET"] = SECRET  # set before the workers start: they must not inherit it
    pool = SandboxPool(TIGHT)
    yield pool
    pool.close()


FORK_PROBE = ("import os, time\nn = 0\ntry:\n    for _ in range(50):\n        if os.fork() == 0:\n"
              "            time.sleep(5)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)")


def forks_allowed(pool: SandboxPool) -> int:
    """How many sleeping children a run could fork before RLIMIT_NPROC refused (at most 50)."""
    from rftkit.sandbox import Job

    result = pool.run(Job("rftkit.sandbox.harness:run_script", {"code": FORK_PROBE}, TIMEOUT_S))
    return int(result.stdout.split()[-1])


@pytest.fixture(scope="session")
def process_cap_enforced(tight_pool) -> bool:
    return forks_allowed(tight_pool) < TIGHT.max_processes


class Recorder:
    """Grades through the pool while keeping the raw results (stdout, timings) for the assertions."""

    def __init__(self, pool: SandboxPool, **params):
        self.pool, self.results = pool, []
        options = {"timeout_s": TIMEOUT_S, "sandbox": TIGHT, "ast_check": False, **params}
        self.grader = PythonTestsGrader("tests", PythonTestsParams(**options), runner=self._run)

    def _run(self, jobs):
        results = self.pool.run_many(jobs)
        self.results.extend(results)
        return results

    def grade(self, code: str):
        return self.grader.grade(ADD, code)

    @property
    def stdout(self) -> str:
        return "".join(r.stdout for r in self.results)


@pytest.fixture
def recorder(tight_pool):
    return Recorder(tight_pool)
