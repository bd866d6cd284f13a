"""The grader contract: (example, completion) -> Grade, plus the registry of grader types.

A grader is small, pure and deterministic: no torch, no trainer imports. Each grader type
registers a pydantic model for its parameters, so that a config error names the key
(`graders[1].pattern`) and the allowed values, and a builder that turns those parameters
into an object with a `grade` method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel, ConfigDict

from rftkit.data import Example


@dataclass(frozen=True)
class Grade:
    """The verdict on one completion.

    score:   in [0, 1]; a wrong answer is 0 with a reason.
    reason:  one human-readable line, shown in samples.jsonl and `rft grade`.
    details: anything structured (per-test results, extracted answer, ...).
    error:   the grader raised; the score is 0 and `grader/errors` counts it.
    masked:  no signal (infrastructure failure, or a TRL-style function returned None);
             the completion is left out of the gradient rather than scored 0.
    flags:   reward-hacking detections, e.g. ("noop",) -> `reward_hack/noop` in metrics.
    """

    score: float
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: bool = False
    masked: bool = False
    flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.score, (int, float)) or math.isnan(self.score) or not 0.0 <= self.score <= 1.0:
            raise ValueError(f"Grade.score must be a number in [0, 1], got {self.score!r}")


def clamp01(value: float) -> float:
    """Clamp to [0, 1]; NaN becomes 0 (a NaN reward would poison the advantage)."""
    if value != value:  # NaN
        return 0.0
    return min(1.0, max(0.0, float(value)))


def check_ordered_range(value: tuple[float, float]) -> tuple[float, float]:
    """Validator for a `range: [low, high]` parameter: the first must be below the second."""
    if not value[0] < value[1]:
        raise ValueError(f"range {list(value)}: need min < max")
    return value


@runtime_checkable
class Grader(Protocol):
    name: str

    def grade(self, example: Example, completion: str) -> Grade: ...


@runtime_checkable
class BatchGrader(Protocol):
    """Optional: graders that are cheaper in batches (LLM judges, TRL reward functions).

    A batch grader whose class sets `accepts_context = True` is also passed `context=` (a
    `BatchContext`, or None when the caller has none)."""

    name: str

    def grade_batch(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]: ...


@dataclass(frozen=True)
class BatchContext:
    """What the caller knows about a batch besides its text; TRL reward functions read it.

    completion_ids: each completion's token ids without padding ([N][T_i]); None when the
                    caller has none (`rft grade --samples` without a loadable tokenizer).
    global_step, max_steps: training progress, passed to TRL functions as `trainer_state`.
    """

    completion_ids: Sequence[Sequence[int]] | None = None
    global_step: int = 0
    max_steps: int = 0

    def rows(self, index: Sequence[int]) -> "BatchContext":
        """The context of a sub-batch (the completions at `index`, in that order)."""
        ids = None if self.completion_ids is None else [self.completion_ids[i] for i in index]
        return BatchContext(ids, self.global_step, self.max_steps)


class BatchShapeError(ValueError):
    """A batch grader returned the wrong number of grades: a bug in the grader, failed as a whole
    batch (regrading one row at a time would hide it)."""


class GraderParams(BaseModel):
    """Base for every grader type's parameters: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class GraderType:
    params: type[GraderParams]
    build: Callable[[str, Any], Grader]
    summary: str


GRADER_TYPES: dict[str, GraderType] = {}


Builder = Callable[[str, Any], Grader]


def register(type_name: str, params: type[GraderParams], summary: str) -> Callable[[Builder], Builder]:
    """Decorator registering `build(name, params) -> Grader` under `type_name`."""

    def decorate(build: Callable[[str, Any], Grader]) -> Callable[[str, Any], Grader]:
        if type_name in GRADER_TYPES:
            raise ValueError(f"grader type {type_name!r} registered twice")
        GRADER_TYPES[type_name] = GraderType(params=params, build=build, summary=summary)
        return build

    return decorate
