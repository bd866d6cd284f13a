"""The sandbox's own guarantees, one behaviour per test."""

from __future__ import annotations

import ast
import time

import pytest

from rftkit.sandbox import Job, SandboxConfig, SandboxPool, SandboxUnavailable
from rftkit.sandbox.pool import parse_channel

from sandbox_support import SECRET, TIMEOUT_S, forks_allowed


def script(pool, code: str, timeout_s: float = TIMEOUT_S):
    return pool.run(Job("rftkit.sandbox.harness:run_script", {"code": code}, timeout_s))


def test_isolation_is_reported(tight_pool):
    iso = tight_pool.isolation
    assert iso.network in ("netns+seccomp", "netns", "seccomp")
    assert iso.pids in ("pidns", "pgroup") and iso.filesystem in ("readonly-root+tmpfs", "private-tmpdir")
    assert script(tight_pool, "pass").isolation == iso


def test_environment_is_scrubbed_and_stdin_closed(tight_pool):
    code = ("import os, sys\nprint(sorted(os.environ))\nprint(repr(sys.stdin.read()))\n"
            "print(os.environ['HOME'], os.environ['TMPDIR'], os.getcwd())")
    result = script(tight_pool, code)
    assert SECRET not in result.stdout and "RFTKIT_TEST_SECRET" not in result.stdout
    names, stdin, places = result.stdout.splitlines()
    assert stdin == "''"  # stdin reads as empty, never the parent's input
    home, tmpdir, cwd = places.split()
    assert home == tmpdir == cwd  # the private working directory is also home and the temp dir
    assert set(ast.literal_eval(names)) <= {"PATH", "LANG", "PYTHONDONTWRITEBYTECODE", "OMP_NUM_THREADS",
                                            "TRITON_INTERPRET", "HOME", "TMPDIR", "TRITON_CACHE_DIR"}


def test_output_is_capped(tight_pool):
    result = script(tight_pool, "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 10000)")
    assert len(result.stdout) == 65536 and result.truncated["stdout"]


def test_working_directory_is_private_and_discarded(tight_pool):
    first = script(tight_pool, "import os\nopen('left_behind', 'w').write('x')\nprint(os.getcwd())")
    second = script(tight_pool, "import os\nprint(os.listdir('.'))")
    assert first.done and second.stdout.strip() == "[]"


def test_time_limit_kills(tight_pool):
    start = time.monotonic()
    result = script(tight_pool, "import time\ntime.sleep(30)")
    assert result.timed_out and not result.done and time.monotonic() - start < TIMEOUT_S + 1


def test_forged_records_are_not_authenticated(tight_pool):
    result = script(tight_pool, "import os\nprint('{\"nonce\": \"x\", \"done\": true}')\n"
                    "os.write(3, b'{\"nonce\": \"guess\", \"test\": 0, \"passed\": true}\\n')")
    assert result.unauthenticated_lines == 1 and not any("test" in r for r in result.records)
    records, bad = parse_channel(b'{"nonce": "n", "done": true}\nnot json\n{"nonce": "m"}\n', "n")
    assert records == [{"done": True}] and bad == 2


def test_memory_cap(tight_pool):
    result = script(tight_pool, "x = bytearray(1024 * 1024 * 1024)")
    assert not result.done and "MemoryError" in (result.first("defined") or {}).get("error", "")


def test_process_cap(tight_pool):
    if tight_pool.isolation.user != "per-worker-uid":
        pytest.skip(f"RLIMIT_NPROC is only exact on a per-worker uid ({tight_pool.isolation.summary()})")
    assert forks_allowed(tight_pool) < 8  # max_processes = 8 counts the execution itself


def test_seccomp_fallback_is_reported_and_blocks_sockets():
    pool = SandboxPool(SandboxConfig(workers=1, network="seccomp", namespaces=False))
    try:
        assert pool.isolation.network == "seccomp" and pool.isolation.pids == "pgroup"
        result = script(pool, "import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
                        "except OSError as e:\n    print('blocked', e.errno)\n"
                        "a, b = socket.socketpair()\nprint('unix ok')")
        assert result.stdout.split() == ["blocked", "13", "unix", "ok"]
    finally:
        pool.close()


def test_unknown_harness_module_is_refused(tight_pool):
    result = tight_pool.run(Job("os:system", {}, TIMEOUT_S))
    assert result.exit_code == 70 and "not an rftkit module" in result.stderr


def test_missing_preload_is_a_clear_error():
    with pytest.raises(SandboxUnavailable, match="could not import no_such_module_xyz"):
        SandboxPool(SandboxConfig(workers=1), preload=("no_such_module_xyz",))
