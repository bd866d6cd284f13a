"""The code-generation task pack (MBPP/HumanEval-shaped, written for rftkit), graded by `python_tests`.

Each row of data/code_pack.jsonl has a prompt, the entry point, visible `tests` (shown in the prompt),
`hidden_tests` (not shown), and a `reference` solution with a `random_inputs` generator from which fresh
hidden tests are drawn at every grading call.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rftkit.data import Example, load_jsonl

PACK = Path(__file__).parent / "data" / "code_pack.jsonl"


def generate(n: int, seed: int, options: dict[str, Any] | None = None) -> list[Example]:
    """n problems from the pack in a seeded order, cycling when n exceeds the pack (no options)."""
    if options:
        raise ValueError(f"data.options: the code task takes no options; got {sorted(options)}")
    problems = load_jsonl(PACK)
    random.Random(f"code-{seed}").shuffle(problems)
    examples = []
    for i in range(n):
        problem, lap = problems[i % len(problems)], i // len(problems)
        examples.append(problem if lap == 0 else Example(id=f"{problem.id}-{lap}", prompt=problem.prompt,
                                                         fields=problem.fields))
    return examples
