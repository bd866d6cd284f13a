"""Thin ctypes wrappers over the Linux calls the sandbox needs (Python 3.11 has no os.unshare/setns).

Every wrapper raises OSError with the call's name, so a probe can report exactly what the kernel refused.
"""

from __future__ import annotations

import ctypes
import os
import platform

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
_SYS_MOUNT_SETATTR = 442  # same number on every architecture (added after the syscall tables were unified)
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = -100, 0x8000, 0x1

libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    check(libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    check(libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    check(libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def make_tree_readonly(path: str = "/") -> None:
    """Mark every mount under `path` read-only in this mount namespace (mount_setattr, Linux >= 5.12)."""
    attr = _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
    check(libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), path.encode(),
                         ctypes.c_uint(_AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           "mount_setattr")


def pivot_root_here() -> None:
    """Make the current directory (a mount point) the root, detaching the old one entirely: the
    `pivot_root(".", ".")` idiom of pivot_root(2), after which no path leads back to the host."""
    check(libc.syscall(ctypes.c_long(_SYS_PIVOT_ROOT[platform.machine()]), b".", b"."), "pivot_root")
    check(libc.umount2(b".", ctypes.c_int(MNT_DETACH)), "umount2")
    os.chdir("/")


def set_no_new_privs() -> None:
    check(libc.prctl(38, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Root of a user namespace keeps CAP_SYS_ADMIN over its mounts (it could remount the host read-write):
    empty the bounding set, so no execve regains anything, then every capability set."""
    for cap in range(64):
        if libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:  # PR_CAPBSET_DROP; EINVAL: past the last
            break
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()
    check(libc.capset(ctypes.byref(header), data), "capset")


def set_parent_death_signal(signum: int) -> None:
    check(libc.prctl(1, signum, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_undumpable() -> None:
    """Same-uid processes without CAP_SYS_PTRACE can then neither ptrace us nor open /proc/<pid>/mem,
    /environ or /fd (the kernel makes those entries root's)."""
    check(libc.prctl(4, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def is_dumpable() -> bool:
    return libc.prctl(3, 0, 0, 0, 0) == 1


def set_child_subreaper() -> None:
    """Orphans of our descendants (a double-forked daemon) become our children instead of init's."""
    check(libc.prctl(36, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
