"""The MATH pack (Hendrycks et al. 2021): rows as MATH ships them, and the `math_boxed` grader.

A row is `{"problem", "solution", "level", "type"}`; the reference answer is the last `\\boxed{}` of
the solution (or an `answer` field, as MATH-500 adds). Rows come from `data.options.source` (a JSONL
file, or `hf:NAME` with `hf_config`, e.g. `hf:EleutherAI/hendrycks_math` + `algebra`) or, when no
source is given, from an offline generator of MATH-format problems (fractions, linear equations,
remainders, gcds), so that tests and examples run without the dataset.

`math_boxed` takes the completion's last `\\boxed{}` (MATH's convention: only the last box counts,
so writing several gains nothing), and calls it correct when MATH's normalised strings are equal,
or the numbers are, or math-verify finds the expressions equal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from typing import Any

from pydantic import Field

from rftkit.data import DataError, Example
from rftkit.graders.base import Grade, GraderParams, register
from rftkit.tasks.math.answers import boxed_contents, normalize_latex, plain_number
from rftkit.tasks.rows import PackOptions, load_rows, parse_options, render, required_text, seeded_examples

DEFAULT_PROMPT = "{problem}\nPut your final answer in \\boxed{{}}."
MAX_ANSWER_CHARS = 1000  # longer "answers" are not compared symbolically (sympy could run for minutes)


class MathOptions(PackOptions):
    pass


def row_example(row: dict[str, Any], where: str, index: int, prompt: str, id_prefix: str) -> Example:
    required_text(row, "problem", where)
    required_text(row, "solution", where)
    example_id = str(row["id"]) if "id" in row else f"{id_prefix}-{index}"
    fields = {k: v for k, v in row.items() if k != "id"}
    return Example(id=example_id, prompt=render(prompt, row, where), fields=fields)


def generate(n: int, seed: int, options: dict[str, Any] | None = None) -> list[Example]:
    """`n` MATH examples from `options.source` in a seeded order, or `n` generated ones."""
    opts = parse_options(MathOptions, options or {}, "math")
    prompt = opts.prompt or DEFAULT_PROMPT
    if opts.source is None:
        rng = random.Random(f"math-{seed}")
        return [row_example(make_problem(rng), f"generated row {i}", i, prompt, f"math-synth-{seed}")
                for i in range(n)]
    rows = load_rows(opts.source, opts.hf_config, opts.split)
    examples = [row_example(row, where, i, prompt, "math") for i, (row, where) in enumerate(rows)]
    return seeded_examples(examples, n, seed, "math")


# ---------------------------------------------------------------- offline generator (MATH's row format)


def _latex(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _fractions(rng: random.Random) -> dict[str, str]:
    a, b, c, d = rng.randint(1, 9), rng.randint(2, 9), rng.randint(1, 9), rng.randint(2, 9)
    total = Fraction(a, b) + Fraction(c, d)
    common = b * d // gcd(b, d)
    return {"problem": f"What is $\\frac{{{a}}}{{{b}}} + \\frac{{{c}}}{{{d}}}$? Express your answer as a common "
                       "fraction in lowest terms.",
            "solution": f"The common denominator is ${common}$, so $\\frac{{{a}}}{{{b}}} + \\frac{{{c}}}{{{d}}} = "
                        f"\\frac{{{a * common // b}}}{{{common}}} + \\frac{{{c * common // d}}}{{{common}}} = "
                        f"\\boxed{{{_latex(total)}}}$.",
            "level": "Level 1", "type": "Prealgebra"}


def _linear(rng: random.Random) -> dict[str, str]:
    a, x, b = rng.randint(2, 9), rng.randint(-10, 10), rng.randint(1, 20)
    c = a * x + b
    return {"problem": f"Solve for $x$: ${a}x + {b} = {c}$.",
            "solution": f"Subtracting ${b}$ from both sides gives ${a}x = {c - b}$, and dividing by ${a}$ gives "
                        f"$x = \\boxed{{{x}}}$.",
            "level": "Level 2", "type": "Algebra"}


def _remainder(rng: random.Random) -> dict[str, str]:
    m, q = rng.randint(3, 12), rng.randint(10, 99)
    r = rng.randint(0, m - 1)
    n = m * q + r
    return {"problem": f"What is the remainder when ${n}$ is divided by ${m}$?",
            "solution": f"Since ${n} = {m} \\cdot {q} + {r}$, the remainder is $\\boxed{{{r}}}$.",
            "level": "Level 1", "type": "Number Theory"}


def _gcd(rng: random.Random) -> dict[str, str]:
    g, p, q = rng.randint(2, 12), rng.randint(2, 15), rng.randint(2, 15)
    while gcd(p, q) != 1:
        q += 1
    return {"problem": f"What is the greatest common divisor of ${g * p}$ and ${g * q}$?",
            "solution": f"We have ${g * p} = {g} \\cdot {p}$ and ${g * q} = {g} \\cdot {q}$, and ${p}$ and ${q}$ "
                        f"share no factor, so the greatest common divisor is $\\boxed{{{g}}}$.",
            "level": "Level 2", "type": "Number Theory"}


def make_problem(rng: random.Random) -> dict[str, str]:
    return rng.choice((_fractions, _linear, _remainder, _gcd))(rng)


# ---------------------------------------------------------------- grader


def reference_answer(example: Example, solution_field: str, answer_field: str | None) -> str:
    if answer_field is not None:
        value = example.fields.get(answer_field)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip():
            raise DataError(f"example {example.id}: no answer in field {answer_field!r}")
        return str(value).strip()
    solution = example.fields.get(solution_field)
    if not isinstance(solution, str):
        raise DataError(f"example {example.id}: field {solution_field!r} must hold the solution text")
    boxes = boxed_contents(solution)
    if not boxes:
        raise DataError(f"example {example.id}: the solution in {solution_field!r} has no \\boxed{{}} answer")
    return boxes[-1].strip()


def equivalent(answer: str, reference: str, symbolic: bool, timeout_s: int) -> tuple[bool, str]:
    if normalize_latex(answer) == normalize_latex(reference):
        return True, "same after MATH's normalisation"
    a, r = plain_number(answer), plain_number(reference)
    if a is not None and r is not None:
        return a == r, "numeric comparison"
    if not symbolic or len(answer) > MAX_ANSWER_CHARS:
        return False, "different after MATH's normalisation"
    from rftkit.graders.match import math_equal

    try:
        return math_equal(answer, reference, timeout_s)
    except ValueError as exc:  # the reference does not parse as math (a word answer, "\\text{(C)}")
        return False, f"different after MATH's normalisation; no symbolic comparison ({exc})"


class MathBoxedParams(GraderParams):
    solution_field: str = Field("solution", description="Field with the reference solution; its last \\boxed{} "
                                "is the answer.")
    answer_field: str | None = Field(None, description="Field with the bare reference answer instead (MATH-500's "
                                     "'answer'); overrides solution_field.")
    symbolic: bool = Field(True, description="When the normalised strings differ, compare with math-verify.")
    timeout_s: int = Field(5, ge=1, description="math-verify's time limit per comparison.")


@dataclass(frozen=True)
class MathBoxed:
    name: str
    solution_field: str
    answer_field: str | None
    symbolic: bool
    timeout_s: int

    def grade(self, example: Example, completion: str) -> Grade:
        reference = reference_answer(example, self.solution_field, self.answer_field)
        boxes = boxed_contents(completion)
        if not boxes:
            return Grade(0.0, "no \\boxed{} answer")
        answer = boxes[-1].strip()
        ok, how = equivalent(answer, reference, self.symbolic, self.timeout_s)
        details = {"answer": answer[:200], "reference": reference, "method": how, "boxes": len(boxes)}
        shown = f"{answer[:60]!r}" + ("..." if len(answer) > 60 else "")
        if ok:
            return Grade(1.0, f"correct: {shown} = {reference!r} ({how})", details)
        return Grade(0.0, f"answer {shown} != {reference!r} ({how})", details)


@register("math_boxed", MathBoxedParams, "MATH: the completion's last \\boxed{} against the reference solution's "
          "(MATH's normalisation, then numbers, then math-verify)")
def _build(name: str, p: MathBoxedParams) -> MathBoxed:
    return MathBoxed(name, p.solution_field, p.answer_field, p.symbolic, p.timeout_s)
