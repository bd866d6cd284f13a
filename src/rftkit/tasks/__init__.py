"""Built-in tasks: seeded generators that make `Example`s (and register their graders)."""

from __future__ import annotations

from typing import Any, Callable

from rftkit.data import Example
from rftkit.tasks import code, countdown, triton

# name -> generate(n, seed, options) -> list[Example]
GENERATORS: dict[str, Callable[[int, int, dict[str, Any]], list[Example]]] = {
    "countdown": countdown.generate,
    "code": code.generate,
    "triton": triton.generate,
}
