"""The parent side: a pool of warm zygote workers, and the authenticated results of executions."""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import select
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rftkit.sandbox.config import Isolation, SandboxConfig
from rftkit.sandbox.protocol import new_key, parse_channel, recv_blob, recv_message, send_message

log = logging.getLogger(__name__)
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # the directory holding `rftkit`
_TASK_DATA = str(Path(__file__).resolve().parents[1] / "tasks" / "data")  # hidden tests live here
_STARTUP_TIMEOUT_S = 120.0
_RESPONSE_GRACE_S = 10.0


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start with the requested isolation (it never silently runs with less)."""


@dataclass(frozen=True)
class Job:
    """`payload` reaches the process that runs the code; `secret` (only for a split harness such as
    "rftkit.sandbox.proxy:run_tests") reaches only the driver process that judges it."""

    harness: str  # "rftkit.sandbox.proxy:run_tests", "rftkit.sandbox.harness:run_script", ...
    payload: dict[str, Any]
    timeout_s: float
    secret: dict[str, Any] | None = None


@dataclass(frozen=True)
class ExecResult:
    """One execution. `records` only holds channel lines whose HMAC verifies under this run's key."""

    records: list[dict[str, Any]]
    done: bool  # the harness reached its end (an early exit or a kill leaves this False)
    exit_code: int | None  # None: killed by `signal`
    signal: int | None
    timed_out: bool
    wall_s: float
    stdout: str
    stderr: str
    truncated: dict[str, bool]
    isolation: Isolation
    unauthenticated_lines: int = 0  # channel lines whose HMAC does not verify (a forgery attempt, or garbage)
    error: str | None = None  # infrastructure failure (the worker died): no verdict on the code
    scratch_full: bool = False  # restricted isolation: killed when its scratch directory passed tmp_size_mb

    def first(self, key: str) -> dict[str, Any] | None:
        return next((r for r in self.records if key in r), None)

    def status_text(self) -> str:
        if self.error:
            return f"sandbox error: {self.error}"
        if self.timed_out:
            return f"killed at the {self.wall_s:.1f} s time limit"
        if self.scratch_full:
            return "killed: its scratch directory grew past sandbox.tmp_size_mb"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return "finished" if self.done else f"exited (code {self.exit_code}) before the harness finished"


class _Worker:
    def __init__(self, config: SandboxConfig, preload: tuple[str, ...]):
        env = {"PATH": os.defpath, "PYTHONPATH": _PACKAGE_PARENT, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        if any(m.split(".")[0] == "triton" for m in preload):
            env["TRITON_INTERPRET"] = "1"  # must be set before triton is imported
        # restricted isolation: each run's scratch directory goes inside (full gives each run a tmpfs)
        self.scratch = tempfile.mkdtemp(prefix="rftkit-sandbox-") if config.isolation == "restricted" else ""
        self.proc = subprocess.Popen([sys.executable, "-c", "from rftkit.sandbox.zygote import main; main()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/",
                                     start_new_session=True)
        send_message(self.proc.stdin, {"config": config.model_dump(), "preload": list(preload),
                                       "hide": [_TASK_DATA], "scratch": self.scratch})

    def wait_ready(self) -> Isolation:
        reply = self.receive(_STARTUP_TIMEOUT_S)
        if reply is None or "error" in reply:
            self.close()
            raise SandboxUnavailable(reply["error"] if reply else "sandbox worker exited during start-up")
        return Isolation(**reply["isolation"])

    def receive(self, timeout_s: float) -> Any:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        return recv_message(self.proc.stdout) if ready else None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self.scratch:
            from rftkit.sandbox.mounts import remove_tree

            remove_tree(self.scratch)


class SandboxPool:
    """Warm workers; `run_many` spreads jobs over them, each job in a fresh forked child."""

    def __init__(self, config: SandboxConfig | None = None, preload: Sequence[str] = ()):
        self.config = config or SandboxConfig()
        self.preload = tuple(preload)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        workers = [_Worker(self.config, self.preload) for _ in range(self.config.workers)]
        try:
            isolations = {w.wait_ready() for w in workers}
        except SandboxUnavailable:
            for w in workers:
                w.close()
            raise
        self.isolation = isolations.pop()
        weaker = self.isolation.mode != "full"
        (log.warning if weaker else log.info)("sandbox pool: %d workers, isolation %s%s", len(workers),
                                               self.isolation.summary(), " (weaker, as configured: see the README's "
                                               "guarantees per mode)" if weaker else "")
        for w in workers:
            self._idle.put(w)
        self._all = workers
        self._executor = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="sandbox")

    @property
    def worker_uids(self) -> list[int]:
        """The uids the code runs as (per-worker uids), to check that none of its processes survive a run
        (the driver, under a uid of its own, lives as long as its worker)."""
        from rftkit.sandbox.worker import UID_BASE

        return [UID_BASE + w.proc.pid for w in self._all] if self.isolation.user == "per-worker-uid" else []

    def run(self, job: Job) -> ExecResult:
        key = new_key()  # fresh per run; for a split harness it reaches only the driver
        request: dict[str, Any] = {"harness": job.harness, "payload": job.payload, "timeout_s": job.timeout_s}
        blob = None
        if job.secret is not None:
            request["has_secret"] = True
            blob = json.dumps({**job.secret, "key": key.hex()}).encode()
        else:
            request["key"] = key
        worker = self._idle.get()
        try:
            send_message(worker.proc.stdin, request, blob=blob)
            reply = worker.receive(job.timeout_s + _RESPONSE_GRACE_S)
            if reply is None:
                raise RuntimeError("worker gave no answer")
            channel = recv_blob(worker.proc.stdout)
        except (OSError, RuntimeError, EOFError, ValueError) as exc:
            worker = self._replace(worker)
            return self._failed(job, f"sandbox worker failed ({exc}); it was restarted")
        finally:
            self._idle.put(worker)
        records, bad = parse_channel(channel, key)
        return ExecResult(records=records, done=any(r.get("done") is True for r in records),
                          exit_code=reply["exit_code"], signal=reply["signal"], timed_out=reply["timed_out"],
                          wall_s=reply["wall_s"], stdout=reply["data"]["stdout"].decode(errors="replace"),
                          stderr=reply["data"]["stderr"].decode(errors="replace"), truncated=reply["truncated"],
                          isolation=self.isolation, unauthenticated_lines=bad, scratch_full=reply["scratch_full"])

    def run_many(self, jobs: Sequence[Job]) -> list[ExecResult]:
        return list(self._executor.map(self.run, jobs))

    def _replace(self, worker: _Worker) -> _Worker:
        worker.close()
        fresh = _Worker(self.config, self.preload)
        fresh.wait_ready()
        self._all = [fresh if w is worker else w for w in self._all]
        return fresh

    def _failed(self, job: Job, message: str) -> ExecResult:
        return ExecResult(records=[], done=False, exit_code=None, signal=None, timed_out=False, wall_s=0.0,
                          stdout="", stderr="", truncated={}, isolation=self.isolation, error=message)

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        for worker in self._all:
            worker.close()


_POOLS: dict[tuple, SandboxPool] = {}
_POOLS_LOCK = threading.Lock()


def get_pool(config: SandboxConfig, preload: Sequence[str] = ()) -> SandboxPool:
    """A shared pool per (limits, preloaded modules); started on first use, closed at exit."""
    key = (config, tuple(preload))
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = SandboxPool(config, preload)
        return _POOLS[key]


@atexit.register
def close_all_pools() -> None:
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()
