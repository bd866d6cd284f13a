"""OpenAI-style grader templates: `{{item.field}}`, `{{sample.output_text}}`, `{{sample.output_json.key}}`.

A template is compiled once (at config validation and again at build) into literal parts and
variable paths, so rendering a completion is a join, not a regex pass. Namespaces follow
OpenAI's graders guide: `item` is the dataset row (the example's fields plus `id`, `prompt`,
`messages`), `sample` is the model output (`output_text`, and `output_json` when the output
parses as JSON). Nested keys and list indices use dots: `{{item.answers.0}}`.

Two failure kinds are kept apart on purpose:
- a missing `item` field is a data/config bug: `TemplateError` propagates, the grader errors,
  and `check_health` stops the run if it happens on every completion;
- a sample that is not JSON (or lacks a key) is the *policy's* fault: `SampleError`, which the
  graders turn into score 0 with a reason, because early in training most outputs are not JSON
  and that must not stop the run.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from rftkit.data import Example
from rftkit.graders.base import Grade
from rftkit.graders.bounded import loads_bounded

# No braces inside a variable, so LaTeX around one works: "\\frac{{{item.a}}}{2}" -> \frac{3}{2}.
_VAR_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_BROKEN_VAR_RE = re.compile(r"\{\{\s*(?:item|sample)\b|\b(?:item|sample)\.[\w.]*\s*\}\}")
_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_\-]+)*$")
SAMPLE_VARS = ("output_text", "output_json")
OUTPUT_TEXT = "{{sample.output_text}}"


class TemplateError(ValueError):
    """The template names something the data does not have (a config or dataset bug)."""


class SampleError(ValueError):
    """The completion cannot fill the template (e.g. not JSON): the policy's fault, scored 0."""


@dataclass(frozen=True)
class Var:
    namespace: str  # "item" or "sample"
    path: tuple[str, ...]

    def __str__(self) -> str:
        return "{{" + ".".join((self.namespace,) + self.path) + "}}"


def _parse_var(text: str) -> Var:
    if not _PATH_RE.match(text):
        raise ValueError(f"template variable {{{{{text}}}}} is not of the form namespace.key[.key...]")
    namespace, *path = text.split(".")
    if namespace not in ("item", "sample"):
        raise ValueError(f"template variable {{{{{text}}}}}: namespace must be 'item' or 'sample'")
    if not path:
        raise ValueError(f"template variable {{{{{text}}}}} names no field")
    if namespace == "sample" and path[0] not in SAMPLE_VARS:
        raise ValueError(f"template variable {{{{{text}}}}}: sample has only {', '.join(SAMPLE_VARS)}")
    if namespace == "sample" and path[0] == "output_text" and len(path) > 1:
        raise ValueError(f"template variable {{{{{text}}}}}: output_text is a string and has no keys")
    return Var(namespace, tuple(path))


def _item_value(example: Example, key: str) -> Any:
    if key in example.fields:
        return example.fields[key]
    if key == "id":
        return example.id
    if key == "prompt" and example.prompt is not None:
        return example.prompt
    if key == "messages" and example.messages is not None:
        return [dict(t) for t in example.messages]
    raise TemplateError(f"example {example.id} has no field {key!r} (fields: {sorted(example.fields)})")


def _descend(value: Any, path: tuple[str, ...], what: str, error: type[ValueError]) -> Any:
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.lstrip("-").isdigit() and -len(value) <= int(key) < len(value):
            value = value[int(key)]
        else:
            raise error(f"{what} has no key {key!r}")
    return value


def parse_output_json(completion: str) -> Any:
    """The completion as JSON, as OpenAI's `sample.output_json` (strict: NaN/Infinity rejected; nested
    deeper than MAX_JSON_DEPTH rejected)."""
    try:
        return loads_bounded(completion, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError, a NaN constant, or too deep
        raise SampleError(f"output is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def to_text(value: Any) -> str:
    """How a non-string value is substituted into text: JSON for containers, str otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[str | Var, ...]

    @property
    def is_output_text(self) -> bool:
        return len(self.parts) == 1 and self.parts[0] == Var("sample", ("output_text",))

    def lookup(self, var: Var, example: Example, completion: str) -> Any:
        if var.namespace == "item":
            value = _item_value(example, var.path[0])
            return _descend(value, var.path[1:], f"item.{var.path[0]}", TemplateError)
        if var.path[0] == "output_text":
            return completion
        return _descend(parse_output_json(completion), var.path[1:], "sample.output_json", SampleError)

    def value(self, example: Example, completion: str) -> Any:
        """The raw value when the template is one variable (a list stays a list), else the text."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Var):
            return self.lookup(self.parts[0], example, completion)
        return self.render(example, completion)

    def render(self, example: Example, completion: str) -> str:
        if self.is_output_text:  # the common case, kept cheap for the benchmark's hot loop
            return completion
        return "".join(p if isinstance(p, str) else to_text(self.lookup(p, example, completion)) for p in self.parts)


def compile_template(source: str) -> Template:
    """Split into literals and variables; raises ValueError naming a malformed variable."""
    if not isinstance(source, str):
        raise ValueError(f"a template must be a string, got {type(source).__name__}")
    parts: list[str | Var] = []
    pos = 0
    for match in _VAR_RE.finditer(source):
        if match.start() > pos:
            parts.append(source[pos:match.start()])
        parts.append(_parse_var(match.group(1)))
        pos = match.end()
    if pos < len(source):
        parts.append(source[pos:])
    # A literal "{{item..." is a variable with a typo; other doubled braces may be LaTeX ("{{a}}").
    if any(isinstance(p, str) and _BROKEN_VAR_RE.search(p) for p in parts):
        raise ValueError(f"template {source!r} has unbalanced '{{{{' or '}}}}'")
    return Template(source, tuple(parts))


def check_template(source: str) -> str:
    """Pydantic validator: keep the text, fail config validation if it does not compile."""
    compile_template(source)
    return source


def sample_errors_score_zero(grade: Callable[..., Grade]) -> Callable[..., Grade]:
    """Decorator for `grade(self, example, completion)`: a `SampleError` becomes score 0 with its reason."""
    @functools.wraps(grade)
    def wrapper(self: Any, example: Example, completion: str) -> Grade:
        try:
            return grade(self, example, completion)
        except SampleError as exc:
            return Grade(0.0, str(exc))

    return wrapper
