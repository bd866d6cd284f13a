"""Fixtures for the sandbox tests (defined in sandbox_support)."""

from sandbox_support import process_cap_enforced, recorder, tight_pool  # noqa: F401
