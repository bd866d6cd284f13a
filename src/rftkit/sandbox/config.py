"""Limits for running untrusted code, as they appear in YAML (`sandbox:` under a code grader)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SandboxConfig(BaseModel):
    """Resource limits and isolation of one sandboxed execution (the wall-clock limit is the grader's
    `timeout_s`, so that it is set in one place)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_time_s: float | None = Field(None, gt=0, description="CPU-time limit (RLIMIT_CPU) of the execution; "
                                     "null: the wall-clock limit rounded up.")
    address_space_mb: int = Field(512, ge=32, description="Address space the execution may add on top of the warm "
                                  "worker it was forked from (RLIMIT_AS = worker baseline + this).")
    max_processes: int = Field(16, ge=1, description="Processes plus threads the execution may own (RLIMIT_NPROC "
                               "on a per-worker uid as root, or in a user namespace; where the code keeps the "
                               "trainer's uid (restricted, not root) the kernel counts all of that user's tasks, "
                               "so forks and threads mostly fail).")
    max_file_size_mb: int = Field(8, ge=1, description="Largest file the code may write (RLIMIT_FSIZE).")
    tmp_size_mb: int = Field(32, ge=1, description="Size of the private tmpfs mounted at /tmp (its working "
                             "directory), which bounds what a disk-filling program can write (full isolation; "
                             "restricted: the zygote kills a run whose scratch directory grows past it).")
    max_output_bytes: int = Field(65536, ge=1024, description="stdout and stderr are each cut at this many bytes; "
                                  "the pipe is then closed and further prints are discarded (they neither block "
                                  "nor fail), so a program printing 1 GB does not hold the run up.")
    workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1,
                         description="Warm worker processes (each forks one fresh child per execution).")
    isolation: Literal["full", "restricted"] = Field(
        "full", description="'full': user, pid, mount, network and IPC namespaces, a fresh root holding only the "
        "interpreter and the scratch directory, and a uid that is never the trainer's; the pool refuses to start "
        "where the kernel allows no namespaces. 'restricted': for such hosts (Ubuntu's restriction of unprivileged "
        "user namespaces, containers): Landlock and seccomp instead, with less (the README's table of guarantees "
        "per mode says what). Never chosen automatically.")
    network: Literal["auto", "netns", "seccomp"] = Field(
        "auto", description="Kept for older configs: 'auto' and 'netns' mean the isolation mode's own network "
        "isolation (full: a network namespace plus a seccomp filter on socket(); restricted: the filter plus "
        "Landlock's TCP rules). 'seccomp' alone is refused: use isolation: restricted.")
    hide_paths: tuple[str, ...] = Field((), description="Extra host directories kept out of the execution where "
                                        "they lie inside what it may read (the interpreter's directories); "
                                        "everything else is absent anyway, the task data and rftkit itself too.")

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "namespaces" in data:
            raise ValueError("sandbox.namespaces was replaced by sandbox.isolation: 'full' (namespaces; the "
                             "default) or 'restricted' (no namespaces: Landlock and seccomp; see the README's "
                             "guarantees per mode)")
        return data

    @model_validator(mode="after")
    def _network_matches_isolation(self) -> "SandboxConfig":
        if self.network == "seccomp":
            raise ValueError("sandbox.network: 'seccomp' (no network namespace) is not a choice of its own any more; "
                             "set sandbox.isolation: restricted for a host without namespaces, or network: auto")
        if self.network == "netns" and self.isolation == "restricted":
            raise ValueError("sandbox.network: 'netns' needs sandbox.isolation: full (restricted uses no namespaces)")
        return self


@dataclass(frozen=True)
class Isolation:
    """What was actually active for an execution; never weaker than the configured mode promises."""

    network: str  # "netns+seccomp" (full) or "seccomp+landlock" (restricted)
    pids: str  # "pidns" (killing its init kills every descendant) or "pgroup+subreaper"
    filesystem: str  # "fresh-root+tmpfs" (full) or "landlock" (restricted)
    user: str  # "per-worker-uid" (as root), "userns" (uid 0 of a user namespace, no capabilities) or "same-uid"
    mode: str = "full"  # the configured `isolation`

    def summary(self) -> str:
        return f"mode={self.mode} network={self.network} pids={self.pids} fs={self.filesystem} user={self.user}"
