"""What sandboxed code may see of the filesystem, deny by default: the interpreter's directories, the
system libraries and a scratch directory, and nothing else (no source checkout, no datasets, no task
data, no home directories), wherever those live.

Full isolation builds that view as a fresh root: an empty tmpfs into which the allowed paths are bound
read-only, entered with pivot_root so that no path leads back to the host (set up once per worker;
each execution then mounts its own /tmp and /proc). Restricted isolation turns the same list into a
Landlock ruleset (see `landlock`).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from typing import NamedTuple

from rftkit.sandbox import _linux

EXECUTION_WORKDIR = "/tmp/work"  # full isolation: inside each execution's private /tmp
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/passwd", "/etc/group",
                "/etc/nsswitch.conf")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # rftkit: its task packs hold hidden tests


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _outermost(paths: set[str]) -> tuple[str, ...]:
    ordered = sorted(paths)
    return tuple(d for i, d in enumerate(ordered) if not any(_under(d, o) for o in ordered[:i]))


class View(NamedTuple):  # no dataclasses here: the zygote stays small (see zygote.py)
    """The allow-list, resolved once per worker (real paths)."""

    dirs: tuple[str, ...]  # readable trees: interpreter prefixes, sys.path, system libraries
    files: tuple[str, ...]  # single readable files (a few of /etc)
    devices: tuple[str, ...]  # readable and writable device nodes
    links: tuple[tuple[str, str], ...]  # symlinks recreated as they are (/bin -> usr/bin)
    hidden: tuple[str, ...]  # paths inside `dirs` that stay out: rftkit, the task data, hide_paths


def interpreter_dirs() -> tuple[str, ...]:
    """The interpreter's prefixes and sys.path, minus any directory holding rftkit (the source
    checkout's `src`, or the checkout itself): the code must not read the task packs or the tests."""
    candidates = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                                *sys.path) if p and os.path.isdir(p)}
    package_parent = os.path.dirname(PACKAGE_DIR)
    return _outermost({d for d in candidates if not _under(package_parent, d)})


def resolve_view(hide: tuple[str, ...]) -> View:
    dirs: set[str] = set(interpreter_dirs())
    links = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            links.append((path, os.readlink(path)))
            dirs.add(os.path.realpath(path))
        elif os.path.isdir(path):
            dirs.add(path)
    dirs = {d for d in dirs if os.path.isdir(d)}
    hidden = {os.path.realpath(p) for p in (PACKAGE_DIR, *hide)}
    outer = _outermost(dirs)
    return View(dirs=outer, files=tuple(f for f in SYSTEM_FILES if os.path.isfile(f)),
                devices=tuple(d for d in DEVICES if os.path.exists(d)),
                links=tuple((p, t) for p, t in links if not any(_under(p, d) for d in outer)),
                hidden=tuple(sorted(h for h in hidden if any(_under(h, d) for d in outer))))


def build_worker_root(view: View) -> None:
    """Once per worker, in a mount namespace of its own: a tmpfs holding only `view`, made the root."""
    _linux.unshare(_linux.CLONE_NEWNS)
    _linux.mount("none", "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
    # handles into this namespace's copy of the tree (a bind source must be in it), before /tmp is covered
    # The host's /proc is bound too, for the kernel only: in a user namespace a fresh proc may be mounted
    # only where one is already fully visible. Every execution covers it with its own before any code runs.
    handles = [(p, os.open(p, os.O_PATH | os.O_CLOEXEC)) for p in (*view.dirs, *view.files, *view.devices, "/proc")]
    new = "/tmp"  # any existing directory serves as the mount point: the host's /tmp is not used
    safe = _linux.MS_NOSUID | _linux.MS_NODEV
    _linux.mount("tmpfs", new, "tmpfs", safe, "size=1m,mode=0755")
    for path, fd in handles:
        target = new + path
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(target, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            open(target, "w").close()
        _linux.mount(f"/proc/self/fd/{fd}", target, None, _linux.MS_BIND | _linux.MS_REC)
        os.close(fd)
    for path, link_target in view.links:
        os.symlink(link_target, new + path)
    for hidden in view.hidden:  # an empty read-only tmpfs over what must stay out
        _linux.mount("tmpfs", new + hidden, "tmpfs", safe | _linux.MS_RDONLY, "size=4k,mode=0755")
    os.makedirs(new + "/tmp", mode=0o755, exist_ok=True)
    _linux.make_tree_readonly(new)
    os.chdir(new)
    _linux.pivot_root_here()


def setup_execution_mounts(uid: int | None, tmp_size_mb: int, keep_under_tmp: tuple[str, ...]) -> str:
    """Per execution (full isolation): a private tmpfs at /tmp (the working directory, gone with the
    namespace) and a /proc that shows only this execution's processes, so no host pid can be named."""
    _linux.unshare(_linux.CLONE_NEWNS | _linux.CLONE_NEWIPC)
    owner = f",uid={uid}" if uid is not None else ""
    safe = _linux.MS_NOSUID | _linux.MS_NODEV
    keep = [(d, os.open(d, os.O_PATH)) for d in keep_under_tmp]  # an interpreter under /tmp (a CI checkout)
    _linux.mount("tmpfs", "/tmp", "tmpfs", safe, f"size={tmp_size_mb}m,mode=0700{owner}")
    for path, fd in keep:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _linux.mount(f"/proc/self/fd/{fd}", path, None, _linux.MS_BIND | _linux.MS_REC)
        _linux.make_tree_readonly(path)
        os.close(fd)
    _linux.mount("proc", "/proc", "proc", safe | _linux.MS_NOEXEC)
    os.mkdir(EXECUTION_WORKDIR, 0o700)
    if uid is not None:
        os.chown(EXECUTION_WORKDIR, uid, -1)
    return EXECUTION_WORKDIR


def remove_tree(path: str) -> None:
    """rmtree that first gives back the permissions hostile code took away (a chmod 000 directory)."""
    for root, dirs, _ in os.walk(path):  # top-down: each directory is opened up before the walk enters it
        for name in dirs:
            sub = os.path.join(root, name)
            try:
                if not os.path.islink(sub):
                    os.chmod(sub, stat.S_IRWXU)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)
