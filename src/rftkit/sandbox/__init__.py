"""Running untrusted (model-written) code: limits, isolation, a warm worker pool, authenticated results.

    pool = get_pool(SandboxConfig())
    result = pool.run(Job("rftkit.sandbox.proxy:run_tests", {"code": code, "entry_point": "f"}, 5.0,
                        secret={"tests": tests, "noop": False}))

See the README section on the sandbox for what is guaranteed and what is not. Names are imported lazily so that the
worker processes, which import `rftkit.sandbox.zygote`, do not load pydantic and the pool machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Isolation": "config", "SandboxConfig": "config", "ExecResult": "pool", "Job": "pool",
            "SandboxPool": "pool", "SandboxUnavailable": "pool", "close_all_pools": "pool", "get_pool": "pool"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rftkit.sandbox' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rftkit.sandbox.{_EXPORTS[name]}"), name)
