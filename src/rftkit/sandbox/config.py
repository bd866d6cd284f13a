"""Limits for running untrusted code, as they appear in YAML (`sandbox:` under a code grader)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SandboxConfig(BaseModel):
    """Resource limits and isolation of one sandboxed execution (the wall-clock limit is the grader's
    `timeout_s`, so that it is set in one place)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_time_s: float | None = Field(None, gt=0, description="CPU-time limit (RLIMIT_CPU) of the execution; "
                                     "null: the wall-clock limit rounded up.")
    address_space_mb: int = Field(512, ge=32, description="Address space the execution may add on top of the warm "
                                  "worker it was forked from (RLIMIT_AS = worker baseline + this).")
    max_processes: int = Field(16, ge=1, description="Processes plus threads the execution may own (RLIMIT_NPROC "
                               "on a per-worker user id; enforced only when the pool runs as root or in a user "
                               "namespace, see the README section on the sandbox).")
    max_file_size_mb: int = Field(8, ge=1, description="Largest file the code may write (RLIMIT_FSIZE).")
    tmp_size_mb: int = Field(32, ge=1, description="Size of the private tmpfs mounted at /tmp (its working "
                             "directory), which bounds what a disk-filling program can write.")
    max_output_bytes: int = Field(65536, ge=1024, description="stdout and stderr are each cut at this many bytes; "
                                  "the pipe is then closed, so a program printing 1 GB stops early.")
    workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1,
                         description="Warm worker processes (each forks one fresh child per execution).")
    network: Literal["auto", "netns", "seccomp"] = Field(
        "auto", description="'auto': a fresh network namespace per worker plus a seccomp filter on socket(); "
        "'netns': require the namespace (fail at start when the kernel refuses); 'seccomp': only the filter "
        "(the fallback, also selectable to test it). The active isolation is reported with every result.")
    namespaces: bool = Field(True, description="Use pid, mount and IPC namespaces per execution (needs root or "
                             "unprivileged user namespaces); false or unavailable: process-group kill and a "
                             "private temporary directory only, reported as such in every result.")
    hide_paths: tuple[str, ...] = Field((), description="Extra host directories covered by an empty tmpfs in the "
                                        "execution (the task data and home directories are always hidden).")


@dataclass(frozen=True)
class Isolation:
    """What was actually active for an execution; never silently weaker than reported here."""

    network: str  # "netns+seccomp", "netns", "seccomp" or "none"
    pids: str  # "pidns" (killing its init kills every descendant) or "pgroup" (setsid + killpg)
    filesystem: str  # "readonly-root+tmpfs" or "private-tmpdir"
    user: str  # "per-worker-uid" (an unprivileged uid of its own per worker) or "same-uid"

    def summary(self) -> str:
        return f"network={self.network} pids={self.pids} fs={self.filesystem} user={self.user}"
