"""`openai`: accept an OpenAI RFT grader JSON verbatim and run it with rftkit's graders.

    - {name: reward, type: openai, grader_json: graders/reward.json}
    - {name: reward, type: openai, grader: {type: string_check, ...}, judge: {base_url: "http://127.0.0.1:8000/v1"}}

Mapping (OpenAI type -> rftkit type): string_check -> string_check, text_similarity ->
text_similarity (the score is the metric, as OpenAI's reward; pass_threshold is reported),
score_model -> score_model, label_model -> label_model, multi -> multi (sub-graders mapped
recursively, calculate_output kept), python -> the sandboxed `python` grader. `judge:`
overrides where model graders run (base_url, api_key_env, backend, model, timeouts), since the
OpenAI JSON only names a model. Unknown keys are errors naming their path in the JSON.

As OpenAI accepts them: a message's `content` may be a string, one content object
(`{"type": "input_text", "text": ...}`) or a list of them; a multi grader's `graders` may be a
mapping from names to graders (the graders guide) or a list of graders with names (the API
reference). In `calculate_output` each name stands for that grader's output as OpenAI computes
it: a score_model's result on its `range` (truncated to the range), a python grader's returned
float, text_similarity's metric, string_check's and label_model's 0 or 1 (multi's
`formula_sees: outputs`); only the multi grader's own result is clamped to [0, 1].
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from rftkit.graders.base import GRADER_TYPES, Grader, GraderParams, register
from rftkit.graders.multi import graders_by_name

_KEYS = {
    "string_check": {"input", "reference", "operation"},
    "text_similarity": {"input", "reference", "evaluation_metric", "pass_threshold"},
    "score_model": {"input", "model", "range", "sampling_params", "pass_threshold"},
    "label_model": {"input", "model", "labels", "passing_labels"},
    "python": {"source", "image_tag"},
    "multi": {"graders", "calculate_output"},
}
_JUDGE_OVERRIDES = {"base_url", "api_key_env", "backend", "model", "timeout_s", "max_retries", "retry_backoff_s",
                    "max_concurrency", "reply_instruction"}
PYTHON_GRADER_MODULE = "rftkit.graders.python_grader"


def _python_type_available() -> bool:
    if "python" in GRADER_TYPES:
        return True
    try:
        importlib.import_module(PYTHON_GRADER_MODULE)
    except ImportError:
        return False
    return "python" in GRADER_TYPES


def to_native(grader: Any, judge: dict[str, Any], where: str = "grader") -> dict[str, Any]:
    """Translate one OpenAI grader object into an rftkit spec `{type, **params}`; ValueError names `where`."""
    if not isinstance(grader, dict) or not isinstance(grader.get("type"), str):
        raise ValueError(f"{where}: expected an object with a string 'type'")
    kind = grader["type"]
    if kind not in _KEYS:
        raise ValueError(f"{where}.type: OpenAI grader type {kind!r} is not supported; supported: {', '.join(_KEYS)}")
    unknown = set(grader) - _KEYS[kind] - {"type", "name"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} for {kind}; allowed: {sorted(_KEYS[kind])}")
    params = {k: v for k, v in grader.items() if k not in ("type", "name")}
    if kind in ("score_model", "label_model"):
        if "base_url" not in judge and judge.get("backend", "openai") == "openai":
            params["api_key_env"] = "OPENAI_API_KEY"  # what OpenAI's own endpoint needs
        params.update(judge)
    elif kind == "python":
        if not _python_type_available():
            raise ValueError(f"{where}: OpenAI python graders run in rftkit's sandboxed 'python' grader "
                             f"({PYTHON_GRADER_MODULE}), which is not available in this installation")
        params.pop("image_tag", None)  # OpenAI's container image; the local sandbox has its own
    elif kind == "multi":
        subs = graders_by_name(params.get("graders"), f"{where}.graders")
        if not isinstance(subs, dict) or not subs:
            raise ValueError(f"{where}.graders: expected an object mapping names to graders, or a list of graders "
                             "with names")
        params["graders"] = {name: to_native(sub, judge, f"{where}.graders.{name}") for name, sub in subs.items()}
        params["formula_sees"] = "outputs"  # OpenAI's formula computes with each grader's own output
    return {"type": kind, **params}


def _validate_native(spec: dict[str, Any], where: str) -> None:
    params = {k: v for k, v in spec.items() if k != "type"}
    try:
        GRADER_TYPES[spec["type"]].params.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{where}.{key}: {err['msg'].removeprefix('Value error, ')}") from None


def _check_translation(grader: Any, judge: dict[str, Any], where: str) -> None:
    from rftkit.graders import load_builtin_graders

    load_builtin_graders()
    _validate_native(to_native(grader, judge, where), where)


def load_grader_json(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"file {path!r} not found (paths are relative to the working directory)")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


class OpenAIGraderParams(GraderParams):
    judge: dict[str, Any] = Field(default_factory=dict, description="Where score_model / label_model graders run: "
                                  f"any of {', '.join(sorted(_JUDGE_OVERRIDES))}.")
    grader_json: str | None = Field(None, description="Path to an OpenAI grader JSON file.")
    grader: dict[str, Any] | None = Field(None, validate_default=True, description="The OpenAI grader inline.")

    @field_validator("judge")
    @classmethod
    def _known_overrides(cls, judge: dict[str, Any]) -> dict[str, Any]:
        unknown = set(judge) - _JUDGE_OVERRIDES
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_JUDGE_OVERRIDES)}")
        return judge

    @field_validator("grader_json")
    @classmethod
    def _translate_file(cls, path: str | None, info) -> str | None:
        if path is not None and "judge" in info.data:
            _check_translation(load_grader_json(path), info.data["judge"], "grader_json")
        return path

    @field_validator("grader")
    @classmethod
    def _translate_inline(cls, grader: dict[str, Any] | None, info) -> dict[str, Any] | None:
        if "grader_json" in info.data and (grader is None) == (info.data["grader_json"] is None):
            raise ValueError("give exactly one of 'grader_json' (a file) or 'grader' (inline)")
        if grader is not None and "judge" in info.data:
            _check_translation(grader, info.data["judge"], "grader")
        return grader

    def native_spec(self) -> dict[str, Any]:
        grader = load_grader_json(self.grader_json) if self.grader_json is not None else self.grader
        return to_native(grader, self.judge)


@register("openai", OpenAIGraderParams, "An OpenAI RFT grader JSON (string_check, text_similarity, score_model, "
          "label_model, python, multi) run verbatim with rftkit's graders")
def _build(name: str, p: OpenAIGraderParams) -> Grader:
    spec = p.native_spec()
    grader_type = GRADER_TYPES[spec["type"]]
    return grader_type.build(name, grader_type.params.model_validate({k: v for k, v in spec.items() if k != "type"}))

