"""`instruction_following`: IFEval-style verifiable constraints, scored as the fraction satisfied.

Constraints come from the config (`constraints:`), from each example (`constraints_field:`
names a field holding a list in the same format), or both. An empty output scores 0 outright:
otherwise "no commas" and "all lowercase" would pay a model for saying nothing.

Counting rules (after IFEval, Zhou et al. 2023, simplified where noted): words are `\\w+` runs;
bullets are lines starting with `*` or `-` (not `**bold**`/`---`); paragraphs are blocks
separated by blank lines or `***`; placeholders are `[...]`; valid_json ignores a ```json fence.
For IFEval's own rules, a constraint's `type` may also be any of IFEval's 25 instruction ids with
that instruction's arguments beside it (`{type: "punctuation:no_comma"}`); these are checked by
the `ifeval` grader's checkers (strict mode), which agree with IFEval's reference implementation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, register
from rftkit.graders.ifeval import INSTRUCTIONS, InstructionError, build_check
from rftkit.graders.ifeval.checkers import literal_pattern
from rftkit.graders.templates import TemplateError

_WORD_RE = re.compile(r"\w+")
_BULLET_RE = re.compile(r"^\s*(?:\*(?![*\s]*$)(?!\*)|-(?!-))\s*\S", re.MULTILINE)
_PARAGRAPH_SPLIT_RE = re.compile(r"\n\s*\n|^\s*\*\*\*\s*$", re.MULTILINE)
_PLACEHOLDER_RE = re.compile(r"\[[^\[\]\n]+\]")
_FENCE_RE = re.compile(r"^\s*```(?:json|JSON)?\s*\n(.*?)\n?```\s*$", re.DOTALL)


class _Constraint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Bounded(_Constraint):
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _has_bound(self) -> "_Bounded":
        if self.min is None and self.max is None:
            raise ValueError(f"{self.type}: give min, max or both")  # type: ignore[attr-defined]
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{self.type}: min {self.min} > max {self.max}")  # type: ignore[attr-defined]
        return self

    def within(self, count: int, unit: str) -> tuple[bool, str]:
        ok = (self.min is None or count >= self.min) and (self.max is None or count <= self.max)
        bounds = f"{self.min if self.min is not None else 0}..{self.max if self.max is not None else 'inf'}"
        return ok, f"{count} {unit} (want {bounds})"


class WordCount(_Bounded):
    type: Literal["word_count"]

    def check(self, text: str) -> tuple[bool, str]:
        return self.within(len(_WORD_RE.findall(text)), "words")


class CharCount(_Bounded):
    type: Literal["char_count"]

    def check(self, text: str) -> tuple[bool, str]:
        return self.within(len(text), "characters")


class BulletCount(_Bounded):
    type: Literal["bullet_count"]

    def check(self, text: str) -> tuple[bool, str]:
        return self.within(len(_BULLET_RE.findall(text)), "bullets")


class ParagraphCount(_Bounded):
    type: Literal["paragraph_count"]

    def check(self, text: str) -> tuple[bool, str]:
        paragraphs = [p for p in _PARAGRAPH_SPLIT_RE.split(text) if p and p.strip()]
        return self.within(len(paragraphs), "paragraphs")


class Placeholders(_Constraint):
    type: Literal["placeholders"]
    min: int = Field(1, ge=1)

    def check(self, text: str) -> tuple[bool, str]:
        count = len(_PLACEHOLDER_RE.findall(text))
        return count >= self.min, f"{count} [placeholders] (want >= {self.min})"


class Keywords(_Constraint):
    type: Literal["keywords"]
    include: list[str] = Field(min_length=1)
    case_sensitive: bool = False

    def check(self, text: str) -> tuple[bool, str]:
        hay = text if self.case_sensitive else text.casefold()
        missing = [k for k in self.include if (k if self.case_sensitive else k.casefold()) not in hay]
        return not missing, "all keywords present" if not missing else f"missing {missing}"


class ForbiddenWords(_Constraint):
    type: Literal["forbidden_words"]
    words: list[str] = Field(min_length=1)

    def check(self, text: str) -> tuple[bool, str]:
        found = [w for w in self.words if re.search(literal_pattern(w), text, re.IGNORECASE)]
        return not found, "no forbidden words" if not found else f"uses forbidden {found}"


class Case(_Constraint):
    type: Literal["lowercase", "uppercase"]

    def check(self, text: str) -> tuple[bool, str]:
        ok = text == (text.lower() if self.type == "lowercase" else text.upper())
        return ok, f"{'all' if ok else 'not all'} {self.type}"


class Affix(_Constraint):
    type: Literal["starts_with", "ends_with"]
    phrase: str = Field(min_length=1)
    case_sensitive: bool = False

    def check(self, text: str) -> tuple[bool, str]:
        body, phrase = text.strip(), self.phrase.strip()
        if not self.case_sensitive:
            body, phrase = body.casefold(), phrase.casefold()
        ok = body.startswith(phrase) if self.type == "starts_with" else body.endswith(phrase)
        return ok, f"{'' if ok else 'does not '}{self.type.replace('_', ' ')} {self.phrase!r}"


class ValidJson(_Constraint):
    type: Literal["valid_json"]

    def check(self, text: str) -> tuple[bool, str]:
        fence = _FENCE_RE.match(text)
        try:
            json.loads(fence.group(1) if fence else text, parse_constant=_no_constant)
        except ValueError:
            return False, "not valid JSON"
        return True, "valid JSON"


class NoCommas(_Constraint):
    type: Literal["no_commas"]

    def check(self, text: str) -> tuple[bool, str]:
        count = text.count(",") + text.count("，")  # the full-width comma counts too
        return count == 0, "no commas" if count == 0 else f"{count} commas"


class IFEvalInstruction(_Constraint):
    """One of IFEval's instruction ids, its arguments as extra keys (`{type: ..., num_words: 50, ...}`)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal[tuple(INSTRUCTIONS)]  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _valid_arguments(self) -> "IFEvalInstruction":
        try:
            build_check(self.type, dict(self.model_extra or {}))
        except InstructionError as exc:
            raise ValueError(str(exc)) from None
        return self

    def check(self, text: str) -> tuple[bool, str]:
        return build_check(self.type, dict(self.model_extra or {}))(text.strip())


