"""The filesystem view of sandboxed code: set up once per worker, then a private /tmp and /proc per run."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from rftkit.sandbox import _linux

EXECUTION_WORKDIR = "/tmp/work"  # inside each execution's private /tmp

if TYPE_CHECKING:
    from rftkit.sandbox.zygote import WorkerState


def interpreter_dirs() -> tuple[str, ...]:
    """Directories the child must still read when a hidden path holds them (pyenv or uv keep Python in
    the home directory): the prefixes and sys.path, reduced to the outermost ones."""
    dirs = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, *sys.path) if p and os.path.isdir(p)})
    return tuple(d for i, d in enumerate(dirs) if not any(d.startswith(o.rstrip("/") + "/") for o in dirs[:i]))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def prepare_worker_mounts(state: "WorkerState") -> None:
    """Once per worker, in its own mount namespace: the host read-only, hidden paths covered, no
    writable scratch directories. Children inherit this view and only add their own /tmp and /proc."""
    _linux.unshare(_linux.CLONE_NEWNS)
    _linux.mount("none", "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
    _linux.make_tree_readonly("/")
    safe = _linux.MS_NOSUID | _linux.MS_NODEV
    for scratch in ("/dev/shm", "/var/tmp", "/run/lock"):
        if os.path.isdir(scratch):
            _linux.mount("tmpfs", scratch, "tmpfs", safe | _linux.MS_RDONLY, "size=4k")
    _hide_paths(state, safe)


def setup_execution_mounts(state: "WorkerState") -> str:
    """Per execution: a private tmpfs at /tmp (the working directory, gone with the namespace) and a /proc
    that shows only this execution's processes, so no host pid can be named."""
    _linux.unshare(_linux.CLONE_NEWNS | _linux.CLONE_NEWIPC)
    owner = f",uid={state.uid},gid={state.uid}" if state.uid is not None else ""
    safe = _linux.MS_NOSUID | _linux.MS_NODEV
    # An interpreter or virtual environment living under /tmp (a CI checkout) must stay readable.
    keep = _open_beneath(state.expose, "/tmp")
    _linux.mount("tmpfs", "/tmp", "tmpfs", safe, f"size={state.config.tmp_size_mb}m,mode=0700{owner}")
    _bind_back_readonly(keep)
    if state.pidns:
        _linux.mount("proc", "/proc", "proc", safe | _linux.MS_NOEXEC)
    os.mkdir(EXECUTION_WORKDIR, 0o700)
    if state.uid is not None:
        os.chown(EXECUTION_WORKDIR, state.uid, state.uid)
    return EXECUTION_WORKDIR


def _hide_paths(state: "WorkerState", safe: int) -> None:
    """Cover the task data (hidden tests) and home directories with an empty read-only tmpfs, binding back
    only the interpreter directories beneath them."""
    for hidden in state.hide:
        keep = _open_beneath(state.expose, hidden)
        _linux.mount("tmpfs", hidden, "tmpfs", safe, "size=64k,mode=0755")
        _bind_back_readonly(keep)
        _linux.mount("none", hidden, None, _linux.MS_REMOUNT | _linux.MS_RDONLY | safe)


def _open_beneath(paths: tuple[str, ...], root: str) -> list[tuple[str, int]]:
    """O_PATH handles on the `paths` strictly beneath `root`, taken before `root` is covered."""
    return [(d, os.open(d, os.O_PATH)) for d in paths if _under(d, root) and d != root]


def _bind_back_readonly(keep: list[tuple[str, int]]) -> None:
    """Re-expose covered directories read-only; recursive binds keep the hidden mounts inside them."""
    for path, fd in keep:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _linux.mount(f"/proc/self/fd/{fd}", path, None, _linux.MS_BIND | _linux.MS_REC)
        _linux.make_tree_readonly(path)
        os.close(fd)
