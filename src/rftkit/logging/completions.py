"""completions.jsonl (`store_completions: true`): every completion of every step, with what regrading needs.

One line per completion, in batch order: the step, its prompt group within the step, the example
as a dataset row (`Example.to_row()`: id, prompt and every field the graders read), the completion,
its token count, and the reward and grades the run trained on. `rft regrade` reads the rows back
into `Example`s and re-scores the completions with edited graders; samples.jsonl keeps only
`samples_per_step` completions per step and no example fields.
"""

from __future__ import annotations

from typing import Any, Sequence

from rftkit.data import Example
from rftkit.graders.combine import GradedCompletion

COMPLETIONS_FILE = "completions.jsonl"


def grade_fields(graded: GradedCompletion) -> dict[str, dict[str, Any]]:
    """A completion's grades as JSON: score, reason, error, masked, flags per grader (as samples.jsonl has them)."""
    return {name: {"score": g.score, "reason": g.reason, "error": g.error, "masked": g.masked, "flags": list(g.flags)}
            for name, g in graded.grades.items()}


def completion_records(step: int, examples: Sequence[Example], completions: Sequence[str],
                       graded: Sequence[GradedCompletion], lengths: Sequence[int], group_size: int,
                       policy_version: int) -> list[dict[str, Any]]:
    """One record per completion of a step's batch ([N] each argument; rows i*G..i*G+G-1 are group i)."""
    return [{"step": step, "group": i // group_size, "policy_version": policy_version,
             "example": examples[i].to_row(), "completion": completions[i], "completion_tokens": int(lengths[i]),
             "reward": graded[i].reward, "grades": grade_fields(graded[i])}
            for i in range(len(completions))]


def number_groups(parts: list[list[dict[str, Any]]], group_size: int) -> list[dict[str, Any]]:
    """Every rank's records of a step (rank order) as one batch: groups numbered across the ranks' shards."""
    records = [record for part in parts for record in part]
    for i, record in enumerate(records):
        record["group"] = i // group_size
    return records
