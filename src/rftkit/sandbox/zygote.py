"""A warm worker ("zygote"): imports once, then forks one fresh, isolated execution per request.

Runs as `python -m rftkit.sandbox.zygote`, started by `SandboxPool` with a scrubbed environment, and
talks to the pool over its stdin/stdout (see `protocol`). It never runs untrusted code itself: each
request is executed by forked processes that isolate themselves first (see `child`). Their stdout,
stderr and verdict channel come back as raw bytes; the zygote parses none of them, so nothing the
code prints can confuse it.

Isolation is decided once at start by the configured mode (see `worker`), never weakened quietly.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import selectors
import signal
import socket
import tempfile
import time
from types import SimpleNamespace

from rftkit.sandbox import _linux, child, mounts, proxy, seccomp, worker  # noqa: F401 - proxy: preloaded
from rftkit.sandbox.protocol import (ENDED, JOB, new_key, parse_channel, recv_blob_fd, recv_message_fd, send_frame,
                                     send_message, zero)
from rftkit.sandbox.worker import WorkerState

# No pydantic here: the zygote stays small, since every fork copies its page tables.
_SCRATCH_CHECK_S = 0.02


def _fork(state: WorkerState, target, *args, new_pid_namespace: bool = False) -> int:
    if new_pid_namespace:  # the next fork becomes init of a fresh pid namespace...
        _linux.unshare(_linux.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        target(state, *args)  # never returns
    if new_pid_namespace:  # ...and the zygote returns to its own for the fork after that
        _linux.setns(state.pid_ns_fd, _linux.CLONE_NEWPID)
    return pid


def _as_uid(uid: int, action) -> None:
    helper = os.fork()
    if helper == 0:
        try:
            os.setresuid(uid, uid, uid)
            action()
        finally:
            os._exit(0)
    os.waitpid(helper, 0)


def _kill(state: WorkerState, pid: int) -> None:
    """Killing init of the pid namespace kills every process in it; without one, the process group, and
    as root every process of the code's uid (kill(-1) as that uid reaches exactly its processes). The
    driver (another uid, no children) is killed by its pid."""
    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if state.restricted and state.uid is not None and pid == state.code_pid:
        _as_uid(state.uid, lambda: os.kill(-1, signal.SIGKILL))


def _sweep_children(keep: int | None) -> None:
    """Restricted: orphans of the code's process were re-parented to us (a subreaper). `keep`: the driver."""
    for _ in range(1000):
        try:
            with open(f"/proc/self/task/{os.getpid()}/children") as f:
                kids = [int(p) for p in f.read().split()]
        except OSError:
            return
        kids = [kid for kid in kids if kid != keep]
        if not kids:
            return
        for kid in kids:
            for kill in (os.killpg, os.kill):
                try:
                    kill(kid, signal.SIGKILL)
                except OSError:
                    pass
        for kid in kids:
            try:
                os.waitpid(kid, 0)
            except ChildProcessError:
                pass


def _tree_bytes(path: str, limit_entries: int = 10_000) -> float:
    total, seen = 0, 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            seen += 1
            if seen > limit_entries:
                return float("inf")
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


class _Driver:
    """The worker's long-lived driver process (see `child.driver_loop`), started on first need and again
    after it dies or is killed for hanging."""

    def __init__(self, state: WorkerState):
        ours, theirs = socket.socketpair()
        self.pid = os.fork()
        if self.pid == 0:
            ours.close()
            child.driver_loop(state, theirs.fileno())
            os._exit(0)
        theirs.close()
        self.sock, self.pidfd = ours, os.pidfd_open(self.pid)

    def alive(self) -> bool:
        return os.waitpid(self.pid, os.WNOHANG) == (0, 0)

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass
        self.sock.close()
        os.close(self.pidfd)


def _driver(state: WorkerState) -> _Driver:
    if state.driver is None or not state.driver.alive():
        if state.driver is not None:
            state.driver.stop()
        state.driver = _Driver(state)
    return state.driver


def _report_end(state: WorkerState, status: int, timed_out: bool) -> None:
    ended = {"exit_code": os.WEXITSTATUS(status)} if os.WIFEXITED(status) else {"signal": os.WTERMSIG(status)}
    try:
        send_frame(state.driver.sock, ENDED, state.seq, {**ended, "timed_out": timed_out})
    except OSError:  # the driver is gone; the channel's end tells the rest
        pass


