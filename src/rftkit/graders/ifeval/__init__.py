"""`ifeval`: IFEval rows graded as they are (`instruction_id_list` + `kwargs`), strict or loose.

IFEval (Zhou et al. 2023, arXiv:2311.07911) gives each prompt a list of verifiable instructions.
A row from its data (the JSONL of google-research's `instruction_following_eval`, or
`hf:google/IFEval`, whose `kwargs` carry every argument name with None where unused) is
graded without conversion:
- strict: the response itself follows the instruction (an empty response follows none);
- loose: any of 8 variants does: the response with its first line, last line or both removed,
  each with and without every `*` (the paper's fix for a leading "Sure, here it is:" or
  markdown emphasis around a keyword).
`level: instruction` scores the fraction followed (instruction-level accuracy); `level: prompt`
scores 1 only when all are (prompt-level accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, register
from rftkit.graders.ifeval.checkers import INSTRUCTIONS, Check, InstructionError, build_check

__all__ = ["INSTRUCTIONS", "IFEval", "InstructionError", "build_check", "loose_variants", "follows"]


LOOSE_NAMES = ("as is", "without *", "without the first line", "without the last line",
               "without the first and last lines", "without the first line and *", "without the last line and *",
               "without the first and last lines and *")


def loose_variants(response: str) -> list[str]:
    """The paper's 8 loose-mode variants, in the reference's order (the response itself first)."""
    lines = response.split("\n")
    without_first = "\n".join(lines[1:]).strip()
    without_last = "\n".join(lines[:-1]).strip()
    without_both = "\n".join(lines[1:-1]).strip()
    return [response, response.replace("*", ""), without_first, without_last, without_both,
            without_first.replace("*", ""), without_last.replace("*", ""), without_both.replace("*", "")]


def follows(check: Check, response: str, mode: str) -> tuple[bool, str]:
    """(followed, why) in strict or loose mode; a blank variant follows nothing.

    The response is stripped first, as `if-verifiable` does (Google's script does not; it matters
    only for blank lines before the first paragraph). Unlike `if-verifiable`, a `<think>` block is
    graded as text: take reasoning out before grading if the model writes one.
    """
    response = response.strip()
    first_why = "empty response"
    for i, variant in enumerate(loose_variants(response) if mode == "loose" else [response]):
        if not variant.strip():
            continue
        ok, why = check(variant)
        if ok:
            return True, why if i == 0 else f"{why} (loose: {LOOSE_NAMES[i]})"
        if i == 0:
            first_why = why
    return False, first_why


def row_checks(example: Example, instructions_field: str, kwargs_field: str) -> list[tuple[str, Check]]:
    """(instruction id, checker) for each instruction of an IFEval row; a bad row raises InstructionError."""
    ids = example.fields.get(instructions_field)
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise InstructionError(f"example {example.id}: {instructions_field!r} must be a non-empty list of "
                               f"instruction ids, got {ids!r:.80}")
    kwargs = example.fields.get(kwargs_field)
    if kwargs is None:
        kwargs = [{}] * len(ids)
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise InstructionError(f"example {example.id}: {kwargs_field!r} must be a list with one object per "
                               f"instruction ({len(ids)}), got {kwargs!r:.80}")
    checks = []
    for instruction_id, args in zip(ids, kwargs):
        try:
            checks.append((instruction_id, build_check(instruction_id, args)))
        except InstructionError as exc:
            raise InstructionError(f"example {example.id}: {exc}") from None
    return checks


class IFEvalParams(GraderParams):
    mode: Literal["strict", "loose"] = Field("strict", description="strict: the response as it is; loose: "
                                             "also with its first/last line and '*' removed (IFEval's 8 variants).")
    level: Literal["instruction", "prompt"] = Field("instruction", description="instruction: the fraction of "
                                                    "instructions followed; prompt: 1 only if all are.")
    instructions_field: str = Field("instruction_id_list", description="Example field with the instruction ids.")
    kwargs_field: str = Field("kwargs", description="Example field with one argument object per instruction "
                              "(None values are unused arguments).")


@dataclass(frozen=True)
class IFEval:
    name: str
    mode: str
    level: str
    instructions_field: str
    kwargs_field: str

    def grade(self, example: Example, completion: str) -> Grade:
        checks = row_checks(example, self.instructions_field, self.kwargs_field)
        results = []
        for instruction_id, check in checks:
            ok, why = follows(check, completion, self.mode)
            results.append({"id": instruction_id, "ok": ok, "detail": why})
        held = sum(r["ok"] for r in results)
        score = held / len(results) if self.level == "instruction" else float(held == len(results))
        failed = "; ".join(f"{r['id']}: {r['detail']}" for r in results if not r["ok"])
        reason = f"{self.mode}: {held}/{len(results)} instructions followed" + (f"; {failed}" if failed else "")
        return Grade(score, reason[:300], {"mode": self.mode, "level": self.level, "results": results})


@register("ifeval", IFEvalParams, "IFEval rows as they are (instruction_id_list + kwargs, all 25 types), strict "
          "or loose as the paper defines them; instruction- or prompt-level")
def _build(name: str, p: IFEvalParams) -> IFEval:
    return IFEval(name, p.mode, p.level, p.instructions_field, p.kwargs_field)

