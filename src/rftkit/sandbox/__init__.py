"""Running untrusted (model-written) code: limits, isolation, a warm worker pool, authenticated results.

    pool = get_pool(SandboxConfig())
    result = pool.run(Job("rftkit.sandbox.harness:run_tests", payload, timeout_s=5))

See docs/sandbox.md for what is guaranteed and what is not.
"""

from rftkit.sandbox.config import Isolation, SandboxConfig
from rftkit.sandbox.pool import ExecResult, Job, SandboxPool, SandboxUnavailable, close_all_pools, get_pool

__all__ = ["ExecResult", "Isolation", "Job", "SandboxConfig", "SandboxPool", "SandboxUnavailable",
           "close_all_pools", "get_pool"]
