"""`python`: OpenAI's python grader. User code defines `grade(sample, item) -> float`; it runs in the
sandbox (it handles model output, and a typo'd loop must not hang training) with a time limit.

    - {name: py, type: python, source: "def grade(sample, item):\\n    return float(...)"}
    - {name: py, type: python, path: graders/my_grader.py, timeout_s: 2}

`sample` is {"output_text": completion, "output_json": the completion parsed as JSON or None};
`item` is the dataset row (prompt/messages and every field). The returned number is clamped to
[0, 1] (NaN -> 0). A grader that raises, returns a non-number or times out gives an error grade
(`grader/errors`), not a silent 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from pydantic import Field, model_validator

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, clamp01, register
from rftkit.graders.bounded import loads_bounded
from rftkit.sandbox.config import SandboxConfig


class PythonGraderParams(GraderParams):
    source: str | None = Field(None, description="Python source defining grade(sample, item) -> float.")
    path: str | None = Field(None, description="A .py file defining grade(sample, item) (instead of source).")
    timeout_s: float = Field(5.0, gt=0, le=600, description="Wall-clock limit of one grading call.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="Limits and isolation.")

    @model_validator(mode="after")
    def _one_source(self) -> "PythonGraderParams":
        if (self.source is None) == (self.path is None):
            raise ValueError("give exactly one of 'source' (inline code) or 'path' (a .py file)")
        if self.path is not None and not Path(self.path).is_file():
            raise ValueError(f"path: file {self.path!r} not found (paths are relative to the working directory)")
        code = self.source if self.source is not None else Path(self.path).read_text(encoding="utf-8")
        try:
            compile(code, self.path or "<source>", "exec")
        except SyntaxError as exc:
            raise ValueError(f"{'path' if self.path else 'source'}: not valid Python: {exc}") from None
        return self

    def code(self) -> str:
        return self.source if self.source is not None else Path(self.path).read_text(encoding="utf-8")


def _sample(completion: str) -> dict[str, Any]:
    try:
        parsed = loads_bounded(completion)
    except ValueError:  # not JSON, or nested deeper than MAX_JSON_DEPTH
        parsed = None
    return {"output_text": completion, "output_json": parsed}


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(row, default=str))  # the grader sees what a JSONL row can hold


class PythonGrader:
    def __init__(self, name: str, params: PythonGraderParams):
        self.name, self.params, self._code = name, params, params.code()

    def grade(self, example: Example, completion: str) -> Grade:
        return self.grade_batch([example], [completion])[0]

    def grade_batch(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]:
        from rftkit.sandbox import Job, get_pool

        prepared: list[Job | Grade] = []
        for example, completion in zip(examples, completions):
            try:  # a row that cannot become JSON (nested past the recursion limit) fails alone
                payload = {"code": self._code, "sample": _sample(completion), "item": _json_safe(example.to_row())}
                prepared.append(Job("rftkit.sandbox.harness:run_grader", payload, self.params.timeout_s))
            except (RecursionError, ValueError, TypeError) as exc:
                prepared.append(Grade(0.0, f"example {example.id} cannot be passed to grade() as JSON: "
                                      f"{type(exc).__name__}", error=True))
        results = iter(get_pool(self.params.sandbox).run_many([p for p in prepared if isinstance(p, Job)]))
        return [p if isinstance(p, Grade) else self._to_grade(next(results)) for p in prepared]

    @staticmethod
    def _to_grade(result) -> Grade:
        record = result.first("score")
        if record is None:
            problem = next((r.get(k) for r in result.records for k in ("error", "missing") if r.get(k)), None)
            why = problem or result.status_text()
            tail = result.stderr.strip().splitlines()[-1:] if result.stderr.strip() else []
            return Grade(0.0, f"python grader failed: {why}" + (f" ({tail[0][:200]})" if tail else ""), error=True)
        try:
            raw = float(record["score"])
        except (TypeError, ValueError):
            return Grade(0.0, f"python grader returned {str(record['score'])[:60]!r}, not a number", error=True)
        score = clamp01(raw)
        note = "" if raw == score or math.isnan(raw) and score == 0 else f" (clamped from {raw:g})"
        # "raw": what an OpenAI multi grader's formula sees (grade()'s own return value)
        details = {"raw": raw} if math.isfinite(raw) else {}
        return Grade(score, f"grade() returned {raw:g}{note}", details)


@register("python", PythonGraderParams, "OpenAI-style python grader: your grade(sample, item) -> float, inline "
          "or from a file, run in the sandbox with a time limit")
def _build(name: str, params: PythonGraderParams) -> PythonGrader:
    return PythonGrader(name, params)
