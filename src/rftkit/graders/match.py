"""Direct-comparison graders: `string_check`, `exact_match`, `numeric`, `math_equivalence`.

All four compare the rendered `input` (default: the completion) with a rendered `reference`.
`exact_match`, `numeric` and `math_equivalence` first extract the answer from the text (answer
tags, `\\boxed{}`, GSM8K's `####`, the last number, or a regex group). Several candidate answers
(two answer tags, two boxes) are rejected by default: a model that hedges must not collect the
reward for whichever guess happened to be right. Extraction is linear in the text, a user's
pattern has a time limit, and symbolic comparison runs with a hard time limit (`bounded.py`).
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, register
from rftkit.graders.bounded import REGEX_TIMEOUT_S, MathTimeout, as_bounded_pattern, boxed_contents, \
    compile_user_pattern, symbolic_compare, tag_contents
from rftkit.graders.templates import OUTPUT_TEXT, Template, TemplateError, check_template, compile_template, \
    sample_errors_score_zero

Normalization = Literal["strip", "lower", "collapse_whitespace", "nfkc", "remove_punctuation"]
Extraction = Literal["none", "answer_tag", "boxed", "hash", "last_number", "regex"]
MAX_MATH_CHARS = 1000  # longer "answers" are not answers; sympy on them could run for minutes

_WS_RE = re.compile(r"\s+")
_PUNCT = str.maketrans("", "", string.punctuation)
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUM = rf"[-+]?{_UNSIGNED}"
# A sign counts only where it cannot be a binary minus ("5-3" ends in 3, not -3).
NUMBER_RE = re.compile(rf"(?:(?<![\w).])[-+])?{_UNSIGNED}(?:\s*/\s*\d+)?")
_FULL_NUMBER_RE = re.compile(rf"^\$?\s*({_NUM})(?:\s*/\s*(\d+))?\s*%?$")
_NON_FINITE = {"nan": math.nan, "+nan": math.nan, "-nan": math.nan, "inf": math.inf, "+inf": math.inf,
               "-inf": -math.inf, "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf}


def normalize(text: str, steps: tuple[str, ...]) -> str:
    for step in steps:
        if step == "strip":
            text = text.strip()
        elif step == "lower":
            text = text.casefold()  # casefold, not lower: "Straße" == "STRASSE"
        elif step == "collapse_whitespace":
            text = _WS_RE.sub(" ", text).strip()
        elif step == "nfkc":
            text = unicodedata.normalize("NFKC", text)
        elif step == "remove_punctuation":
            text = text.translate(_PUNCT)
    return text


def parse_number(text: str) -> float | None:
    """A number written the ways models write them: '1,234.5', '-3', '3/4', '1e-3', '$5', '50%' (-> 50).

    Returns None when the text is not one number; 'nan'/'inf' parse to the IEEE values so that
    callers can reject them with a reason instead of mistaking them for words."""
    text = text.strip()
    if text.lower() in _NON_FINITE:
        return _NON_FINITE[text.lower()]
    match = _FULL_NUMBER_RE.match(text)
    if match is None:
        return None
    value = float(match.group(1).replace(",", ""))  # more digits than a float holds: inf, rejected later
    if match.group(2) is not None:
        try:
            denominator = int(match.group(2))
            return None if denominator == 0 else value / denominator
        except (ValueError, OverflowError):  # past int's 4,300-digit limit, or too large for a float
            return None
    return value


# ---------------------------------------------------------------- extraction


@dataclass(frozen=True)
class Extractor:
    method: str
    tag: str = "answer"
    pattern: Any = None  # a `regex` pattern (a stdlib `re` one is recompiled with `regex`)
    on_multiple: str = "reject"

    def __post_init__(self) -> None:
        if self.pattern is not None:
            object.__setattr__(self, "pattern", as_bounded_pattern(self.pattern))

    def candidates(self, text: str) -> list[str]:
        """Raises TimeoutError when a regex pattern runs past REGEX_TIMEOUT_S."""
        if self.method == "answer_tag":
            return tag_contents(text, self.tag)
        if self.method == "boxed":
            return boxed_contents(text)
        if self.method == "hash":
            return [line.split("\n", 1)[0] for line in text.split("####")[1:]]
        if self.method == "last_number":
            numbers = NUMBER_RE.findall(text)
            return numbers[-1:]  # by definition one candidate
        if self.method == "regex":
            assert self.pattern is not None
            group = "answer" if "answer" in self.pattern.groupindex else (1 if self.pattern.groups else 0)
            return [m.group(group) or "" for m in self.pattern.finditer(text, timeout=REGEX_TIMEOUT_S)]
        return [text]

    def __call__(self, text: str) -> tuple[str | None, str]:
        """(answer, "ok") or (None, why there is no single answer)."""
        try:
            found = self.candidates(text)
        except TimeoutError:
            return None, f"{self.describe()} timed out after {REGEX_TIMEOUT_S:g} s on this output"
        if not found:
            return None, f"no answer found ({self.describe()})"
        if len(found) > 1 and self.on_multiple == "reject":
            return None, f"{len(found)} answers found ({self.describe()}); give exactly one"
        return (found[0] if self.on_multiple == "first" else found[-1]).strip(), "ok"

    def describe(self) -> str:
        return {"answer_tag": f"<{self.tag}>...</{self.tag}>", "boxed": "\\boxed{...}", "hash": "#### answer",
                "last_number": "a number", "regex": f"regex {self.pattern.pattern if self.pattern else ''!r}",
                "none": "whole text"}[self.method]


class ExtractParams(GraderParams):
    extract: Extraction = Field("none", description="Where the answer is: none (whole input), answer_tag, boxed, "
                                "hash (GSM8K '#### 42'), last_number, regex.")
    tag: str = Field("answer", pattern=r"^[A-Za-z][\w\-]*$", description="Tag name for extract=answer_tag.")
    pattern: str | None = Field(None, validate_default=True, description="Regex for extract=regex; the answer is "
                                "the group named 'answer', else group 1, else the whole match.")
    on_multiple: Literal["reject", "first", "last"] = Field("reject", description="Several candidate answers: "
                                                            "reject (score 0), or take the first/last.")

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str | None, info) -> str | None:
        if info.data.get("extract") == "regex" and value is None:
            raise ValueError("extract: regex needs a 'pattern'")
        if value is not None:
            compile_user_pattern(value)
        return value

    def extractor(self) -> Extractor:
        return Extractor(self.extract, self.tag, compile_user_pattern(self.pattern) if self.pattern else None,
                         self.on_multiple)


# ---------------------------------------------------------------- string_check / exact_match


class StringCheckParams(GraderParams):
    input: str = Field(OUTPUT_TEXT, description="Template of the text to check.")
    reference: str = Field(description="Template of the reference, e.g. '{{item.answer}}'.")
    operation: Literal["eq", "ne", "like", "ilike"] = Field(description="eq / ne: (not) equal; like: input "
                                                            "contains reference; ilike: contains, ignoring case.")
    normalize: list[Normalization] = Field(default_factory=list, description="Applied to both sides first.")
    _check = field_validator("input", "reference")(check_template)


@dataclass(frozen=True)
class StringCheck:
    name: str
    input: Template
    reference: Template
    operation: str
    steps: tuple[str, ...]

    @sample_errors_score_zero
    def grade(self, example: Example, completion: str) -> Grade:
        text = normalize(self.input.render(example, completion), self.steps)
        ref = normalize(self.reference.render(example, completion), self.steps)
        if self.operation in ("like", "ilike") and not ref:
            raise TemplateError(f"reference {self.reference.source!r} is empty for example {example.id}; "
                                "'like' would match every output")
        if self.operation == "ilike":
            text, ref = text.casefold(), ref.casefold()
        passed = {"eq": text == ref, "ne": text != ref, "like": ref in text, "ilike": ref in text}[self.operation]
        verb = {"eq": "equals", "ne": "differs from", "like": "contains",
                "ilike": "contains (any case)"}[self.operation]
        return Grade(1.0 if passed else 0.0, f"{'' if passed else 'not: '}input {verb} {_short(ref)}")


@register("string_check", StringCheckParams, "OpenAI string_check: 1 if input eq/ne/like/ilike reference, else 0")
def _build_string_check(name: str, p: StringCheckParams) -> StringCheck:
    return StringCheck(name, compile_template(p.input), compile_template(p.reference), p.operation,
                       tuple(p.normalize))


class ExactMatchParams(ExtractParams):
    input: str = Field(OUTPUT_TEXT, description="Template of the text to extract the answer from.")
    reference: str = Field(description="Template of the expected answer.")
    normalize: list[Normalization] = Field(default_factory=lambda: ["strip"], description="Applied to both sides.")
    _check = field_validator("input", "reference")(check_template)


@dataclass(frozen=True)
class ExactMatch:
    name: str
    input: Template
    reference: Template
    extractor: Extractor
    steps: tuple[str, ...]

    @sample_errors_score_zero
    def grade(self, example: Example, completion: str) -> Grade:
        answer, why = self.extractor(self.input.render(example, completion))
        if answer is None:
            return Grade(0.0, why)
        ref = normalize(self.reference.render(example, completion), self.steps)
        got = normalize(answer, self.steps)
        details = {"answer": got, "reference": ref}
        if got == ref:
            return Grade(1.0, f"correct: {_short(got)}", details)
        return Grade(0.0, f"answer {_short(got)} != {_short(ref)}", details)


@register("exact_match", ExactMatchParams, "1 if the extracted answer equals the reference after normalisation")
def _build_exact_match(name: str, p: ExactMatchParams) -> ExactMatch:
    return ExactMatch(name, compile_template(p.input), compile_template(p.reference), p.extractor(),
                      tuple(p.normalize))


# ---------------------------------------------------------------- numeric


class NumericParams(ExtractParams):
    extract: Extraction = "last_number"
    input: str = Field(OUTPUT_TEXT, description="Template of the text to extract the number from.")
    reference: str = Field(description="Template of the expected number.")
    abs_tol: float = Field(0.0, ge=0, description="Absolute tolerance.")
    rel_tol: float = Field(1e-9, ge=0, description="Relative tolerance (math.isclose).")
    _check = field_validator("input", "reference")(check_template)


@dataclass(frozen=True)
class Numeric:
    name: str
    input: Template
    reference: Template
    extractor: Extractor
    abs_tol: float
    rel_tol: float

    @sample_errors_score_zero
    def grade(self, example: Example, completion: str) -> Grade:
        ref_text = self.reference.render(example, completion)
        ref = parse_number(ref_text)
        if ref is None or not math.isfinite(ref):
            raise TemplateError(f"reference {ref_text!r} of example {example.id} is not a finite number")
        answer, why = self.extractor(self.input.render(example, completion))
        if answer is None:
            return Grade(0.0, why)
        value = parse_number(answer)
        if value is None:
            return Grade(0.0, f"answer {_short(answer)} is not a number", {"answer": answer})
        if not math.isfinite(value):
            return Grade(0.0, f"answer {answer!r} is not a finite number", {"answer": answer})
        details = {"answer": value, "reference": ref}
        if math.isclose(value, ref, rel_tol=self.rel_tol, abs_tol=self.abs_tol):
            return Grade(1.0, f"correct: {value:g}", details)
        return Grade(0.0, f"answer {value:g} != {ref:g} (abs_tol={self.abs_tol:g}, rel_tol={self.rel_tol:g})",
                     details)


@register("numeric", NumericParams, "1 if the extracted number is within abs_tol/rel_tol of the reference")
def _build_numeric(name: str, p: NumericParams) -> Numeric:
    return Numeric(name, compile_template(p.input), compile_template(p.reference), p.extractor(), p.abs_tol,
                   p.rel_tol)


# ---------------------------------------------------------------- math_equivalence


class MathEquivalenceParams(ExtractParams):
    extract: Extraction = "boxed"
    input: str = Field(OUTPUT_TEXT, description="Template of the text to extract the answer from.")
    reference: str = Field(description="Template of the expected answer (LaTeX or plain).")
    timeout_s: float = Field(5.0, gt=0, description="Wall-clock limit of one symbolic comparison (it runs in "
                             "a child process that is killed at the limit; the answer scores 0).")
    _check = field_validator("input", "reference")(check_template)


def math_equal(answer: str, reference: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Symbolic equality via math-verify (LaTeX parsed by latex2sympy, never `eval`), in a child
    process with a hard time limit; numbers are compared here without it."""
    a_num, r_num = parse_number(answer), parse_number(reference)
    if a_num is not None and not math.isfinite(a_num):
        return False, f"answer {_short(answer)} is not a finite number"
    if a_num is not None and r_num is not None and math.isfinite(r_num):  # fast path, no sympy
        return math.isclose(a_num, r_num, rel_tol=1e-9, abs_tol=1e-12), "numeric comparison"
    try:
        verdict = symbolic_compare(answer, reference, timeout_s)
    except MathTimeout:
        return False, f"symbolic comparison timed out after {timeout_s:g} s"
    if "reference_error" in verdict:
        raise TemplateError(f"reference {_short(reference)} {verdict['reference_error']}")
    how = verdict["how"]
    if how == "answer does not parse as math":
        how = f"answer {_short(answer)} does not parse as math"
    return verdict["equal"], how


