"""`checklist`: weighted sub-checks normalised to [0, 1].

score = sum_i w_i * passed_i / sum_i w_i. This is the shape of the seed's formatting reward
("half for the tags, half if the content parses"): cheap, transparent partial credit that
tells the model which part of the format it got right. Checks that only forbid something
(not_contains, not_regex, max_*) pass vacuously on an empty output, so an empty output
scores 0 outright rather than collecting them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, register
from rftkit.graders.bounded import REGEX_TIMEOUT_S, loads_bounded, tag_contents
from rftkit.graders.templates import OUTPUT_TEXT, Template, check_template, compile_template, sample_errors_score_zero

CheckKind = Literal["contains", "icontains", "not_contains", "regex", "not_regex", "starts_with", "ends_with",
                    "tag", "min_chars", "max_chars", "min_words", "max_words", "json"]
_NUMERIC = ("min_chars", "max_chars", "min_words", "max_words")
_TEXT = ("contains", "icontains", "not_contains", "regex", "not_regex", "starts_with", "ends_with", "tag")


class ChecklistItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Shown in the reason when the check fails.")
    check: CheckKind
    value: str | int | None = Field(None, validate_default=True, description="The text, pattern, tag name or count.")
    weight: float = Field(1.0, gt=0)

    @field_validator("value")
    @classmethod
    def _value_fits(cls, value: str | int | None, info) -> str | int | None:
        kind = info.data.get("check")
        if kind in _NUMERIC and (not isinstance(value, int) or value < 0):
            raise ValueError(f"check {kind} needs a non-negative integer value")
        if kind in _TEXT and (not isinstance(value, str) or not value):
            raise ValueError(f"check {kind} needs a non-empty string value")
        if kind in ("regex", "not_regex"):
            try:
                regex.compile(value)
            except regex.error as exc:
                raise ValueError(f"invalid regex {value!r}: {exc}") from None
        if kind == "tag" and not re.fullmatch(r"[A-Za-z][\w\-]*", value):
            raise ValueError(f"tag name {value!r} must be letters, digits, _ or -")
        return value


def _passes(item: ChecklistItem, text: str) -> bool:
    kind, value = item.check, item.value
    if kind == "contains":
        return value in text
    if kind == "icontains":
        return value.casefold() in text.casefold()
    if kind == "not_contains":
        return value not in text
    if kind in ("regex", "not_regex"):
        found = regex.search(value, text, timeout=REGEX_TIMEOUT_S) is not None
        return found if kind == "regex" else not found
    if kind == "starts_with":
        return text.lstrip().startswith(value)
    if kind == "ends_with":
        return text.rstrip().endswith(value)
    if kind == "tag":  # exactly one non-empty <value>...</value> pair
        found = tag_contents(text, value)
        return len(found) == 1 and bool(found[0].strip())
    if kind == "json":
        try:
            loads_bounded(text, parse_constant=_reject)
            return True
        except ValueError:  # not JSON, NaN/Infinity, or nested too deep
            return False
    count = len(text) if kind.endswith("chars") else len(text.split())
    return count >= value if kind.startswith("min") else count <= value


def _reject(name: str) -> None:
    raise ValueError(name)


class ChecklistParams(GraderParams):
    input: str = Field(OUTPUT_TEXT, description="Template of the text to check.")
    items: list[ChecklistItem] = Field(min_length=1, description="The weighted checks.")
    _check = field_validator("input")(check_template)

    @field_validator("items")
    @classmethod
    def _unique_names(cls, items: list[ChecklistItem]) -> list[ChecklistItem]:
        names = [i.name for i in items]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"item names must be unique; repeated: {duplicates}")
        return items


@dataclass(frozen=True)
class Checklist:
    name: str
    input: Template
    items: tuple[ChecklistItem, ...]

    @sample_errors_score_zero
    def grade(self, example: Example, completion: str) -> Grade:
        text = self.input.render(example, completion)
        if not text.strip():
            return Grade(0.0, "empty output")
        total = sum(i.weight for i in self.items)
        results = {}
        for item in self.items:
            try:
                results[item.name] = _passes(item, text)
            except TimeoutError:
                results[item.name] = False
        score = sum(i.weight for i in self.items if results[i.name]) / total
        failed = [name for name, ok in results.items() if not ok]
        reason = f"{len(self.items) - len(failed)}/{len(self.items)} checks pass" + \
            (f"; failed: {', '.join(failed)}" if failed else "")
        return Grade(min(score, 1.0), reason[:300], {"passed": results})


@register("checklist", ChecklistParams, "Weighted sub-checks (contains, regex, tag, lengths, json, ...) "
          "normalised to [0, 1]")
def _build(name: str, p: ChecklistParams) -> Checklist:
    return Checklist(name, compile_template(p.input), tuple(p.items))
