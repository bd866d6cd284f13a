"""A warm worker ("zygote"): imports once, then forks one fresh, isolated child per execution.

Runs as `python -m rftkit.sandbox.zygote`, started by `SandboxPool` with a scrubbed environment, and
talks to the pool over its stdin/stdout (length-prefixed pickles; both ends are trusted). It never runs
untrusted code itself: each request is executed by a forked child that first isolates itself
(`_isolate_child`), then calls a harness from `rftkit.sandbox.harness` (or another trusted `rftkit.`
module). The child's stdout, stderr and verdict channel come back as raw bytes; the zygote parses none
of them, so nothing the code prints can confuse it.
"""

from __future__ import annotations

import fcntl
import gc
import importlib
import os
import pickle
import resource
import selectors
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from types import SimpleNamespace
from typing import Any, BinaryIO

from rftkit.sandbox import _linux, mounts

# No pydantic here: the zygote stays small, since every fork copies its page tables.

CHANNEL_FD = 3
CHANNEL_CAP = 16 << 20
UID_BASE = 2_000_000  # per-worker uids (2_000_000 + worker pid): unused by real accounts, so RLIMIT_NPROC counts only the run
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
ALWAYS_HIDDEN = ("/root", "/home")


def send_message(stream: BinaryIO, message: Any) -> None:
    blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(blob)) + blob)
    stream.flush()


def recv_message(stream: BinaryIO) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))


class WorkerState:
    """What this worker could set up; decided once at start by probing, then reported with every result."""

    def __init__(self, config: SimpleNamespace, hide: tuple[str, ...]):
        self.config = config
        self.hide = tuple(os.path.realpath(p) for p in (*ALWAYS_HIDDEN, *hide, *config.hide_paths)
                          if os.path.isdir(p))
        self.expose = mounts.interpreter_dirs()
        self.netns = self.pidns = self.mountns = self.userns = False
        self.seccomp = _linux.seccomp_supported()
        self.uid = UID_BASE + os.getpid() if os.geteuid() == 0 else None
        self.pid_ns_fd = -1
        self.env = {"PATH": CHILD_PATH, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
        for key in ("TRITON_INTERPRET",):
            if key in os.environ:
                self.env[key] = os.environ[key]

    def isolation(self) -> dict[str, str]:
        """The fields of `config.Isolation`."""
        network = "+".join(n for n, on in (("netns", self.netns), ("seccomp", self.seccomp)) if on) or "none"
        return {"network": network, "pids": "pidns" if self.pidns else "pgroup",
                "filesystem": "readonly-root+tmpfs" if self.mountns else "private-tmpdir",
                "user": "per-worker-uid" if self.uid is not None else "same-uid"}


def _enter_user_namespace() -> None:
    """Unprivileged: become root of a fresh user namespace (mapped to our own uid) to get namespaces."""
    uid, gid = os.getuid(), os.getgid()
    _linux.unshare(_linux.CLONE_NEWUSER)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def _become_init_of_own_pid_namespace() -> None:
    """In a user namespace the zygote may not setns back into the pid namespace it started in (the parent
    user namespace owns it); as init of a pid namespace of its own it may. The original process only
    waits, and its death (the pool killing the worker) takes this one along."""
    _linux.unshare(_linux.CLONE_NEWPID)
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _linux.set_parent_death_signal(signal.SIGKILL)


def probe(state: WorkerState) -> str | None:
    """Set up the worker-wide namespaces; returns an error when config demands what the kernel refuses."""
    config = state.config
    wants_ns = config.namespaces or config.network != "seccomp"
    if wants_ns and os.geteuid() != 0:
        try:
            _enter_user_namespace()
            state.userns = True
        except OSError:
            pass
    privileged = os.geteuid() == 0  # root, or root of our own user namespace
    if config.network != "seccomp" and privileged:
        try:
            _linux.unshare(_linux.CLONE_NEWNET)
            state.netns = True
        except OSError:
            pass
    if config.network == "netns" and not state.netns:
        return "sandbox.network is 'netns' but the kernel refused a network namespace (needs root or " \
               "unprivileged user namespaces); use network: auto to fall back to the seccomp filter"
    if config.network == "seccomp" and not state.seccomp:
        return f"sandbox.network is 'seccomp' but this architecture ({os.uname().machine}) is not supported"
    if config.namespaces and privileged:
        try:
            if state.userns:
                _become_init_of_own_pid_namespace()
            state.pid_ns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
            _linux.unshare(_linux.CLONE_NEWPID)
            _linux.setns(state.pid_ns_fd, _linux.CLONE_NEWPID)
            state.pidns = True
            mounts.prepare_worker_mounts(state)
            state.mountns = True
        except OSError as exc:
            sys.stderr.write(f"rftkit sandbox: namespaces unavailable ({exc}); using process groups\n")
    if not state.mountns and state.uid is not None and not all(map(_others_can_read, state.expose)):
        state.uid = None  # an unprivileged uid could not even import the standard library (pyenv under /root)
    return None


def _others_can_read(path: str) -> bool:
    parts = path.rstrip("/").split("/")
    ancestors = ["/" + "/".join(parts[1:i]) for i in range(1, len(parts))]
    return all(os.stat(a).st_mode & 0o001 for a in ancestors) and os.stat(path).st_mode & 0o005 == 0o005


# ------------------------------------------------------------------ the child (runs the untrusted code)


def set_child_environment(state: WorkerState, workdir: str) -> None:
    """The environment untrusted code sees: the scrubbed variables, and its working directory as home."""
    os.environ.clear()
    os.environ.update(state.env, HOME=workdir, TMPDIR=workdir, TRITON_CACHE_DIR=f"{workdir}/.triton")


def _set_limits(config: SimpleNamespace, timeout_s: float, userns: bool) -> None:
    address_space = config.baseline_vm_bytes + config.address_space_mb * (1 << 20)
    cpu = int(config.cpu_time_s or timeout_s + 0.999) or 1
    file_size = config.max_file_size_mb << 20
    # in a user namespace of its own the count also holds the worker and its waiting parent
    nproc = config.max_processes + (2 if userns else 0)
    for limit, value in ((resource.RLIMIT_AS, (address_space, address_space)), (resource.RLIMIT_CPU, (cpu, cpu + 1)),
                         (resource.RLIMIT_FSIZE, (file_size, file_size)), (resource.RLIMIT_CORE, (0, 0)),
                         (resource.RLIMIT_NOFILE, (256, 256)),
                         (resource.RLIMIT_NPROC, (nproc, nproc))):
        resource.setrlimit(limit, value)


def _isolate_child(state: WorkerState, fds: tuple[int, int, int], workdir: str | None, timeout_s: float) -> None:
    os.setsid()  # its own process group and session: killpg reaches everything it starts (pgroup mode)
    devnull = os.open("/dev/null", os.O_RDONLY)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (devnull, *fds)]  # out of the way of 0..3 first
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    os.closerange(CHANNEL_FD + 1, 1 << 16)  # the pool's request/response pipes must be unreachable
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if state.mountns:
        workdir = mounts.setup_execution_mounts(state)
    os.chdir(workdir)
    _set_limits(state.config, timeout_s, state.userns)
    if state.uid is not None:
        os.setgroups([])
        os.setresgid(state.uid, state.uid, state.uid)
        os.setresuid(state.uid, state.uid, state.uid)
    elif os.geteuid() == 0:  # root of our user namespace: keep the uid, lose the powers
        _linux.drop_capabilities()
    if state.seccomp:
        _linux.install_network_filter()
    else:
        _linux.set_no_new_privs()
    if not state.mountns:  # with the mount namespace every run works in one path: the zygote set this once
        set_child_environment(state, workdir)
    sys.path[:] = [p for p in sys.path if p]  # no '' entry: the working directory is the code's, not ours


