"""`function`: a grader written as a plain Python function in the user's own code.

`function: "my_rewards:brevity"` (a module on sys.path) or `"path/to/rewards.py:brevity"`.
Two signatures are accepted unchanged:
- TRL's reward function `f(prompts, completions, **kwargs) -> list[float | None]`: called once
  per batch with every example field as a keyword list (TRL passes dataset columns the same
  way); `None` means no signal and masks the completion, as in TRL. Conversational examples
  get TRL's conversational shapes (prompts: lists of turns, completions: `[{"role":
  "assistant", "content": ...}]`).
- `f(example, completion) -> float | Grade`: one completion at a time.

`range: [lo, hi]` maps the function's scale onto [0, 1] (TRL rewards are often -1..1); values
outside are clamped and the reason says so. NaN or infinity is an error, never a reward.
This runs user code in-process: it is trusted code, like the rest of the user's config.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from pydantic import Field, field_validator

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, check_ordered_range, clamp01, register


def load_function(target: str) -> Callable[..., Any]:
    """Import `module:attr` or `file.py:attr`; raises ValueError with what went wrong."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{target!r}: expected 'module:function' or 'path/to/file.py:function'")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            if not path.is_file():
                raise ValueError(f"{target!r}: file {module_name!r} not found")
            spec = importlib.util.spec_from_file_location(f"rftkit_user_{path.stem}_{abs(hash(path))}", path)
            assert spec is not None and spec.loader is not None
            module = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
            if spec.name not in sys.modules:
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ValueError:
        raise
    except Exception as exc:  # the user's module may fail in any way; say which and why
        raise ValueError(f"{target!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise ValueError(f"{target!r}: {module_name!r} has no callable {attr!r}")
    return func


def detect_style(func: Callable[..., Any]) -> str:
    params = list(inspect.signature(func).parameters)
    return "trl" if params[:2] == ["prompts", "completions"] else "example"


class FunctionParams(GraderParams):
    function: str = Field(description="'module:function' or 'path/to/file.py:function'.")
    style: Literal["auto", "trl", "example"] = Field("auto", description="auto: TRL style "
                                                     "when the first parameters are (prompts, completions).")
    range: tuple[float, float] = Field((0.0, 1.0), description="The function's scale, mapped onto [0, 1].")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments on every call.")

    @field_validator("function")
    @classmethod
    def _importable(cls, target: str) -> str:
        load_function(target)  # fail at config time, not at the first training step
        return target

    _ordered = field_validator("range")(check_ordered_range)


@dataclass(frozen=True)
class FunctionGrader:
    name: str
    func: Callable[..., Any]
    style: str
    range: tuple[float, float]
    kwargs: dict[str, Any]

    def _to_grade(self, value: Any) -> Grade:
        if isinstance(value, Grade):
            return value
        if value is None:
            return Grade(0.0, f"{self.name} returned None: no signal", masked=True)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"returned {type(value).__name__}, expected a number or None")
        if not math.isfinite(value):
            raise ValueError(f"returned {value}, not a finite number")
        lo, hi = self.range
        scaled = (value - lo) / (hi - lo)
        note = "" if 0.0 <= scaled <= 1.0 else f" (outside range {lo:g}..{hi:g}, clamped)"
        return Grade(clamp01(scaled), f"{self.name} returned {value:g}{note}", {"raw": value})

    def grade(self, example: Example, completion: str) -> Grade:
        return self.grade_batch([example], [completion])[0]

    def _grade_one(self, example: Example, completion: str) -> Grade:
        try:
            return self._to_grade(self.func(example, completion, **self.kwargs))
        except Exception as exc:  # user code: its failure on one completion is that completion's error
            return Grade(0.0, f"{self.name} raised {type(exc).__name__}: {str(exc)[:200]}", error=True)

    def grade_batch(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]:
        if self.style == "example":
            return [self._grade_one(ex, c) for ex, c in zip(examples, completions)]
        conversational = any(ex.messages is not None for ex in examples)
        prompts = [ex.chat() if conversational else ex.prompt_text() for ex in examples]
        shaped = [[{"role": "assistant", "content": c}] for c in completions] if conversational else list(completions)
        columns: dict[str, list[Any]] = {}
        for key in sorted({k for ex in examples for k in ex.fields}):
            columns[key] = [ex.fields.get(key) for ex in examples]
        values = self.func(prompts, shaped, **columns, **self.kwargs)
        if not isinstance(values, (list, tuple)) or len(values) != len(completions):
            raise ValueError(f"{self.name}: a TRL reward function must return a list of {len(completions)} "
                             f"values, got {type(values).__name__}")
        grades = []
        for value in values:
            try:
                grades.append(self._to_grade(value))
            except (TypeError, ValueError) as exc:  # one bad value is that completion's error, not the batch's
                grades.append(Grade(0.0, f"{self.name} {exc}", error=True))
        return grades


@register("function", FunctionParams, "A Python function from your code: TRL's f(prompts, completions, **kwargs) "
          "-> list[float | None] or f(example, completion) -> float | Grade")
def _build(name: str, p: FunctionParams) -> FunctionGrader:
    func = load_function(p.function)
    style = detect_style(func) if p.style == "auto" else p.style
    return FunctionGrader(name, func, style, tuple(p.range), dict(p.kwargs))
