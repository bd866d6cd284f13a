"""The seccomp filters on their own, each installed in a forked child that reports what the kernel let
through; this includes the restricted mode's fallback for kernels whose Landlock cannot scope signals
(ABI < 6), which the machine running the suite may not need."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import socket

import pytest

from rftkit.sandbox import landlock, seccomp

pytestmark = pytest.mark.skipif(not seccomp.supported(), reason="seccomp filters cover x86_64 and aarch64 only")


def _probe() -> dict[str, object]:
    outcome: dict[str, object] = {}
    libc = ctypes.CDLL(None, use_errno=True)

    def attempt(name, action):
        try:
            action()
            outcome[name] = "ok"
        except OSError as exc:
            outcome[name] = exc.errno

    parent = os.getppid()
    attempt("kill parent", lambda: os.kill(parent, 0))
    attempt("kill own group", lambda: os.kill(0, 0))
    attempt("inet socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
    attempt("unix socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close())
    attempt("socketpair", lambda: [s.close() for s in socket.socketpair()])
    attempt("prlimit parent", lambda: resource.prlimit(parent, resource.RLIMIT_NOFILE))
    attempt("setrlimit self", lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
    attempt("renice parent", lambda: os.setpriority(os.PRIO_PROCESS, parent, 19))
    attempt("renice self", lambda: os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + 1)))
    attempt("affinity parent", lambda: os.sched_setaffinity(parent, {0}))

    def seize():  # PTRACE_SEIZE: would not stop the parent even if it were let through
        if libc.ptrace(0x4206, parent, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "ptrace")

    attempt("ptrace parent", seize)
    return outcome


def _in_child(restricted: bool, signals_scoped: bool) -> dict[str, object]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            seccomp.install(restricted, signals_scoped)
            os.write(write_end, json.dumps(_probe()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


EPERM, EACCES = 1, 13


def test_full_mode_filter():
    got = _in_child(restricted=False, signals_scoped=True)
    assert got["inet socket"] == EACCES and got["unix socket"] == "ok" and got["socketpair"] == "ok"
    assert got["ptrace parent"] == EPERM and got["kill parent"] == "ok"  # the pid namespace handles signals there


def test_restricted_mode_filter_with_landlock_scoping_signals():
    got = _in_child(restricted=True, signals_scoped=True)
    assert got["inet socket"] == got["unix socket"] == EACCES and got["socketpair"] == "ok"
    assert got["prlimit parent"] == got["renice parent"] == got["affinity parent"] == got["ptrace parent"] == EPERM
    assert got["setrlimit self"] == got["renice self"] == "ok"
    assert got["kill parent"] == "ok"  # left to Landlock's signal scope


def test_restricted_mode_fallback_without_landlock_signal_scoping():
    got = _in_child(restricted=True, signals_scoped=False)
    assert got["kill parent"] == EPERM and got["kill own group"] == "ok"


def test_landlock_is_detected_here_or_restricted_refuses():
    abi = landlock.abi_version()
    assert abi >= 0
    if abi:
        assert landlock.handled_fs(abi) & landlock.READ_FILE
