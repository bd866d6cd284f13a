"""What a worker sets up once, at start, for its isolation mode; the zygote then forks every execution
from that state (see `zygote`). Nothing here is weakened quietly: `full` needs user (unless root), pid,
mount, network and IPC namespaces and refuses to start without them; `restricted` needs Landlock and
seccomp and never runs code as root (it uses per-worker uids, which must be able to read the
interpreter, tried for real).
"""

from __future__ import annotations

import mmap
import os
import signal
from types import SimpleNamespace

from rftkit.sandbox import _linux, child, landlock, mounts

CHANNEL_CAP = 16 << 20
UID_BASE = 2_000_000  # the candidate's uid as root: 2_000_000 + worker pid (no real account uses these)
DRIVER_UID_BASE = UID_BASE + (1 << 22)  # the driver's (above the largest pid_max, 2**22)
SANDBOX_GID = UID_BASE  # the group of both: an ACL for it can make an interpreter under /root readable
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"

FULL_UNAVAILABLE = (
    "sandbox.isolation is 'full' but this host refuses what it needs ({reason}). rftkit does not run model "
    "code with less isolation unless told to: allow unprivileged user namespaces (Ubuntu: sysctl "
    "kernel.apparmor_restrict_unprivileged_userns=0), run as root, or set `isolation: restricted` under the "
    "grader's `sandbox:` (Landlock and seccomp; the README's table of guarantees per mode says what it gives up)")


class WorkerState:
    """What this worker set up; decided once at start, then reported with every result."""

    def __init__(self, config: SimpleNamespace, hide: tuple[str, ...], scratch: str):
        self.config = config
        self.restricted = config.isolation == "restricted"
        self.view = mounts.resolve_view((*hide, *config.hide_paths))
        self.scratch = scratch  # restricted: the parent of each run's scratch directory
        self.keep_under_tmp = tuple(d for d in self.view.dirs if d.startswith("/tmp/"))
        self.userns = False
        root = os.geteuid() == 0
        self.uid = UID_BASE + os.getpid() if root else None
        self.driver_uid = DRIVER_UID_BASE + os.getpid() if root else None
        self.gid = SANDBOX_GID
        self.pid_ns_fd = -1
        self.code_pid = -1  # the current execution's process that runs the code
        self.driver = None  # zygote._Driver, started on first need
        self.seq = 0  # executions sent to the driver
        self.ruleset: landlock.Ruleset | None = None
        self.signals_scoped = False
        self.channel: mmap.mmap | None = None  # see allocate_channel
        self.env = {"PATH": CHILD_PATH, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
        for key in ("TRITON_INTERPRET",):
            if key in os.environ:
                self.env[key] = os.environ[key]

    def allocate_channel(self) -> None:
        """After the probe (which may fork the zygote itself): reused and zeroed, and never copied into a
        fork, so verdicts do not linger where code runs, and 16 MB do not double the cost of every fork."""
        self.channel = mmap.mmap(-1, CHANNEL_CAP)
        self.channel.madvise(mmap.MADV_DONTFORK)

    def isolation(self) -> dict[str, str]:
        """The fields of `config.Isolation`."""
        user = "per-worker-uid" if self.uid is not None else "userns" if self.userns else "same-uid"
        if self.restricted:
            return {"network": "seccomp+landlock", "pids": "pgroup+subreaper", "filesystem": "landlock",
                    "user": user, "mode": "restricted"}
        return {"network": "netns+seccomp", "pids": "pidns", "filesystem": "fresh-root+tmpfs", "user": user,
                "mode": "full"}


def _enter_user_namespace() -> None:
    """Unprivileged: become root of a fresh user namespace (mapped to our own uid) to get namespaces."""
    uid, gid = os.getuid(), os.getgid()
    _linux.unshare(_linux.CLONE_NEWUSER)
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


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


def probe_full(state: WorkerState) -> str | None:
    try:
        if os.geteuid() != 0:
            _enter_user_namespace()
            state.userns = True
        _linux.unshare(_linux.CLONE_NEWNET)
        if state.userns:
            _become_init_of_own_pid_namespace()
        state.pid_ns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
        _linux.unshare(_linux.CLONE_NEWPID)
        _linux.setns(state.pid_ns_fd, _linux.CLONE_NEWPID)
        mounts.build_worker_root(state.view)
    except OSError as exc:
        return FULL_UNAVAILABLE.format(reason=exc)
    return None


def probe_restricted(state: WorkerState) -> str | None:
    abi = landlock.abi_version()
    if abi == 0:
        return ("sandbox.isolation is 'restricted' but Landlock is unavailable (it needs Linux >= 5.13 with "
                "landlock among the enabled LSMs); without it nothing keeps the code from the host's files")
    if state.uid is not None:  # as root the code runs as a uid of its own, which must be able to read Python
        os.chmod(state.scratch, 0o711)
        unreadable = _unreadable_as(state.uid, state.gid, state.view.dirs, state.scratch)
        if unreadable:
            return (f"sandbox.isolation is 'restricted' and rftkit runs as root, so model code runs as an "
                    f"unprivileged uid (group {state.gid}), which cannot list {unreadable}. rftkit never runs it "
                    f"as root: make that readable (chmod o+x on each parent and o+rX on the tree, or an ACL: "
                    f"setfacl -m g:{state.gid}:x on each parent, -R -m g:{state.gid}:rX on the tree; for the "
                    f"scratch directory, TMPDIR), use a Python outside /root, or use isolation: full")
    state.ruleset = landlock.ruleset_for(state.view, state.scratch)
    os.dup2(state.ruleset.fd, child.RULESET_FD)
    os.close(state.ruleset.fd)
    state.ruleset.fd = child.RULESET_FD
    state.signals_scoped = state.ruleset.scopes_signals
    _linux.set_child_subreaper()
    return None


def _unreadable_as(uid: int, gid: int, paths: tuple[str, ...], scratch: str) -> str | None:
    """The first of `paths` that uid:gid cannot list, or `scratch` if it cannot enter it, tried for real
    (modes, ACLs and all)."""
    read_end, write_end = os.pipe()
    helper = os.fork()
    if helper == 0:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            for path, check in [*((p, os.listdir) for p in paths), (scratch, os.chdir)]:
                try:
                    check(path)
                except OSError:
                    os.write(write_end, path.encode())
                    break
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        failed = f.read().decode()
    os.waitpid(helper, 0)
    return failed or None
