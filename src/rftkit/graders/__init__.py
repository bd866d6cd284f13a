"""Grader library: built-in grader types register themselves in `GRADER_TYPES` on import."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from rftkit.graders.base import GRADER_TYPES, Grade, Grader, GraderParams, clamp01, register

if TYPE_CHECKING:
    from rftkit.config import GraderSpec

# Modules whose import registers grader types. Heavy optional dependencies are imported
# inside the graders that need them, so this list stays cheap to import.
_BUILTIN_MODULES = (
    "rftkit.tasks.countdown",
    "rftkit.tasks.gsm8k",
    "rftkit.tasks.math",
    "rftkit.graders.match",
    "rftkit.graders.similarity",
    "rftkit.graders.rules",
    "rftkit.graders.instructions",
    "rftkit.graders.ifeval",
    "rftkit.graders.checklist",
    "rftkit.graders.rank",
    "rftkit.graders.judge",
    "rftkit.graders.multi",
    "rftkit.graders.functions",
    "rftkit.graders.openai_compat",
    "rftkit.graders.code",
    "rftkit.graders.python_grader",
    "rftkit.tasks.triton",
    "rftkit.envs.graders",
)
_OPTIONAL_MODULES: tuple[str, ...] = ()


def load_builtin_graders() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


@dataclass(frozen=True)
class WeightedGrader:
    grader: Grader
    weight: float


def validate_grader_specs(specs: list["GraderSpec"]) -> None:
    """Check types, names and parameters; errors name `graders[i].key`."""
    load_builtin_graders()
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        where = f"graders[{i}]"
        if spec.name in seen:
            raise ValueError(f"{where}.name: {spec.name!r} is used twice; grader names must be unique")
        seen.add(spec.name)
        if spec.type not in GRADER_TYPES:
            raise ValueError(f"{where}.type: unknown grader type {spec.type!r}; allowed: "
                             f"{', '.join(sorted(GRADER_TYPES))}")
        try:
            GRADER_TYPES[spec.type].params.model_validate(spec.params())
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"])
                msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
                allowed = ", ".join(sorted(GRADER_TYPES[spec.type].params.model_fields))
                hint = f" (allowed for {spec.type}: name, type, weight{', ' + allowed if allowed else ''})" \
                    if err["type"] == "extra_forbidden" else ""
                problems.append(f"{where}.{key}: {msg}{hint}")
            raise ValueError("; ".join(problems)) from None


def build_grader(spec: "GraderSpec") -> Grader:
    load_builtin_graders()
    grader_type = GRADER_TYPES[spec.type]
    return grader_type.build(spec.name, grader_type.params.model_validate(spec.params()))


def build_graders(specs: list["GraderSpec"]) -> list[WeightedGrader]:
    return [WeightedGrader(build_grader(spec), spec.weight) for spec in specs]


__all__ = ["GRADER_TYPES", "Grade", "Grader", "GraderParams", "WeightedGrader", "build_grader", "build_graders",
           "clamp01", "load_builtin_graders", "register", "validate_grader_specs"]
