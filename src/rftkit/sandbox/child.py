"""The processes of one execution, forked from the zygote.

The first one leads the execution (under full isolation: init of a fresh pid namespace, with its
own mount namespace, /tmp and /proc). For a one-process harness it isolates itself and runs the
harness. For a split harness (`proxy.Split`) it becomes the driver: it forks the candidate's process
before it has read the tests or the run's key, isolates itself (not dumpable, another uid as root),
and only then reads the job's secret part from the zygote. Nothing here returns into the zygote.
"""

from __future__ import annotations

import fcntl
import importlib
import io
import json
import os
import resource
import signal
import socket
import sys
import traceback
from typing import TYPE_CHECKING, Any

from rftkit.sandbox import _linux, mounts, seccomp
from rftkit.sandbox.protocol import Channel

if TYPE_CHECKING:
    from rftkit.sandbox.worker import WorkerState

CHANNEL_FD = 3  # the verdict channel (one-process harnesses, the driver); the candidate's socket in its process
SECRET_FD = 4
RULESET_FD = 1000  # the zygote's Landlock ruleset, kept open across the descriptor shuffle until applied


def set_child_environment(state: "WorkerState", workdir: str) -> None:
    """The environment untrusted code sees: the scrubbed variables, and its working directory as home."""
    os.environ.clear()
    os.environ.update(state.env, HOME=workdir, TMPDIR=workdir, TRITON_CACHE_DIR=f"{workdir}/.triton")


def _set_limits(state: "WorkerState", timeout_s: float, nproc: int | None) -> None:
    """nproc: None for no process cap, else the processes of the execution's user that are not its own."""
    config = state.config
    address_space = config.baseline_vm_bytes + config.address_space_mb * (1 << 20)
    cpu = int(config.cpu_time_s or timeout_s + 0.999) or 1
    file_size = config.max_file_size_mb << 20
    limits = [(resource.RLIMIT_AS, address_space), (resource.RLIMIT_FSIZE, file_size), (resource.RLIMIT_CORE, 0),
              (resource.RLIMIT_NOFILE, 256)]
    for limit, value in limits:
        resource.setrlimit(limit, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if nproc is not None:
        count = config.max_processes + nproc
        resource.setrlimit(resource.RLIMIT_NPROC, (count, count))


def _arrange_fds(fds: tuple[int, ...]) -> None:
    """stdin from /dev/null, then `fds` as 1, 2, 3...; everything else closed (the zygote's pipes to the
    pool, the other process's ends) so none of it is reachable."""
    devnull = os.open("/dev/null", os.O_RDONLY)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (devnull, *fds)]  # out of the way of 0..n first
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    os.closerange(len(high), RULESET_FD)
    os.closerange(RULESET_FD + 1, 1 << 16)


def _enter_landlock(state: "WorkerState") -> None:
    if state.restricted:
        state.ruleset.restrict()
        os.close(RULESET_FD)


def _drop_user(uid: int | None, gid: int) -> None:
    if uid is not None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    elif os.geteuid() == 0:  # uid 0 of our own user namespace: keep the uid, lose the powers
        _linux.drop_capabilities()


def isolate_candidate(state: "WorkerState", timeout_s: float, workdir: str, driven: bool) -> None:
    """Everything between the process and untrusted code: limits, uid, Landlock, seccomp, environment."""
    os.chdir(workdir)
    # in a user namespace of its own the uid's count also holds the zygote, its waiting parent (and the driver)
    _set_limits(state, timeout_s, nproc=(2 + driven) if state.userns else 0)
    _drop_user(state.uid, state.gid)
    _enter_landlock(state)
    seccomp.install(state.restricted, state.signals_scoped)
    if state.restricted:  # full isolation: every run works in one path, the zygote set this once
        set_child_environment(state, workdir)
    sys.path[:] = [p for p in sys.path if p]  # no '' entry: the working directory is the code's, not ours


