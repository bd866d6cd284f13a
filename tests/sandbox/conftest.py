"""Fixtures for the sandbox tests (defined in sandbox_support)."""

from sandbox_support import recorder, tight_pool  # noqa: F401