@dataclass(frozen=True)
class MathEquivalence:
    name: str
    input: Template
    reference: Template
    extractor: Extractor
    timeout_s: int

    @sample_errors_score_zero
    def grade(self, example: Example, completion: str) -> Grade:
        answer, why = self.extractor(self.input.render(example, completion))
        if answer is None:
            return Grade(0.0, why)
        if len(answer) > MAX_MATH_CHARS:
            return Grade(0.0, f"answer is {len(answer)} characters; more than {MAX_MATH_CHARS} is not compared")
        reference = self.reference.render(example, completion).strip()
        equal, how = math_equal(answer, reference, self.timeout_s)
        details = {"answer": answer, "reference": reference, "method": how}
        if equal:
            return Grade(1.0, f"correct: {_short(answer)} = {_short(reference)} ({how})", details)
        return Grade(0.0, f"answer {_short(answer)} != {_short(reference)} ({how})", details)


@register("math_equivalence", MathEquivalenceParams, "1 if the extracted answer equals the reference "
          "symbolically (1/2 = 0.5 = \\frac{1}{2}), via math-verify")
def _build_math_equivalence(name: str, p: MathEquivalenceParams) -> MathEquivalence:
    return MathEquivalence(name, compile_template(p.input), compile_template(p.reference), p.extractor(),
                           p.timeout_s)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