def _collect(state: WorkerState, pid: int, split: bool, pipes: dict[int, str], deadline: float,
             workdir: str | None) -> dict:
    """Gather the output until the execution ends: for a one-process harness when its process exits,
    for a split one when the driver closes the channel (the code's process is then killed); or at the
    deadline, or when the scratch directory is full. Returns the code's process's status."""
    caps = {"stdout": state.config.max_output_bytes, "stderr": state.config.max_output_bytes}
    data = {"stdout": bytearray(), "stderr": bytearray()}
    truncated = {"stdout": False, "stderr": False, "channel": False}
    channel, filled = memoryview(state.channel), 0
    selector = selectors.DefaultSelector()
    for fd, name in pipes.items():
        selector.register(fd, selectors.EVENT_READ, name)
    pidfd = os.pidfd_open(pid)
    selector.register(pidfd, selectors.EVENT_READ, "exit")
    status = None
    timed_out = over = scratch_full = False
    next_check = time.monotonic() + _SCRATCH_CHECK_S

    def end(drain_until: float) -> float:
        nonlocal over
        over = True
        _kill(state, pid)
        return min(deadline, drain_until)

    while selector.get_map():
        now = time.monotonic()
        if workdir is not None and not over and now >= next_check:  # restricted: no tmpfs bounds the scratch
            next_check = now + _SCRATCH_CHECK_S
            if _tree_bytes(workdir) > state.config.tmp_size_mb << 20:
                scratch_full = True
                deadline = end(now + 0.5)
        if deadline - now <= 0:
            if over:  # a straggler holds a pipe open after the execution ended: stop waiting for it
                if split and "channel" in pipes.values():  # the driver hangs (a test that never ends)
                    state.driver.stop()
                    state.driver = None
                break
            timed_out = True
            end(now)
            deadline = now + 0.5  # drain what was written before the kill
            if split and status is None:
                status = os.waitpid(pid, 0)[1]
                selector.unregister(pidfd)
                _report_end(state, status, timed_out=True)  # the driver stops without another record
            continue
        wait = min(deadline - now, _SCRATCH_CHECK_S) if workdir else deadline - now
        for key, _ in selector.select(wait):
            name = key.data
            if name == "exit":
                selector.unregister(pidfd)
                status = os.waitpid(pid, 0)[1]
                _kill(state, pid)  # pidns: already gone with init; pgroup: its leftovers
                if split and not over:
                    _report_end(state, status, timed_out=False)  # the driver may need it for its records
                elif not over:
                    deadline = end(time.monotonic() + 0.5)
                continue
            if name == "channel":
                n = os.readv(key.fd, [channel[filled:]]) if filled < len(channel) else -1
                filled += max(n, 0)
                full, done = n < 0, n <= 0
                if done and split and not over:  # the driver is done: the code's process goes
                    deadline = end(time.monotonic() + 0.5)
            else:
                chunk = os.read(key.fd, 1 << 16)
                room = caps[name] - len(data[name])
                data[name] += chunk[:room]
                full = len(chunk) > room
                done = not chunk or full
            if done:  # EOF, or over the cap: closing the pipe now makes further writes fail, never block
                truncated[name] = truncated[name] or full
                selector.unregister(key.fd)
                os.close(key.fd)
                pipes[key.fd] = ""
    selector.close()
    if status is None:
        _kill(state, pid)
        status = os.waitpid(pid, 0)[1]
    os.close(pidfd)
    if state.restricted:
        _sweep_children(keep=state.driver.pid if state.driver else None)
    return {"status": status, "timed_out": timed_out, "scratch_full": scratch_full, "filled": filled,
            "data": {k: bytes(v) for k, v in data.items()}, "truncated": truncated}


def _new_scratch(state: WorkerState) -> str | None:
    if not state.restricted:
        return None
    workdir = tempfile.mkdtemp(prefix="run-", dir=state.scratch)
    if state.uid is not None:
        os.chown(workdir, state.uid, -1)
    return workdir


