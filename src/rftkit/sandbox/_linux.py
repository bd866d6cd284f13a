"""Thin ctypes wrappers over the Linux calls the sandbox needs (Python 3.11 has no os.unshare/setns).

Every wrapper raises OSError with the call's name, so a probe can report exactly what the kernel refused.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
_SYS_MOUNT_SETATTR = 442  # same number on every architecture (added after the syscall tables were unified)
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = -100, 0x8000, 0x1

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def make_tree_readonly(path: str = "/") -> None:
    """Mark every mount under `path` read-only in this mount namespace (mount_setattr, Linux >= 5.12)."""
    attr = _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
    _check(_libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), path.encode(),
                         ctypes.c_uint(_AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           "mount_setattr")


def set_no_new_privs() -> None:
    _check(_libc.prctl(38, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Root of a user namespace keeps CAP_SYS_ADMIN over its mounts (it could remount the host read-write):
    empty the bounding set, so no execve regains anything, then every capability set."""
    for cap in range(64):
        if _libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:  # PR_CAPBSET_DROP; EINVAL: past the last
            break
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def set_parent_death_signal(signum: int) -> None:
    _check(_libc.prctl(1, signum, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_undumpable() -> None:
    """Same-uid processes can then neither ptrace us nor read /proc/<pid>/mem."""
    _check(_libc.prctl(4, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


# ------------------------------------------------------------------ seccomp network filter

_ARCH = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}  # audit arch, socket, io_uring_setup
_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06
_RET_ALLOW, _RET_ERRNO, _RET_KILL = 0x7FFF0000, 0x00050000, 0x80000000
_AF_UNIX, _EACCES = 1, 13


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_supported() -> bool:
    return platform.machine() in _ARCH


@functools.lru_cache(maxsize=1)
def network_filter() -> tuple[ctypes.Array, _SockFprog]:
    """Built once in the worker, so each forked child only pays for the prctl calls."""
    arch, nr_socket, nr_io_uring = _ARCH[platform.machine()]
    insns = [
        (_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, arch), (_RET_K, 0, 0, _RET_KILL),  # seccomp_data.arch
        (_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (_JEQ_K, 0, 1, nr_io_uring), (_RET_K, 0, 0, _RET_ERRNO | _EACCES),
        (_JEQ_K, 1, 0, nr_socket), (_RET_K, 0, 0, _RET_ALLOW),
        (_LD_W_ABS, 0, 0, 16),  # args[0] (low half): the address family
        (_JEQ_K, 0, 1, _AF_UNIX), (_RET_K, 0, 0, _RET_ALLOW), (_RET_K, 0, 0, _RET_ERRNO | _EACCES),
    ]
    blob = b"".join(struct.pack("=HBBI", *insn) for insn in insns)
    buffer = ctypes.create_string_buffer(blob, len(blob))
    return buffer, _SockFprog(len(insns), ctypes.cast(buffer, ctypes.c_void_p))


def install_network_filter() -> None:
    """socket() for any family but AF_UNIX and io_uring_setup (which can open sockets) fail with EACCES.

    A kernel-level guard: unlike patching the `socket` module, ctypes or a C extension cannot get past it.
    A foreign architecture (x32, i386 on x86_64) is killed so the syscall numbers cannot be swapped.
    """
    _, prog = network_filter()
    set_no_new_privs()
    _check(_libc.prctl(22, 2, ctypes.byref(prog), 0, 0), "prctl(PR_SET_SECCOMP)")