def _no_constant(name: str) -> None:
    raise ValueError(name)


Constraint = Annotated[Union[WordCount, CharCount, BulletCount, ParagraphCount, Placeholders, Keywords,
                             ForbiddenWords, Case, Affix, ValidJson, NoCommas, IFEvalInstruction],
                       Field(discriminator="type")]
_CONSTRAINT_LIST = TypeAdapter(list[Constraint])


class InstructionParams(GraderParams):
    constraints: list[Constraint] = Field(default_factory=list, description="Constraints checked on every output.")
    constraints_field: str | None = Field(None, validate_default=True, description="Example field holding "
                                          "per-example constraints (same format).")

    @field_validator("constraints_field")
    @classmethod
    def _check_some(cls, value: str | None, info) -> str | None:
        if value is None and "constraints" in info.data and not info.data["constraints"]:
            raise ValueError("give 'constraints', 'constraints_field' or both")
        return value


@dataclass(frozen=True)
class InstructionFollowing:
    name: str
    constraints: tuple
    constraints_field: str | None

    def _all_constraints(self, example: Example) -> list:
        if self.constraints_field is None:
            return list(self.constraints)
        if self.constraints_field not in example.fields:
            raise TemplateError(f"example {example.id} has no field {self.constraints_field!r}")
        try:
            extra = _CONSTRAINT_LIST.validate_python(example.fields[self.constraints_field])
        except ValidationError as exc:
            raise TemplateError(f"example {example.id}: bad constraints in {self.constraints_field!r}: "
                                f"{exc.errors()[0]['msg']}") from None
        return list(self.constraints) + extra

    def grade(self, example: Example, completion: str) -> Grade:
        constraints = self._all_constraints(example)
        if not constraints:
            raise TemplateError(f"example {example.id} has no constraints to check")
        if not completion.strip():
            return Grade(0.0, f"empty output (0/{len(constraints)} constraints)")
        results = [(c.type, *c.check(completion)) for c in constraints]
        held = sum(ok for _, ok, _ in results)
        failed = "; ".join(f"{kind}: {why}" for kind, ok, why in results if not ok)
        reason = f"{held}/{len(results)} constraints hold" + (f"; {failed}" if failed else "")
        return Grade(held / len(results), reason[:300],
                     {"results": [{"type": k, "ok": ok, "detail": why} for k, ok, why in results]})


@register("instruction_following", InstructionParams, "IFEval-style verifiable constraints (word/bullet/paragraph "
          "counts, keywords, case, affixes, JSON, commas, placeholders), scored as the fraction satisfied")
def _build(name: str, p: InstructionParams) -> InstructionFollowing:
    return InstructionFollowing(name, tuple(p.constraints), p.constraints_field)
