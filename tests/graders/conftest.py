"""Shared fixtures for the grader tests."""

from __future__ import annotations

from typing import Any

import pytest

from rftkit.data import Example
from rftkit.graders import GRADER_TYPES, load_builtin_graders

load_builtin_graders()


def make(type_name: str, **params: Any):
    """Validate params as the config would, then build the grader."""
    grader_type = GRADER_TYPES[type_name]
    return grader_type.build("g", grader_type.params.model_validate(params))


def ex(**fields: Any) -> Example:
    return Example(id=str(fields.pop("id", "e1")), prompt=fields.pop("prompt", "question?"), fields=fields)


@pytest.fixture
def judge_server():
    from .judge_server import JudgeServer

    server = JudgeServer().start()
    yield server
    server.shutdown()
    server.server_close()
