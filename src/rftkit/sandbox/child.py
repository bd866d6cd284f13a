"""The processes of one execution, forked from the zygote.

The process that runs the code leads the execution (under full isolation: init of a fresh pid
namespace, with its own mount namespace, /tmp and /proc) and isolates itself before it runs a
one-process harness, or the candidate's half of a split one (`proxy.Split`). The judging half is the
worker's driver (`driver_loop`), a long-lived sibling outside every execution. Nothing here returns
into the zygote.
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

CHANNEL_FD = 3  # the channel (one-process harness), the socket to the driver (split), the driver's control socket
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
    parent = os.getppid()
    if uid is not None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    elif os.geteuid() == 0:  # uid 0 of our own user namespace: keep the uid, lose the powers
        _linux.drop_capabilities()
    # die with the zygote (a uid change clears this, so it is set after): nothing outlives its worker
    _linux.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # the zygote died before that
        os._exit(1)


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


def isolate_driver(state: "WorkerState") -> None:
    """Once, for the worker's long-lived driver: no CPU limit (the zygote's wall clock ends a stuck job)."""
    config = state.config
    address_space = config.baseline_vm_bytes + config.address_space_mb * (1 << 20)
    for limit, value in ((resource.RLIMIT_AS, address_space), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NOFILE, 64)):
        resource.setrlimit(limit, (value, value))
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
    """The process that runs the code: a one-process harness, or the candidate's half of a split one.
    fds: stdout, stderr, then the channel (one-process) or the socket to the driver (split)."""
    code = 0
    try:
        os.setsid()  # its own process group and session: killpg reaches what it starts
        _arrange_fds(fds)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        if not state.restricted:
            workdir = mounts.setup_execution_mounts(state.uid, state.config.tmp_size_mb, state.keep_under_tmp)
        harness = _resolve(request["harness"])
        split = hasattr(harness, "driver")
        isolate_candidate(state, request["timeout_s"], workdir, driven=split)
        _capped_streams()
        if split:
            from rftkit.sandbox.proxy import Connection

            harness.candidate(request["payload"], Connection(CHANNEL_FD))
        else:
            harness(request["payload"], Channel(CHANNEL_FD, request["key"]))
    except BaseException:  # noqa: BLE001 - the child must reach os._exit whatever happens
        code = _report_crash()
    finally:
        _finish(code)


class ExecutionOver(BaseException):
    """The zygote ended the execution (its time limit): the driver stops without another record."""


def driver_loop(state: "WorkerState", control_fd: int) -> None:
    """The judging half of every split execution of this worker: one process, isolated once (not
    dumpable, another uid as root, a Landlock domain of its own), outside every execution's pid
    namespace, so the code cannot even name it. It runs no untrusted code, only the task's tests
    against plain data. Each job frame brings the tests and the run's key (read only now, after the
    code's process was forked) and, as descriptors, the channel, the socket to the code's process and
    the execution's stderr; a later frame says how the code's process ended, when the driver asks."""
    from rftkit.sandbox.protocol import ENDED, JOB, recv_frame
    from rftkit.sandbox.proxy import Connection

    os.setsid()
    _arrange_fds((os.open("/dev/null", os.O_WRONLY),) * 2 + (control_fd,))  # control socket: fd 3
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    isolate_driver(state)
    control = socket.socket(fileno=CHANNEL_FD)
    while (frame := recv_frame(control)) is not None:
        kind, seq, meta, blob, fds = frame
        if kind != JOB:  # a report on an earlier execution's code that was not needed
            for fd in fds:
                os.close(fd)
            continue
        channel_fd, socket_fd, stderr_fd = fds
        os.dup2(stderr_fd, 2)

        def ended(seq: int = seq) -> tuple[str, bool]:
            """How the code's process ended (waiting for the zygote to say), and whether it was an exit."""
            while (report := recv_frame(control)) is not None and not (report[0] == ENDED and report[1] == seq):
                pass
            status = report[2] if report is not None else {}
            if status.get("timed_out") or report is None:
                raise ExecutionOver
            if "exit_code" in status:
                return f"exited (code {status['exit_code']})", True
            return f"was killed by signal {status.get('signal', '?')}", False

        try:
            secret = json.loads(blob)
            key = bytes.fromhex(secret.pop("key"))
            _resolve(meta["harness"]).driver(meta["payload"], secret, Connection(socket_fd), Channel(channel_fd, key),
                                             ended)
        except ExecutionOver:
            pass
        except BaseException:  # noqa: BLE001 - a broken job must not end the driver
            _report_crash()
        finally:
            for fd in (socket_fd, channel_fd, stderr_fd):  # closing the channel tells the zygote we are done
                os.close(fd)
            os.dup2(1, 2)
