"""Grades per second of the deterministic graders on this machine (single process, one core).

    .venv/bin/python benchmarks/graders.py          # prints a table, writes benchmarks/results/graders.json

Each grader grades realistic completions (a few hundred characters of reasoning then an
answer) for a fixed wall-clock budget; the rate is completions / second through
`grader.grade`, and separately through `grade_all` (the trainer's path, with error handling
and combination). Goal from the grader issue: string and regex >= 10,000 per second.
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from pathlib import Path

from rftkit.data import Example
from rftkit.graders import GRADER_TYPES, WeightedGrader, load_builtin_graders
from rftkit.graders.combine import grade_all

BUDGET_S = 2.0
GOALS = {"string_check": 10_000, "exact_match": 10_000, "regex": 10_000}


def _completions(rng: random.Random, n: int) -> tuple[list[Example], list[str]]:
    examples, completions = [], []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        answer = a + b if rng.random() < 0.5 else a + b + 1
        reasoning = " ".join(rng.choice(["so", "then", "we", "add", "the", "numbers", "carry", "check"])
                             for _ in range(60))
        json_out = json.dumps({"a": a, "b": b, "sum": answer, "note": reasoning[:80]})
        examples.append(Example(f"e{i}", f"What is {a} + {b}?", fields={"answer": str(a + b), "a": a, "b": b}))
        completions.append(f"{reasoning}\n<answer>{answer}</answer>" if i % 4 else json_out)
    return examples, completions


CASES = {
    "string_check": ("string_check", {"reference": "{{item.answer}}", "operation": "like"}),
    "exact_match": ("exact_match", {"reference": "{{item.answer}}", "extract": "answer_tag"}),
    "regex": ("regex", {"must_match": [r"<answer>\s*-?\d+\s*</answer>"], "must_not_match": [r"(?i)as an ai"]}),
    "json_schema": ("json_schema", {"schema": {"type": "object", "required": ["a", "b", "sum"],
                                               "properties": {"sum": {"type": "integer"}}},
                                    "credit": "required_fields"}),
    "math_equivalence": ("math_equivalence", {"reference": "{{item.answer}}", "extract": "answer_tag"}),
    "math_equivalence_symbolic": ("math_equivalence", {"reference": "\\frac{{{item.a}}}{2}",
                                                       "extract": "answer_tag"}),
}


def rate(grade, examples: list[Example], completions: list[str]) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < BUDGET_S:
        i = done % len(examples)
        grade(examples[i], completions[i])
        done += 1
    return done / (time.perf_counter() - start)


def batch_rate(grader, examples: list[Example], completions: list[str]) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < BUDGET_S:
        grade_all([WeightedGrader(grader, 1.0)], examples, completions)
        done += len(examples)
    return done / (time.perf_counter() - start)


def main() -> int:
    load_builtin_graders()
    examples, completions = _completions(random.Random(0), 512)
    rows = []
    for label, (type_name, params) in CASES.items():
        grader_type = GRADER_TYPES[type_name]
        grader = grader_type.build(label, grader_type.params.model_validate(params))
        grader.grade(examples[0], completions[0])  # warm-up: lazy imports, caches
        single = rate(grader.grade, examples, completions)
        batched = batch_rate(grader, examples[:64], completions[:64])
        goal = GOALS.get(label)
        rows.append({"grader": label, "type": type_name, "grades_per_s": round(single),
                     "grade_all_per_s": round(batched), "goal_per_s": goal,
                     "meets_goal": None if goal is None else single >= goal})
    print(f"{'grader':<28}{'grade/s':>10}{'grade_all/s':>13}{'goal':>9}")
    for row in rows:
        goal = "" if row["goal_per_s"] is None else f"{row['goal_per_s']:,}"
        print(f"{row['grader']:<28}{row['grades_per_s']:>10,}{row['grade_all_per_s']:>13,}{goal:>9}")
    out = Path(__file__).parent / "results" / "graders.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "python": sys.version.split()[0],
                               "budget_s_per_case": BUDGET_S, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["meets_goal"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
