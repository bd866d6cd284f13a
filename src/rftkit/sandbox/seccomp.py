"""seccomp-bpf filters for every sandboxed process: a kernel-level guard that, unlike patching the
`socket` module, neither ctypes nor a C extension can get past.

Both modes: `socket()` of any family but AF_UNIX fails with EACCES (restricted: every family, since the
host's abstract and pathname unix sockets are reachable there), `io_uring_setup` too (it can open
sockets), and the calls that read or write another process (`ptrace`, `process_vm_readv/writev`,
`pidfd_getfd`, `kcmp`, `process_madvise`) fail with EPERM. Restricted mode, where the code may share
the trainer's uid, also limits the calls that act on another process by pid to the caller itself
(`prlimit64`, `setpriority`, `sched_set*`, `ioprio_set`), and where Landlock cannot scope signals
(ABI < 6) allows `kill` only for the caller's own process group. A foreign architecture (i386 on
x86_64) and x32 system calls are killed, so the numbers below cannot be swapped.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import struct

from rftkit.sandbox import _linux

_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_*
_X32_BIT = 0x40000000
_NAMES = ("socket", "io_uring_setup", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
          "process_madvise", "prlimit64", "setpriority", "sched_setaffinity", "sched_setscheduler",
          "sched_setparam", "sched_setattr", "ioprio_set", "move_pages", "migrate_pages", "perf_event_open",
          "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal")
_NR = {
    "x86_64": dict(zip(_NAMES, (41, 425, 101, 310, 311, 312, 438, 440, 302, 141, 203, 144, 142, 314, 251, 279,
                                256, 298, 62, 200, 234, 129, 297, 424))),
    "aarch64": dict(zip(_NAMES, (198, 425, 117, 270, 271, 272, 438, 440, 261, 140, 122, 119, 118, 274, 30, 239,
                                 238, 241, 129, 130, 131, 138, 240, 424))),
}
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_ALLOW, _ERRNO, _KILL = 0x7FFF0000, 0x00050000, 0x80000000
_EPERM, _EACCES, _AF_UNIX = 1, 13, 1


def supported() -> bool:
    return platform.machine() in _ARCH


def _arg(index: int) -> tuple:
    return (_LD_W_ABS, 0, 0, 16 + 8 * index)  # low half of seccomp_data.args[index] (little-endian)


def _deny(errno: int) -> list[tuple]:
    return [(_RET_K, 0, 0, _ERRNO | errno)]


def _allow_if(conditions: list[tuple[int, int]], errno: int) -> list[tuple]:
    """Allow when every (argument index, value) matches, else fail with errno. Always returns."""
    n, block = len(conditions), []
    for k, (index, value) in enumerate(conditions):
        block += [_arg(index), (_JEQ_K, 0, 2 * (n - k) - 1, value)]
    return block + [(_RET_K, 0, 0, _ALLOW), (_RET_K, 0, 0, _ERRNO | errno)]


def _rules(restricted: bool, signals_scoped: bool) -> list[tuple[str, list[tuple]]]:
    rules = [("socket", _deny(_EACCES) if restricted else _allow_if([(0, _AF_UNIX)], _EACCES)),
             ("io_uring_setup", _deny(_EACCES))]
    rules += [(name, _deny(_EPERM)) for name in ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
                                                 "pidfd_getfd", "process_madvise")]
    if restricted:
        rules += [("prlimit64", _allow_if([(0, 0)], _EPERM)), ("setpriority", _allow_if([(0, 0), (1, 0)], _EPERM)),
                  ("ioprio_set", _allow_if([(1, 0)], _EPERM))]
        rules += [(name, _allow_if([(0, 0)], _EPERM)) for name in ("sched_setaffinity", "sched_setscheduler",
                                                                   "sched_setparam", "sched_setattr")]
        rules += [(name, _deny(_EPERM)) for name in ("move_pages", "migrate_pages", "perf_event_open")]
        if not signals_scoped:
            rules += [("kill", _allow_if([(0, 0)], _EPERM))]
            rules += [(name, _deny(_EPERM)) for name in ("tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
                                                         "pidfd_send_signal")]
    return rules


def program(restricted: bool, signals_scoped: bool) -> list[tuple]:
    machine = platform.machine()
    insns = [(_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, _ARCH[machine]), (_RET_K, 0, 0, _KILL), (_LD_W_ABS, 0, 0, 0)]
    if machine == "x86_64":
        insns += [(_JGE_K, 0, 1, _X32_BIT), (_RET_K, 0, 0, _KILL)]
    for name, block in _rules(restricted, signals_scoped):  # each block returns, so the number stays loaded
        insns += [(_JEQ_K, 0, len(block), _NR[machine][name])] + block
    return insns + [(_RET_K, 0, 0, _ALLOW)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@functools.lru_cache(maxsize=4)
def compiled(restricted: bool, signals_scoped: bool) -> tuple[ctypes.Array, _SockFprog]:
    """Built once in the zygote, so each forked child only pays for the prctl calls."""
    insns = program(restricted, signals_scoped)
    blob = b"".join(struct.pack("=HBBI", *insn) for insn in insns)
    buffer = ctypes.create_string_buffer(blob, len(blob))
    return buffer, _SockFprog(len(insns), ctypes.cast(buffer, ctypes.c_void_p))


def install(restricted: bool, signals_scoped: bool) -> None:
    _, prog = compiled(restricted, signals_scoped)
    _linux.set_no_new_privs()
    _linux.check(_linux.libc.prctl(22, 2, ctypes.byref(prog), 0, 0), "prctl(PR_SET_SECCOMP)")