def execute(state: WorkerState, request: dict, read_secret) -> tuple[dict, memoryview]:
    """Returns the result and the verdict channel's bytes (a view of `state.channel`, zeroed by the caller).
    For a split harness the secret part is read only after the code's process was forked, and goes to
    the driver with the channel and a socket to that process."""
    started = time.monotonic()
    split = bool(request.get("has_secret"))
    out, err, chan = os.pipe(), os.pipe(), os.pipe()
    names = {out[0]: "stdout", err[0]: "stderr", chan[0]: "channel"}
    workdir = _new_scratch(state)
    secret = None
    try:
        code_end, driver_end = socket.socketpair() if split else (None, None)
        third = code_end.fileno() if split else chan[1]  # the channel, or the socket to the driver
        pid = state.code_pid = _fork(state, child.execution_main, request, (out[1], err[1], third), workdir,
                                     new_pid_namespace=not state.restricted)
        if split:
            code_end.close()
            secret = read_secret()  # read only now: the code's process was forked without it
            state.seq += 1
            meta = {"harness": request["harness"], "payload": request["payload"]}
            try:
                send_frame(_driver(state).sock, JOB, state.seq, meta, secret, (chan[1], driver_end.fileno(), err[1]))
            except OSError:  # it died since: once more with a fresh one
                state.driver.stop()
                state.driver = None
                send_frame(_driver(state).sock, JOB, state.seq, meta, secret, (chan[1], driver_end.fileno(), err[1]))
            driver_end.close()
        for fd in (out[1], err[1], chan[1]):
            os.close(fd)
        result = _collect(state, pid, split, names, started + request["timeout_s"], workdir)
    finally:
        for fd, name in names.items():
            if name:
                os.close(fd)
        if secret is not None:
            zero(secret)
        if workdir is not None:
            mounts.remove_tree(workdir)
    status = result.pop("status")
    result["exit_code"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    result["signal"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    result["wall_s"] = time.monotonic() - started
    return result, memoryview(state.channel)[:result.pop("filled")]


def _self_test(state: WorkerState) -> str | None:
    """One trivial split execution end to end; the worker refuses to start if it fails."""
    key = new_key()
    request = {"harness": "rftkit.sandbox.proxy:run_tests", "timeout_s": 10.0, "has_secret": True,
               "payload": {"code": "def f():\n    return 1\n", "entry_point": "f"}}
    secret = json.dumps({"tests": [{"id": 0, "kind": "call", "args": ["list", []]}], "noop": False,
                         "key": key.hex()}).encode()
    result, channel = execute(state, request, lambda: bytearray(secret))
    records, _ = parse_channel(channel, key)
    zero_view(channel)
    if any(r.get("value") == ["int", "1"] for r in records) and any(r.get("done") for r in records):
        return None
    return ("sandbox self-test failed (the isolation was set up, but a trivial test did not run): "
            + result["data"]["stderr"].decode(errors="replace")[-1500:])


def zero_view(view: memoryview) -> None:
    view[:] = bytes(len(view))


def main() -> None:
    responses = os.fdopen(os.dup(1), "wb", buffering=0)  # unbuffered: the channel is written without a copy
    os.dup2(2, 1)  # a stray print in a preloaded module must not corrupt the response stream
    init = recv_message_fd(0)
    state = worker.WorkerState(SimpleNamespace(**init["config"]), tuple(init["hide"]), init["scratch"])
    try:  # before the worker's view of the host shrinks (torch wants a writable temp dir)
        for module in init["preload"]:
            importlib.import_module(module)
    except Exception as exc:  # a missing optional dependency: the pool reports it to the grader
        send_message(responses, {"error": f"could not import {module}: {exc}"})
        return
    with open("/proc/self/status") as f:  # measured once: children start as copies of this process
        vm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    state.config.baseline_vm_bytes = vm_kb * 1024 + (64 << 20)  # + room for what the child maps before the limit
    error = (f"seccomp filters are not supported on {os.uname().machine}" if not seccomp.supported()
             else worker.probe_restricted(state) if state.restricted else worker.probe_full(state))
    if error:
        send_message(responses, {"error": error})
        return
    _linux.set_undumpable()
    state.allocate_channel()
    seccomp.compiled(state.restricted, state.signals_scoped)  # built here once, not in every child
    gc.collect()
    gc.freeze()  # forked children then never write to the zygote's objects' GC headers: fewer copy-on-write faults
    if not state.restricted:  # every execution works in the same path: its environment is set here, not in each child
        child.set_child_environment(state, mounts.EXECUTION_WORKDIR)
    self_test_error = _self_test(state)
    if self_test_error:
        send_message(responses, {"error": self_test_error})
        return
    send_message(responses, {"ready": True, "isolation": state.isolation()})
    while (request := recv_message_fd(0)) is not None:
        result, channel = execute(state, request, lambda: recv_blob_fd(0))
        send_message(responses, result, blob=channel)
        zero_view(channel)


if __name__ == "__main__":
    main()