def _child_main(state: WorkerState, request: dict, fds: tuple[int, int, int], workdir: str | None) -> None:
    code = 0
    try:
        _isolate_child(state, fds, workdir, request["timeout_s"])
        module_name, func_name = request["harness"].split(":")
        if not module_name.startswith("rftkit."):
            raise ValueError(f"harness {module_name!r} is not an rftkit module")
        from rftkit.sandbox.harness import Channel

        harness = getattr(importlib.import_module(module_name), func_name)
        harness(request["payload"], Channel(CHANNEL_FD, request["nonce"]))
    except BaseException:  # noqa: BLE001 - the child must reach os._exit whatever happens
        code = 70
        try:
            os.write(2, traceback.format_exc().encode(errors="replace")[-4000:])
        except OSError:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)  # never return into the zygote's loop


# ------------------------------------------------------------------ the zygote side of one execution


def _fork_child(state: WorkerState, request: dict, fds: tuple[int, int, int], workdir: str | None) -> int:
    if state.pidns:  # the next fork becomes init of a fresh pid namespace...
        _linux.unshare(_linux.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        _child_main(state, request, fds, workdir)
    if state.pidns:  # ...and the zygote returns to its own for the fork after that
        _linux.setns(state.pid_ns_fd, _linux.CLONE_NEWPID)
    return pid


def _kill(state: WorkerState, pid: int) -> None:
    """Killing init of the pid namespace kills every process in it; without one, the process group, and
    with a per-worker uid every process of that uid (a double-forked daemon may have left the group)."""
    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if not state.pidns and state.uid is not None:
        helper = os.fork()
        if helper == 0:  # kill(-1) as that uid reaches exactly its processes, never the caller
            try:
                os.setresuid(state.uid, state.uid, state.uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(helper, 0)


def _collect(state: WorkerState, pid: int, pipes: dict[int, str], deadline: float) -> dict:
    caps = {"stdout": state.config.max_output_bytes, "stderr": state.config.max_output_bytes, "channel": CHANNEL_CAP}
    data = {name: bytearray() for name in pipes.values()}
    truncated = {name: False for name in pipes.values()}
    pidfd = os.pidfd_open(pid)
    selector = selectors.DefaultSelector()
    for fd, name in pipes.items():
        selector.register(fd, selectors.EVENT_READ, name)
    selector.register(pidfd, selectors.EVENT_READ, None)
    timed_out = exited = False
    while selector.get_map():
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            if exited:  # a straggler still holds a pipe open after the child died: stop waiting for it
                break
            timed_out = exited = True
            _kill(state, pid)
            deadline = time.monotonic() + 0.5  # drain what was written before the kill
            continue
        for key, _ in selector.select(timeout):
            if key.data is None:
                selector.unregister(pidfd)
                exited = True
                _kill(state, pid)  # pidns: already gone with init; pgroup: its leftovers
                deadline = min(deadline, time.monotonic() + 0.5)
                continue
            chunk = os.read(key.fd, 1 << 16)
            name = key.data
            room = caps[name] - len(data[name])
            data[name] += chunk[:room]
            if not chunk or len(chunk) > room:  # EOF, or over the cap: closing makes further writes fail
                truncated[name] = truncated[name] or len(chunk) > room
                selector.unregister(key.fd)
    selector.close()
    os.close(pidfd)
    _kill(state, pid)
    _, status = os.waitpid(pid, 0)
    return {"status": status, "timed_out": timed_out, "data": {k: bytes(v) for k, v in data.items()},
            "truncated": truncated}


def execute(state: WorkerState, request: dict) -> dict:
    started = time.monotonic()
    pipes = [os.pipe() for _ in range(3)]
    workdir = None
    if not state.mountns:
        workdir = tempfile.mkdtemp(prefix="rftkit-sandbox-")
        if state.uid is not None:
            os.chown(workdir, state.uid, state.uid)
    try:
        pid = _fork_child(state, request, (pipes[0][1], pipes[1][1], pipes[2][1]), workdir)
        for _, write_end in pipes:
            os.close(write_end)
        names = {pipes[0][0]: "stdout", pipes[1][0]: "stderr", pipes[2][0]: "channel"}
        result = _collect(state, pid, names, started + request["timeout_s"])
    finally:
        for read_end, _ in pipes:
            try:
                os.close(read_end)
            except OSError:
                pass
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    status = result.pop("status")
    result["exit_code"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    result["signal"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    result["wall_s"] = time.monotonic() - started
    return result


def _self_test(state: WorkerState) -> str | None:
    """Run one trivial execution; if the mount setup is what failed, fall back to a private tmp dir
    (the reported isolation says so), and refuse to start if even that cannot run."""
    request = {"harness": "rftkit.sandbox.harness:run_script", "payload": {"code": "pass"}, "timeout_s": 10.0,
               "nonce": "self-test"}
    result = execute(state, request)
    if result["exit_code"] == 0:
        return None
    if state.mountns:
        state.mountns = False
        if execute(state, request)["exit_code"] == 0:
            return None
    return "sandbox self-test failed: " + result["data"]["stderr"].decode(errors="replace")[-1500:]


def main() -> None:
    requests = sys.stdin.buffer
    responses = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print in a preloaded module must not corrupt the response stream
    init = recv_message(requests)
    state = WorkerState(SimpleNamespace(**init["config"]), tuple(init["hide"]))
    try:  # before the worker's view of the host turns read-only (torch wants a writable temp dir)
        for module in ("rftkit.sandbox.harness", *init["preload"]):
            importlib.import_module(module)
    except Exception as exc:  # a missing optional dependency: the pool reports it to the grader
        send_message(responses, {"error": f"could not import {module}: {exc}"})
        return
    error = probe(state)
    if error:
        send_message(responses, {"error": error})
        return
    _linux.set_undumpable()
    if state.seccomp:
        _linux.network_filter()  # built here once, not in every child
    with open("/proc/self/status") as f:  # measured once: children start as copies of this process
        vm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    state.config.baseline_vm_bytes = vm_kb * 1024 + (64 << 20)  # + room for what the child maps before the limit
    gc.collect()
    gc.freeze()  # forked children then never write to the zygote's objects' GC headers: fewer copy-on-write faults
    if state.mountns:  # every execution works in the same path: its environment is set here, not in each child
        set_child_environment(state, mounts.EXECUTION_WORKDIR)
    self_test_error = _self_test(state)  # falling back to a private tmp dir, children set their own again
    if self_test_error:
        send_message(responses, {"error": self_test_error})
        return
    send_message(responses, {"ready": True, "isolation": state.isolation()})
    while (request := recv_message(requests)) is not None:
        send_message(responses, execute(state, request))


if __name__ == "__main__":
    main()