def isolate_driver(state: "WorkerState", timeout_s: float) -> None:
    _set_limits(state, timeout_s, nproc=None)
    _drop_user(state.driver_uid, state.gid)
    _enter_landlock(state)  # a domain of its own: the candidate's is not beneath it, so it cannot reach us
    seccomp.install(state.restricted, state.signals_scoped)
    _linux.set_undumpable()  # a uid change resets it: no ptrace, /proc/<pid>/mem, /fd or /environ for the candidate


class _DiscardingWriter(io.RawIOBase):
    """fd 1 or 2 for Python's own streams: once the zygote closes the pipe at the output cap, further
    prints are dropped instead of raising BrokenPipeError into the function or blocking it."""

    def __init__(self, fd: int):
        self._fd = fd

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return os.write(self._fd, data)
        except BrokenPipeError:
            return len(data)


def _capped_streams() -> None:
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = io.TextIOWrapper(io.BufferedWriter(_DiscardingWriter(fd)), encoding="utf-8", errors="replace",
                                  line_buffering=True)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _resolve(name: str) -> Any:
    module_name, func_name = name.split(":")
    if not module_name.startswith("rftkit."):
        raise ValueError(f"harness {module_name!r} is not an rftkit module")
    return getattr(importlib.import_module(module_name), func_name)


def _finish(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code)  # never return into the zygote's loop


def _report_crash() -> int:
    try:
        os.write(2, traceback.format_exc().encode(errors="replace")[-4000:])
    except OSError:
        pass
    return 70


def execution_main(state: "WorkerState", request: dict, fds: tuple[int, ...], workdir: str | None) -> None:
    """fds: stdout, stderr, channel and, for a split harness, the pipe the secret part arrives on."""
    code = 0
    try:
        os.setsid()  # its own process group and session: killpg reaches what it starts
        _arrange_fds(fds)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # pid-namespace init: dropped when sent from inside
        if not state.restricted:
            workdir = mounts.setup_execution_mounts(state.uid, state.config.tmp_size_mb, state.keep_under_tmp)
        harness = _resolve(request["harness"])
        if hasattr(harness, "driver"):
            _run_split(state, request, harness, workdir)
        else:
            isolate_candidate(state, request["timeout_s"], workdir, driven=False)
            _capped_streams()
            harness(request["payload"], Channel(CHANNEL_FD, request["key"]))
    except BaseException:  # noqa: BLE001 - the child must reach os._exit whatever happens
        code = _report_crash()
    finally:
        _finish(code)


def _run_split(state: "WorkerState", request: dict, harness: Any, workdir: str) -> None:
    from rftkit.sandbox.proxy import Connection

    driver_end, candidate_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        _candidate_main(state, request, harness, candidate_end.fileno(), workdir)
    candidate_end.close()
    isolate_driver(state, request["timeout_s"])
    with os.fdopen(SECRET_FD, "rb") as pipe:
        secret = json.loads(pipe.read())
    key = bytes.fromhex(secret.pop("key"))
    status: list[int] = []

    def ended() -> tuple[str, bool]:
        """How the candidate's process ended (waiting for it), and whether that was an exit."""
        if not status:
            status.append(os.waitpid(pid, 0)[1])
        if os.WIFEXITED(status[0]):
            return f"exited (code {os.WEXITSTATUS(status[0])})", True
        return f"was killed by signal {os.WTERMSIG(status[0])}", False

    harness.driver(request["payload"], secret, Connection(driver_end.fileno()), Channel(CHANNEL_FD, key), ended)


def _candidate_main(state: "WorkerState", request: dict, harness: Any, sock_fd: int, workdir: str) -> None:
    from rftkit.sandbox.proxy import Connection

    code = 0
    try:
        os.setsid()  # out of the driver's process group: kill(0, ...) reaches only its own
        _arrange_fds((1, 2, sock_fd))  # the socket becomes fd 3; the channel and the secret pipe are closed
        isolate_candidate(state, request["timeout_s"], workdir, driven=True)
        _capped_streams()
        harness.candidate(request["payload"], Connection(CHANNEL_FD))
    except BaseException:  # noqa: BLE001
        code = _report_crash()
    finally:
        _finish(code)
