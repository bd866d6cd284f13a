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
import tempfile
import time
from types import SimpleNamespace

from rftkit.sandbox import _linux, child, mounts, proxy, seccomp, worker  # noqa: F401 - proxy: preloaded
from rftkit.sandbox.protocol import new_key, parse_channel, recv_blob_fd, recv_message_fd, send_message, zero
from rftkit.sandbox.worker import WorkerState

# No pydantic here: the zygote stays small, since every fork copies its page tables.
_SCRATCH_CHECK_S = 0.02


def _fork_execution(state: WorkerState, request: dict, fds: tuple[int, ...], workdir: str | None) -> int:
    if not state.restricted:  # the next fork becomes init of a fresh pid namespace...
        _linux.unshare(_linux.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        child.execution_main(state, request, fds, workdir)
    if not state.restricted:  # ...and the zygote returns to its own for the fork after that
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
    as root every process of the execution's uids (kill(-1) as that uid reaches exactly its processes)."""
    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if state.restricted and state.uid is not None:
        for uid in (state.uid, state.driver_uid):
            _as_uid(uid, lambda: os.kill(-1, signal.SIGKILL))


def _sweep_children() -> None:
    """Restricted: the candidate's process and any orphan were re-parented to us (a subreaper)."""
    for _ in range(1000):
        try:
            with open(f"/proc/self/task/{os.getpid()}/children") as f:
                kids = [int(p) for p in f.read().split()]
        except OSError:
            return
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


def _collect(state: WorkerState, pid: int, pipes: dict[int, str], deadline: float, secret: bytearray | None,
             secret_fd: int | None, workdir: str | None) -> dict:
    caps = {"stdout": state.config.max_output_bytes, "stderr": state.config.max_output_bytes}
    data = {"stdout": bytearray(), "stderr": bytearray()}
    truncated = {"stdout": False, "stderr": False, "channel": False}
    channel, filled = memoryview(state.channel), 0
    pidfd = os.pidfd_open(pid)
    selector = selectors.DefaultSelector()
    for fd, name in pipes.items():
        selector.register(fd, selectors.EVENT_READ, name)
    selector.register(pidfd, selectors.EVENT_READ, None)
    sent = 0
    if secret_fd is not None:
        os.set_blocking(secret_fd, False)
        selector.register(secret_fd, selectors.EVENT_WRITE, "secret")
    timed_out = exited = scratch_full = False
    next_check = time.monotonic() + _SCRATCH_CHECK_S
    while selector.get_map():
        now = time.monotonic()
        if workdir is not None and not exited and now >= next_check:  # restricted: no tmpfs bounds the scratch
            next_check = now + _SCRATCH_CHECK_S
            if _tree_bytes(workdir) > state.config.tmp_size_mb << 20:
                scratch_full = exited = True
                _kill(state, pid)
                deadline = now + 0.5
        timeout = deadline - now
        if timeout <= 0:
            if exited:  # a straggler still holds a pipe open after the execution died: stop waiting for it
                break
            timed_out = exited = True
            _kill(state, pid)
            deadline = time.monotonic() + 0.5  # drain what was written before the kill
            continue
        for key, _ in selector.select(min(timeout, _SCRATCH_CHECK_S) if workdir else timeout):
            name = key.data
            if name is None:
                selector.unregister(pidfd)
                exited = True
                _kill(state, pid)  # pidns: already gone with init; pgroup: its leftovers
                deadline = min(deadline, time.monotonic() + 0.5)
                continue
            if name == "secret":
                try:
                    sent += os.write(key.fd, memoryview(secret)[sent:])
                except OSError:  # the driver is gone
                    sent = len(secret)
                if sent >= len(secret):
                    selector.unregister(key.fd)
                    os.close(key.fd)
                continue
            if name == "channel":
                n = os.readv(key.fd, [channel[filled:]]) if filled < len(channel) else -1
                filled += max(n, 0)
                over = n < 0
                done = n == 0 or over
            else:
                chunk = os.read(key.fd, 1 << 16)
                room = caps[name] - len(data[name])
                data[name] += chunk[:room]
                over = len(chunk) > room
                done = not chunk or over
            if done:  # EOF, or over the cap: closing the pipe now makes further writes fail, never block
                truncated[name] = truncated[name] or over
                selector.unregister(key.fd)
                os.close(key.fd)
                pipes[key.fd] = ""
    selector.close()
    os.close(pidfd)
    if secret_fd is not None and sent < len(secret):  # never written in full: the driver died first
        os.close(secret_fd)
    _kill(state, pid)
    _, status = os.waitpid(pid, 0)
    if state.restricted:
        _sweep_children()
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
    """Returns the result and the verdict channel's bytes (a view of `state.channel`, zeroed by the caller)."""
    started = time.monotonic()
    split = bool(request.get("has_secret"))
    pipes = [os.pipe() for _ in range(4 if split else 3)]
    workdir = _new_scratch(state)
    secret = None
    names = {pipes[0][0]: "stdout", pipes[1][0]: "stderr", pipes[2][0]: "channel"}
    try:
        fds = (pipes[0][1], pipes[1][1], pipes[2][1]) + ((pipes[3][0],) if split else ())
        pid = _fork_execution(state, request, fds, workdir)
        for fd in fds:
            os.close(fd)
        secret = read_secret() if split else None  # read only now: the execution was forked without it
        result = _collect(state, pid, names, started + request["timeout_s"], secret,
                          pipes[3][1] if split else None, workdir)
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
