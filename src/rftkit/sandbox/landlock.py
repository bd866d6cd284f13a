"""Landlock (Linux >= 5.13): an unprivileged process confines itself and its descendants to an allow-list.

The restricted isolation mode rests on it: the execution may read only the interpreter and the system
libraries, write only its scratch directory, open no TCP connection, and (ABI >= 6) signal no process
and reach no abstract unix socket outside its own domain. Landlock also denies ptrace-style access
(`ptrace`, `/proc/<pid>/mem`, `/environ`, `/fd`) to every process outside the domain, the trainer
included, whatever the uids. See https://docs.kernel.org/userspace-api/landlock.html.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import TYPE_CHECKING

from rftkit.sandbox import _linux

if TYPE_CHECKING:
    from rftkit.sandbox.mounts import View

_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}  # create_ruleset, add_rule, restrict_self
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_MAKE_AND_REMOVE = sum(1 << b for b in range(4, 13))  # remove dir/file, make char/dir/reg/sock/fifo/block/sym
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
READ = EXECUTE | READ_FILE | READ_DIR
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # the only rights a rule on a file may hold
_NET_TCP = (1 << 0) | (1 << 1)  # bind, connect (ABI >= 4)
_SCOPE = (1 << 0) | (1 << 1)  # abstract unix sockets, signals (ABI >= 6)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """0 where Landlock is missing (old kernel, not in the LSM list, or a seccomp profile refusing it)."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return 0
    version = _linux.libc.syscall(ctypes.c_long(numbers[0]), None, ctypes.c_size_t(0),
                                  ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(0, version)


def handled_fs(abi: int) -> int:
    rights = READ | WRITE_FILE | _MAKE_AND_REMOVE
    return rights | (REFER if abi >= 2 else 0) | (TRUNCATE if abi >= 3 else 0) | (IOCTL_DEV if abi >= 5 else 0)


class Ruleset:
    """Built once per worker (opening each path then); every execution's child applies it with `restrict`."""

    def __init__(self, abi: int):
        self.abi = abi
        self.all_fs = handled_fs(abi)
        attr = _RulesetAttr(self.all_fs, _NET_TCP if abi >= 4 else 0, _SCOPE if abi >= 6 else 0)
        size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16 if abi >= 4 else 8
        create = _SYSCALLS[platform.machine()][0]
        fd = _linux.libc.syscall(ctypes.c_long(create), ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
        self.fd = fd

    @property
    def scopes_signals(self) -> bool:
        return self.abi >= 6

    def allow(self, path: str, rights: int) -> None:
        """Grant `rights` beneath `path` (a file gets only the file rights among them)."""
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not os.path.isdir(path):
                rights &= FILE_RIGHTS
            rule = _PathBeneath(rights & self.all_fs, fd)
            result = _linux.libc.syscall(ctypes.c_long(_SYSCALLS[platform.machine()][1]), ctypes.c_int(self.fd),
                                         ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0))
            _linux.check(result, f"landlock_add_rule {path}")
        finally:
            os.close(fd)

    def restrict(self) -> None:
        """Enter the domain (needs no_new_privs, which the caller sets); irreversible, inherited by children."""
        _linux.set_no_new_privs()
        result = _linux.libc.syscall(ctypes.c_long(_SYSCALLS[platform.machine()][2]), ctypes.c_int(self.fd),
                                     ctypes.c_uint32(0))
        _linux.check(result, "landlock_restrict_self")

    def close(self) -> None:
        os.close(self.fd)


def allow_read_except(ruleset: Ruleset, root: str, hidden: tuple[str, ...]) -> None:
    """Readable tree at `root` minus the `hidden` paths beneath it. Landlock only adds rights, so the
    directories on the way to a hidden path get listing only, and each sibling its own full rule."""
    inside = [h for h in hidden if h == root or h.startswith(root.rstrip("/") + "/")]
    if not inside:
        ruleset.allow(root, READ)
        return
    if root in inside or not os.path.isdir(root):
        return
    ruleset.allow(root, READ_DIR)
    for entry in os.scandir(root):
        try:
            allow_read_except(ruleset, entry.path, tuple(inside))
        except FileNotFoundError:  # a dangling symlink
            pass


def ruleset_for(view: "View", scratch: str) -> Ruleset:
    """Read the view (minus its hidden paths), read and write a few device nodes, anything in `scratch`."""
    ruleset = Ruleset(abi_version())
    for root in view.dirs:
        allow_read_except(ruleset, root, view.hidden)
    for path in view.files:
        ruleset.allow(path, READ_FILE)
    for path in view.devices:
        ruleset.allow(path, READ_FILE | WRITE_FILE)
    ruleset.allow(scratch, ruleset.all_fs)
    return ruleset
