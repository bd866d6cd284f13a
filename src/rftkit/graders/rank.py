"""Rank-based graders: `rank` (where does the reference appear in the output's list?) and `top_n`
(is an acceptable answer among the first N predictions?), the seed's rank-based grading and
multiple response validation.

The output's list is read as a JSON array, numbered/bulleted lines, or comma/semicolon
separated items (`list_format: auto` tries them in that order). Items are compared after
stripping and case-folding; repeats are dropped before positions are counted, and only the
first `max_items` (rank) or `n` (top_n) items count, so listing every possible answer earns
nothing beyond its position.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, register
from rftkit.graders.bounded import loads_bounded
from rftkit.graders.templates import OUTPUT_TEXT, Template, TemplateError, check_template, compile_template, \
    sample_errors_score_zero

ListFormat = Literal["auto", "json", "lines", "comma"]
_MARKER_RE = re.compile(r"^\s*(?:\(?\d+[.):]|[-*\u2022]|#\d+[.:]?)\s*")
_FENCE_RE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL)


def _json_list(text: str) -> list[str] | None:
    fence = _FENCE_RE.search(text)
    body = (fence.group(1) if fence else text).strip()
    if not body.startswith("["):
        return None
    try:
        value = loads_bounded(body)
    except ValueError:  # not JSON, or nested too deep to be a list of answers
        return None
    return [v if isinstance(v, str) else json.dumps(v) for v in value] if isinstance(value, list) else None


def parse_list(text: str, list_format: str) -> list[str]:
    """The output's items in order, without list markers or empty entries."""
    items: list[str] | None = None
    if list_format in ("auto", "json"):
        items = _json_list(text)
        if items is None and list_format == "json":
            return []
    if items is None:
        lines = [line for line in text.splitlines() if line.strip()]
        if list_format == "lines" or (list_format == "auto" and len(lines) > 1):
            items = [_MARKER_RE.sub("", line) for line in lines]
        else:
            items = re.split(r"[,;]", text)
    return [item.strip() for item in items if item.strip()]


def _key(item: str, case_sensitive: bool) -> str:
    item = item.strip().strip(".").strip()
    return item if case_sensitive else item.casefold()


def _positions(items: list[str], case_sensitive: bool) -> dict[str, int]:
    """Normalised item -> 1-based position among distinct items."""
    positions: dict[str, int] = {}
    for item in items:
        positions.setdefault(_key(item, case_sensitive), len(positions) + 1)
    return positions


def _decayed(position: int, decay: str, span: int) -> float:
    if decay == "none":
        return 1.0
    if decay == "reciprocal":
        return 1.0 / position
    return max(0.0, 1.0 - (position - 1) / span)  # linear: 1 at the top, 0 at position span + 1


class _ListParams(GraderParams):
    input: str = Field(OUTPUT_TEXT, description="Template of the text holding the list.")
    list_format: ListFormat = Field("auto", description="auto, json (array), lines (numbered/bulleted), comma.")
    case_sensitive: bool = False
    _check = field_validator("input")(check_template)


class RankParams(_ListParams):
    reference: str = Field(description="Template of the item that should come first.")
    decay: Literal["reciprocal", "linear"] = Field("reciprocal", description="reciprocal: 1/position; linear: "
                                                   "1 - (position - 1) / max_items.")
    max_items: int = Field(10, ge=1, description="Only the first max_items distinct items count.")
    _check_ref = field_validator("reference")(check_template)


@dataclass(frozen=True)
class Rank:
    name: str
    input: Template
    reference: Template
    list_format: str
    case_sensitive: bool
    decay: str
    max_items: int

    @sample_errors_score_zero
    def grade(self, example: Example, completion: str) -> Grade:
        reference = self.reference.render(example, completion)
        if not reference.strip():
            raise TemplateError(f"reference of example {example.id} is empty")
        items = parse_list(self.input.render(example, completion), self.list_format)
        positions = _positions(items, self.case_sensitive)
        position = positions.get(_key(reference, self.case_sensitive))
        details = {"items": items[:self.max_items], "position": position}
        if position is None or position > self.max_items:
            where = "absent" if position is None else f"at position {position} > max_items {self.max_items}"
            return Grade(0.0, f"{reference!r} {where} ({len(positions)} items)", details)
        score = _decayed(position, self.decay, self.max_items)
        return Grade(score, f"{reference!r} at position {position} -> {score:.3f} ({self.decay})", details)


@register("rank", RankParams, "The output is a ranked list: 1 if the reference is first, decaying with its "
          "position (reciprocal or linear), 0 if absent")
def _build_rank(name: str, p: RankParams) -> Rank:
    return Rank(name, compile_template(p.input), compile_template(p.reference), p.list_format, p.case_sensitive,
                p.decay, p.max_items)


class TopNParams(_ListParams):
    references: str | list[str] = Field(description="Acceptable answers: a list of templates, or one template "
                                        "naming a list field ('{{item.answers}}').")
    n: int = Field(3, ge=1, description="Only the first n distinct predictions count.")
    weighting: Literal["none", "reciprocal", "linear"] = Field("none", description="Credit by the position of the "
                                                               "first correct prediction (linear spans n).")
    mode: Literal["any", "recall"] = Field("any", description="any: one correct prediction suffices; recall: share "
                                           "of the references (at most n) found in the top n.")

    @field_validator("references")
    @classmethod
    def _templates(cls, value: str | list[str]) -> str | list[str]:
        for source in [value] if isinstance(value, str) else value:
            check_template(source)
        if isinstance(value, list) and not value:
            raise ValueError("give at least one reference")
        return value


def _reference_list(raw: Any, example: Example) -> list[str]:
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
            raw = parsed if isinstance(parsed, list) else [raw]
        except ValueError:
            raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise TemplateError(f"references of example {example.id} must be a non-empty list")
    return [r if isinstance(r, str) else json.dumps(r) for r in raw]


@dataclass(frozen=True)
class TopN:
    name: str
    input: Template
    references: tuple[Template, ...]
    list_format: str
    case_sensitive: bool
    n: int
    weighting: str
    mode: str

    @sample_errors_score_zero
    def grade(self, example: Example, completion: str) -> Grade:
        if len(self.references) == 1:
            refs = _reference_list(self.references[0].value(example, completion), example)
        else:
            refs = [t.render(example, completion) for t in self.references]
        wanted = {_key(r, self.case_sensitive) for r in refs}
        positions = _positions(parse_list(self.input.render(example, completion), self.list_format),
                               self.case_sensitive)
        hits = sorted(pos for item, pos in positions.items() if item in wanted and pos <= self.n)
        details = {"hit_positions": hits, "predictions": min(len(positions), self.n)}
        if not hits:
            return Grade(0.0, f"no acceptable answer in the top {self.n} ({len(positions)} predictions)", details)
        score = _decayed(hits[0], self.weighting, self.n)
        if self.mode == "recall":
            score = len(hits) / min(len(wanted), self.n)
        return Grade(min(score, 1.0), f"{len(hits)} acceptable in the top {self.n}, first at {hits[0]} -> "
                     f"{score:.3f}", details)


@register("top_n", TopNParams, "Credit if an acceptable answer is among the first n predictions, optionally "
          "weighted by its position, or the share of references found")
def _build_top_n(name: str, p: TopNParams) -> TopN:
    sources = [p.references] if isinstance(p.references, str) else p.references
    return TopN(name, compile_template(p.input), tuple(compile_template(s) for s in sources), p.list_format,
                p.case_sensitive, p.n, p.weighting, p.mode)
