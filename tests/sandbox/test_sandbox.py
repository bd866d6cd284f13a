"""The sandbox's own guarantees, one behaviour per test, under each isolation mode."""

from __future__ import annotations

import ast
import time

import pytest
from pydantic import ValidationError

from rftkit.sandbox import Job, SandboxConfig, SandboxPool, SandboxUnavailable
from rftkit.sandbox.protocol import Channel, new_key, parse_channel

from sandbox_support import SECRET, TIMEOUT_S, forks_allowed, script


def test_isolation_is_reported(tight_pool):
    iso = tight_pool.isolation
    if iso.mode == "full":
        assert (iso.network, iso.pids, iso.filesystem) == ("netns+seccomp", "pidns", "fresh-root+tmpfs")
        assert iso.user in ("per-worker-uid", "userns")
    else:
        assert (iso.network, iso.pids, iso.filesystem) == ("seccomp+landlock", "pgroup+subreaper", "landlock")
        assert iso.user in ("per-worker-uid", "same-uid")
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


def test_output_is_capped_and_further_prints_neither_block_nor_fail(tight_pool):
    result = script(tight_pool, "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 10000)\nprint('end')")
    assert len(result.stdout) == 65536 and result.truncated["stdout"]
    assert result.done and not result.timed_out and result.wall_s < TIMEOUT_S


def test_working_directory_is_private_and_discarded(tight_pool):
    first = script(tight_pool, "import os\nopen('left_behind', 'w').write('x')\nprint(os.getcwd())")
    second = script(tight_pool, "import os\nprint(os.listdir('.'))")
    assert first.done and second.stdout.strip() == "[]"


def test_time_limit_kills(tight_pool):
    start = time.monotonic()
    result = script(tight_pool, "import time\ntime.sleep(30)")
    assert result.timed_out and not result.done and time.monotonic() - start < TIMEOUT_S + 1


def test_forged_records_are_not_authenticated(tight_pool):
    result = script(tight_pool, "import os\nprint('{\"done\": true}')\n"
                    "os.write(3, b'0000 {\"test\": 0, \"passed\": true}\\n')")
    assert result.unauthenticated_lines == 1 and not any("test" in r for r in result.records)
    key, other = new_key(), new_key()
    import os

    read_end, write_end = os.pipe()
    Channel(write_end, key).send(done=True)
    Channel(write_end, other).send(test=0, passed=True)
    os.close(write_end)
    raw = os.read(read_end, 4096) + b"not a record\n"
    records, bad = parse_channel(raw, key)
    assert records == [{"done": True}] and bad == 2


def test_memory_cap(tight_pool):
    result = script(tight_pool, "x = bytearray(1024 * 1024 * 1024)")
    assert not result.done and "MemoryError" in (result.first("defined") or {}).get("error", "")


def test_process_cap(tight_pool):
    if tight_pool.isolation.user == "same-uid":
        pytest.skip(f"RLIMIT_NPROC counts all of the user's tasks with {tight_pool.isolation.summary()}")
    assert forks_allowed(tight_pool) < 8  # max_processes = 8 counts the execution itself


def test_sockets_are_refused_by_the_kernel(tight_pool):
    code = ("import socket\nfor family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, socket.AF_UNIX):\n"
            "    kind = socket.SOCK_DGRAM if family == socket.AF_NETLINK else socket.SOCK_STREAM\n"
            "    try:\n        socket.socket(family, kind)\n"
            "        print('open', family)\n    except OSError as e:\n        print('blocked', e.errno)\n"
            "a, b = socket.socketpair()\nprint('pair ok')")
    lines = script(tight_pool, code).stdout.splitlines()
    assert lines[:3] == ["blocked 13"] * 3 and lines[-1] == "pair ok"
    # a unix socket can reach nothing under full isolation (no socket files, a network namespace of its own);
    # restricted isolation shares the host's, so it refuses them too
    assert lines[3] == ("open 1" if tight_pool.isolation.mode == "full" else "blocked 13")


def test_unknown_harness_module_is_refused(tight_pool):
    result = tight_pool.run(Job("os:system", {}, TIMEOUT_S))
    assert result.exit_code == 70 and "not an rftkit module" in result.stderr


def test_missing_preload_is_a_clear_error():
    with pytest.raises(SandboxUnavailable, match="could not import no_such_module_xyz"):
        SandboxPool(SandboxConfig(workers=1), preload=("no_such_module_xyz",))


def test_config_names_the_replaced_keys():
    with pytest.raises(ValidationError, match="sandbox.namespaces was replaced by sandbox.isolation"):
        SandboxConfig(namespaces=False)
    with pytest.raises(ValidationError, match="set sandbox.isolation: restricted"):
        SandboxConfig(network="seccomp")
    with pytest.raises(ValidationError, match="'netns' needs sandbox.isolation: full"):
        SandboxConfig(network="netns", isolation="restricted")
    assert SandboxConfig().isolation == "full"
