"""Deterministic rule graders: `regex` (must / must-not match), `json_schema`, `threshold`.

Regexes run through the `regex` package with a timeout: a pattern that backtracks
catastrophically on some adversarial completion costs one zero score, not a stalled step.
JSON is parsed strictly (NaN and Infinity are not JSON, whatever Python's json accepts).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import regex
from pydantic import Field, field_validator

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, clamp01, register
from rftkit.graders.match import ExtractParams, Extractor, Extraction, parse_number
from rftkit.graders.templates import OUTPUT_TEXT, SampleError, Template, TemplateError, check_template, \
    compile_template, parse_output_json, sample_errors_score_zero

REGEX_TIMEOUT_S = 1.0
_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)

# ---------------------------------------------------------------- regex


class RegexParams(GraderParams):
    input: str = Field(OUTPUT_TEXT, description="Template of the text to test.")
    must_match: list[str] = Field(default_factory=list, description="Patterns that must be found (re.search).")
    must_not_match: list[str] = Field(default_factory=list, validate_default=True,
                                      description="Patterns that must not be found.")
    ignore_case: bool = False
    multiline: bool = Field(False, description="^ and $ match at every line.")
    dotall: bool = Field(False, description=". matches newlines.")
    scoring: Literal["all", "fraction"] = Field("all", description="all: 1 only if every rule holds; fraction: "
                                                "share of rules that hold.")
    _check = field_validator("input")(check_template)

    @field_validator("must_match", "must_not_match")
    @classmethod
    def _compile(cls, patterns: list[str], info) -> list[str]:
        for i, pattern in enumerate(patterns):
            try:
                regex.compile(pattern)
            except regex.error as exc:
                raise ValueError(f"[{i}] invalid regex {pattern!r}: {exc}") from None
        if info.field_name == "must_not_match" and not patterns and info.data.get("must_match") == []:
            raise ValueError("give at least one pattern in must_match or must_not_match")
        return patterns


@dataclass(frozen=True)
class RegexRules:
    name: str
    input: Template
    rules: tuple[tuple[Any, bool], ...]  # (compiled pattern, must match?)
    scoring: str

    @sample_errors_score_zero
    def grade(self, example: Example, completion: str) -> Grade:
        text = self.input.render(example, completion)
        failed = []
        for pattern, wanted in self.rules:
            try:
                found = pattern.search(text, timeout=REGEX_TIMEOUT_S) is not None
            except TimeoutError:
                return Grade(0.0, f"regex {pattern.pattern!r} timed out after {REGEX_TIMEOUT_S:g}s on this output")
            if found != wanted:
                failed.append(("missing " if wanted else "forbidden ") + repr(pattern.pattern))
        held = len(self.rules) - len(failed)
        score = held / len(self.rules) if self.scoring == "fraction" else float(not failed)
        reason = "all rules hold" if not failed else f"{held}/{len(self.rules)} rules hold; " + ", ".join(failed)
        return Grade(score, reason[:300], {"failed": failed})


@register("regex", RegexParams, "Regex rules: must_match / must_not_match, scored all-or-nothing or by fraction")
def _build_regex(name: str, p: RegexParams) -> RegexRules:
    flags = (regex.IGNORECASE if p.ignore_case else 0) | (regex.MULTILINE if p.multiline else 0) | \
        (regex.DOTALL if p.dotall else 0)
    rules = tuple((regex.compile(pat, flags), True) for pat in p.must_match) + \
        tuple((regex.compile(pat, flags), False) for pat in p.must_not_match)
    return RegexRules(name, compile_template(p.input), rules, p.scoring)


# ---------------------------------------------------------------- json_schema


def load_schema(value: dict | str) -> dict:
    """A schema given inline or as a path to a .json file; raises ValueError if it is not a valid schema."""
    from jsonschema.validators import validator_for
    from jsonschema.exceptions import SchemaError

    if isinstance(value, str):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"schema file {value!r} not found")
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"schema file {value!r} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("a JSON schema must be an object")
    try:
        validator_for(value).check_schema(value)
    except SchemaError as exc:
        raise ValueError(f"invalid JSON schema: {exc.message}") from None
    return value


class JsonSchemaParams(GraderParams):
    input: str = Field(OUTPUT_TEXT, description="Template of the JSON text to check.")
    schema_: dict | str | None = Field(None, alias="schema", description="JSON schema, inline or a file path.")
    credit: Literal["all", "required_fields", "reference_fields"] = Field(
        "all", validate_default=True, description="all: 1 if the output validates; required_fields: share of the "
        "schema's required fields present and valid; reference_fields: share of the reference's fields equal.")
    reference: str | None = Field(None, validate_default=True, description="Template of the expected object "
                                  "(reference_fields), e.g. '{{item.expected}}'.")
    strip_code_fence: bool = Field(True, description="Grade the inside of a ```json fence if there is one.")
    _check = field_validator("input")(check_template)

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict | str | None) -> dict | None:
        return None if value is None else load_schema(value)

    @field_validator("credit")
    @classmethod
    def _credit_needs(cls, value: str, info) -> str:
        if "schema_" not in info.data:  # the schema itself was invalid; that error says enough
            return value
        schema = info.data["schema_"]
        if value in ("all", "required_fields") and schema is None:
            raise ValueError(f"credit: {value} needs a 'schema'")
        if value == "required_fields" and not schema.get("required"):
            raise ValueError("credit: required_fields needs a schema with a non-empty top-level 'required' list")
        return value

    @field_validator("reference")
    @classmethod
    def _reference_needed(cls, value: str | None, info) -> str | None:
        if info.data.get("credit") == "reference_fields" and value is None:
            raise ValueError("credit: reference_fields needs a 'reference' (e.g. '{{item.expected}}')")
        return None if value is None else check_template(value)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true != 1 (Python's bool is an int; JSON's is not)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


@dataclass(frozen=True)
class JsonSchema:
    name: str
    input: Template
    validator: Any  # a jsonschema Validator, or None
    credit: str
    reference: Template | None
    strip_code_fence: bool

    def _parse(self, text: str) -> Any:
        if self.strip_code_fence:
            fence = _FENCE_RE.search(text)
            text = fence.group(1) if fence else text
        return parse_output_json(text.strip())

    @sample_errors_score_zero
    def grade(self, example: Example, completion: str) -> Grade:
        data = self._parse(self.input.render(example, completion))
        try:  # the depth limit of parsing keeps this far from Python's recursion limit; this is a backstop
            errors = sorted(self.validator.iter_errors(data), key=lambda e: list(e.path)) if self.validator else []
        except RecursionError:
            return Grade(0.0, "output nests too deeply to validate")
        if self.credit == "all" or (self.credit == "reference_fields" and errors):
            if errors:
                where = "/".join(str(p) for p in errors[0].path) or "(root)"
                return Grade(0.0, f"schema violation at {where}: {errors[0].message}"[:300], {"errors": len(errors)})
            if self.credit == "all":
                return Grade(1.0, "valid against the schema")
        if self.credit == "required_fields":
            return self._required_credit(data, not errors)
        return self._reference_credit(data, example, completion)

    def _required_credit(self, data: Any, valid: bool) -> Grade:
        required = self.validator.schema["required"]
        if valid:
            return Grade(1.0, f"valid; all {len(required)} required fields present")
        if not isinstance(data, dict):
            return Grade(0.0, f"expected a JSON object, got {type(data).__name__}")
        properties = self.validator.schema.get("properties", {})
        bad = [key for key in required if key not in data or
               (key in properties and not self.validator.evolve(schema=properties[key]).is_valid(data[key]))]
        ok = len(required) - len(bad)
        return Grade(ok / len(required), f"{ok}/{len(required)} required fields present and valid; "
                     f"bad: {', '.join(bad)}"[:300], {"bad_fields": bad})

    def _reference_credit(self, data: Any, example: Example, completion: str) -> Grade:
        assert self.reference is not None
        expected = self.reference.value(example, completion)
        if isinstance(expected, str):
            try:
                expected = json.loads(expected)
            except json.JSONDecodeError:
                raise TemplateError(f"reference of example {example.id} is not a JSON object") from None
        if not isinstance(expected, dict) or not expected:
            raise TemplateError(f"reference of example {example.id} must be a non-empty JSON object")
        if not isinstance(data, dict):
            return Grade(0.0, f"expected a JSON object, got {type(data).__name__}")
        wrong = [key for key, value in expected.items() if key not in data or not _equal(data[key], value)]
        ok = len(expected) - len(wrong)
        return Grade(ok / len(expected), f"{ok}/{len(expected)} fields equal the reference"
                     + (f"; wrong or missing: {', '.join(wrong)}"[:250] if wrong else ""), {"wrong_fields": wrong})


@register("json_schema", JsonSchemaParams, "Parse JSON and validate with jsonschema; all-or-nothing, or partial "
          "credit per required field or per field equal to a reference")
def _build_json_schema(name: str, p: JsonSchemaParams) -> JsonSchema:
    from jsonschema.validators import validator_for

    validator = validator_for(p.schema_)(p.schema_) if p.schema_ is not None else None
    reference = compile_template(p.reference) if p.reference is not None else None
    return JsonSchema(name, compile_template(p.input), validator, p.credit, reference, p.strip_code_fence)


# ---------------------------------------------------------------- threshold


class ThresholdParams(ExtractParams):
    extract: Extraction = "last_number"
    input: str = Field(OUTPUT_TEXT, description="Template of the text to extract the number from.")
    min: float | None = Field(None, description="Lowest passing value (inclusive).")
    max: float | None = Field(None, description="Highest passing value (inclusive).")
    mode: Literal["pass", "linear"] = Field("pass", validate_default=True, description="pass: 1 inside [min, max]; "
                                            "linear: (x - min) / (max - min), clamped to [0, 1].")
    _check = field_validator("input")(check_template)

    @field_validator("mode")
    @classmethod
    def _bounds(cls, value: str, info) -> str:
        low, high = info.data.get("min"), info.data.get("max")
        if low is None and high is None:
            raise ValueError("give 'min', 'max' or both")
        if value == "linear" and (low is None or high is None or not low < high):
            raise ValueError("mode: linear needs both min and max with min < max")
        if low is not None and high is not None and low > high:
            raise ValueError(f"min ({low}) is greater than max ({high})")
        return value


@dataclass(frozen=True)
class Threshold:
    name: str
    input: Template
    extractor: Extractor
    low: float | None
    high: float | None
    mode: str

    @sample_errors_score_zero
    def grade(self, example: Example, completion: str) -> Grade:
        answer, why = self.extractor(self.input.render(example, completion))
        value = parse_number(answer) if answer is not None else None
        if value is None:
            return Grade(0.0, why if answer is None else f"{answer[:40]!r} is not a number")
        if not math.isfinite(value):  # an 'inf' must not sail past a min bound
            raise SampleError(f"{answer!r} is not a finite number")
        details = {"value": value}
        if self.mode == "linear":
            assert self.low is not None and self.high is not None
            score = clamp01((value - self.low) / (self.high - self.low))
            return Grade(score, f"{value:g} on [{self.low:g}, {self.high:g}] -> {score:.3f}", details)
        inside = (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
        low = "-inf" if self.low is None else f"{self.low:g}"
        bounds = f"[{low}, {'inf' if self.high is None else f'{self.high:g}'}]"
        return Grade(float(inside), f"{value:g} {'inside' if inside else 'outside'} {bounds}", details)


@register("threshold", ThresholdParams, "1 if a number extracted from the output lies within [min, max] "
          "(or linear partial credit between them)")
def _build_threshold(name: str, p: ThresholdParams) -> Threshold:
    return Threshold(name, compile_template(p.input), p.extractor(), p.min, p.max, p.mode)
