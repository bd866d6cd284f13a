"""`multi`: combine named sub-graders into one score (OpenAI's multi grader, plus weights and a gate).

- `calculate_output`: an arithmetic formula over sub-grader names, e.g. `0.2 * format + 0.8 * correct`.
  It is parsed with `ast` and evaluated by walking a whitelist of nodes (numbers, names,
  + - * / ** ^, unary minus, and min/max/abs/floor/ceil/exp/sqrt/log); nothing is ever `eval`ed.
  `^` means power (with `**`'s precedence), as in OpenAI's formulas.
- `weights`: without a formula, the weighted mean sum_i w_i s_i / sum_i w_i (default: equal weights).
- `gate`: the score is 0 unless the named sub-grader scores at least `gate_threshold`
  (e.g. no credit for style when the answer is wrong).
- `graders` is a mapping `{name: {type, ...}}`, or a list of graders each with its `name`.
- `formula_sees`: `scores` (default): each sub-grader's score in [0, 1]; `outputs`: each
  sub-grader's own output before it is mapped onto [0, 1], which is what OpenAI's multi grader
  computes with (a `score_model` result on its `range`, truncated to it; a `python` grader's
  returned float; `text_similarity`'s metric; `string_check`'s 0 or 1). The `openai` type uses
  `outputs`.

The result is clamped to [0, 1] (the raw value is kept in details). A sub-grader that raised
makes the multi grade an error; a masked sub-grader masks it (the formula has a hole).
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Sequence

from pydantic import Field, ValidationError, field_validator

from rftkit.data import Example
from rftkit.graders.base import GRADER_TYPES, BatchContext, Grade, Grader, GraderParams, clamp01, register

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
    "sqrt": math.sqrt, "log": math.log}
MAX_FORMULA_CHARS = 2000


def check_formula(formula: str, names: set[str]) -> ast.Expression:
    """Parse and whitelist; raises ValueError naming the offending piece."""
    if len(formula) > MAX_FORMULA_CHARS:
        raise ValueError(f"formula longer than {MAX_FORMULA_CHARS} characters")
    try:
        # `^` is power in OpenAI's formulas; as Python's xor it would bind looser than `-`
        # (a ^ 2 - 1 == a ^ 1), so it is rewritten to `**` before parsing, not mapped after.
        tree = ast.parse(formula.strip().replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"formula {formula!r} does not parse: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Load, ast.operator, ast.unaryop)):
            if isinstance(node, ast.operator) and type(node) not in _BINARY:
                raise ValueError(f"operator {type(node).__name__} is not allowed in a formula")
            if isinstance(node, ast.unaryop) and not isinstance(node, (ast.USub, ast.UAdd)):
                raise ValueError(f"operator {type(node).__name__} is not allowed in a formula")
        elif isinstance(node, (ast.BinOp, ast.UnaryOp)):
            continue
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ValueError(f"constant {node.value!r} is not a number")
        elif isinstance(node, ast.Name):
            if node.id not in names and node.id not in _FUNCTIONS:
                raise ValueError(f"unknown name {node.id!r} in formula; sub-graders: {', '.join(sorted(names))}")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords \
                    or not node.args:
                raise ValueError(f"only calls to {', '.join(_FUNCTIONS)} with positional arguments are allowed")
        else:
            raise ValueError(f"{type(node).__name__} is not allowed in a formula (numbers, grader names, "
                             "+ - * / ^ and min/max/abs/floor/ceil/exp/sqrt/log only)")
    return tree


def evaluate_formula(node: ast.AST, scores: dict[str, float]) -> float:
    if isinstance(node, ast.Expression):
        return evaluate_formula(node.body, scores)
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return scores[node.id]
    if isinstance(node, ast.UnaryOp):
        value = evaluate_formula(node.operand, scores)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = evaluate_formula(node.left, scores), evaluate_formula(node.right, scores)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent larger than 64 in formula")  # 10 ** 10 ** 10 would hang the step
        return float(_BINARY[type(node.op)](left, right))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    return float(_FUNCTIONS[node.func.id](*(evaluate_formula(a, scores) for a in node.args)))


def validate_sub_spec(name: str, spec: Any) -> dict[str, Any]:
    """A sub-grader is `{type: ..., <params>}`; returns it with its params validated."""
    if not name.isidentifier():
        raise ValueError(f"sub-grader name {name!r} must be an identifier (letters, digits, _) to use in formulas")
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"graders.{name}: expected a mapping with a 'type'")
    params = {k: v for k, v in spec.items() if k not in ("type", "name")}
    grader_type = GRADER_TYPES.get(spec["type"])
    if grader_type is None:
        raise ValueError(f"graders.{name}.type: unknown grader type {spec['type']!r}")
    try:
        grader_type.params.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"graders.{name}.{key}: {err['msg'].removeprefix('Value error, ')}") from None
    return spec


def graders_by_name(graders: Any, where: str = "graders") -> Any:
    """A list of graders (each with its `name`, as OpenAI's API reference writes them) as a mapping."""
    if not isinstance(graders, list):
        return graders
    by_name: dict[str, Any] = {}
    for i, spec in enumerate(graders):
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{where}[{i}]: a grader in a list needs a 'name' that is an identifier (letters, "
                             f"digits, _), since the formula refers to it; got {name!r}")
        if name in by_name:
            raise ValueError(f"{where}[{i}]: name {name!r} is used twice")
        by_name[name] = spec
    return by_name


class MultiParams(GraderParams):
    graders: dict[str, dict[str, Any]] = Field(min_length=1, description="Sub-graders by name: {name: {type, ...}}, "
                                               "or a list of graders each with a 'name'.")
    calculate_output: str | None = Field(None, description="Formula over sub-grader names.")
    formula_sees: Literal["scores", "outputs"] = Field("scores", description="What a sub-grader's name stands for "
                                                       "in the formula: its score in [0, 1], or its own output before "
                                                       "mapping (a score_model's number on its range, a python "
                                                       "grader's float), as OpenAI's multi grader does.")
    weights: dict[str, float] | None = Field(None, description="Weighted mean when there is no formula.")
    gate: str | None = Field(None, description="Sub-grader that must pass, else the score is 0.")
    gate_threshold: float = Field(1.0, ge=0, le=1, validate_default=True)

    @field_validator("graders", mode="before")
    @classmethod
    def _list_to_mapping(cls, graders: Any) -> Any:
        return graders_by_name(graders)

    @field_validator("graders")
    @classmethod
    def _sub_specs(cls, graders: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from rftkit.graders import load_builtin_graders

        load_builtin_graders()
        return {name: validate_sub_spec(name, spec) for name, spec in graders.items()}

    @field_validator("calculate_output")
    @classmethod
    def _formula(cls, formula: str | None, info) -> str | None:
        if formula is not None and "graders" in info.data:
            check_formula(formula, set(info.data["graders"]))
        return formula

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: dict[str, float] | None, info) -> dict[str, float] | None:
        if weights is None:
            return None
        if info.data.get("calculate_output") is not None:
            raise ValueError("give either calculate_output or weights, not both")
        unknown = set(weights) - set(info.data.get("graders", weights))
        if unknown or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, over sub-grader names (unknown: "
                             f"{sorted(unknown)})")
        return weights

    @field_validator("gate_threshold")
    @classmethod
    def _gate(cls, threshold: float, info) -> float:
        gate = info.data.get("gate")
        if gate is not None and "graders" in info.data and gate not in info.data["graders"]:
            raise ValueError(f"gate {gate!r} is not a sub-grader; have {sorted(info.data['graders'])}")
        return threshold


@dataclass(frozen=True)
class Multi:
    name: str
    graders: dict[str, Grader]
    formula: ast.Expression | None
    weights: dict[str, float]
    gate: str | None
    gate_threshold: float
    formula_sees: str = "scores"
    accepts_context: ClassVar[bool] = True  # passed on to its sub-graders (TRL functions read it)

    def grade(self, example: Example, completion: str) -> Grade:
        return self.grade_batch([example], [completion])[0]

    def grade_batch(self, examples: Sequence[Example], completions: Sequence[str],
                    context: BatchContext | None = None) -> list[Grade]:
        from rftkit.graders.combine import _grade_one_grader  # one place that turns raises into error grades

        per_grader = {name: _grade_one_grader(g, examples, completions, context) for name, g in self.graders.items()}
        return [self._combine({name: grades[i] for name, grades in per_grader.items()})
                for i in range(len(completions))]

    def _combine(self, grades: dict[str, Grade]) -> Grade:
        sub = {name: {"score": g.score, "reason": g.reason} for name, g in grades.items()}
        flags = tuple(f for g in grades.values() for f in g.flags)
        broken = [n for n, g in grades.items() if g.error]
        if broken:
            return Grade(0.0, f"sub-grader {broken[0]}: {grades[broken[0]].reason}", {"sub": sub}, error=True,
                         flags=flags)
        masked = [n for n, g in grades.items() if g.masked]
        if masked:
            return Grade(0.0, f"sub-grader {masked[0]} gave no signal: {grades[masked[0]].reason}", {"sub": sub},
                         masked=True, flags=flags)
        scores = {name: g.score for name, g in grades.items()}
        if self.gate is not None and scores[self.gate] < self.gate_threshold:
            return Grade(0.0, f"gate {self.gate} not passed ({scores[self.gate]:.3f} < {self.gate_threshold:g}): "
                         f"{grades[self.gate].reason}"[:300], {"sub": sub}, flags=flags)
        if self.formula_sees == "outputs":  # a sub-grader's own number where it has one (see the docstring)
            scores = {name: float(g.details.get("raw", g.score)) for name, g in grades.items()}
            for name, value in scores.items():
                sub[name]["output"] = value
        try:
            raw = evaluate_formula(self.formula, scores) if self.formula is not None else \
                sum(self.weights[n] * s for n, s in scores.items()) / sum(self.weights.values())
            if not math.isfinite(raw):
                raise ValueError(f"gave {raw}")
        except (ArithmeticError, ValueError) as exc:  # e.g. correct / format with format = 0
            return Grade(0.0, f"formula failed: {type(exc).__name__}: {exc}", {"sub": sub}, error=True, flags=flags)
        summary = ", ".join(f"{n}={s:.2f}" for n, s in scores.items())
        clamped = "" if 0.0 <= raw <= 1.0 else f" (raw {raw:.3f} clamped)"
        return Grade(clamp01(raw), f"{summary}{clamped}"[:300], {"sub": sub, "raw": raw}, flags=flags)


@register("multi", MultiParams, "Combine named sub-graders by a formula (calculate_output), a weighted mean, "
          "and an optional gate")
def _build(name: str, p: MultiParams) -> Multi:
    graders = {}
    for sub_name, spec in p.graders.items():
        grader_type = GRADER_TYPES[spec["type"]]
        params = grader_type.params.model_validate({k: v for k, v in spec.items() if k not in ("type", "name")})
        graders[sub_name] = grader_type.build(f"{name}.{sub_name}", params)
    formula = check_formula(p.calculate_output, set(graders)) if p.calculate_output else None
    weights = p.weights or {n: 1.0 for n in graders}
    return Multi(name, graders, formula, {n: weights.get(n, 0.0) for n in graders}, p.gate, p.gate_threshold,
                 p.formula_sees)
