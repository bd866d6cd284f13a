"""Composition of graders into one reward per completion: the only place weights are applied.

reward = sum_i w_i * score_i / sum_i w_i over the graders that gave a signal, so the reward
stays in [0, 1] whatever the weights. A grader that raises scores 0 with the error as its
reason (counted in `grader/errors`); a masked grade (no signal) is left out of the weighted
mean, and a completion with no signal at all gets reward None (masked from the loss).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from rftkit.data import Example
from rftkit.graders import WeightedGrader
from rftkit.graders.base import BatchGrader, Grade


class GraderFailure(RuntimeError):
    """A grader failed on every completion of a batch: it gives no signal, so the run stops."""


@dataclass(frozen=True)
class GradedCompletion:
    reward: float | None  # None: no grader gave a signal; masked from the loss
    grades: dict[str, Grade]  # by grader name, in config order

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(flag for g in self.grades.values() for flag in g.flags)


@dataclass
class GradingStats:
    errors: Counter = field(default_factory=Counter)  # grader name -> completions it raised on
    masked: Counter = field(default_factory=Counter)
    flags: Counter = field(default_factory=Counter)  # reward-hack kind -> completions flagged


def _error_grade(exc: BaseException) -> Grade:
    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return Grade(0.0, f"grader raised {type(exc).__name__}: {message}", error=True)


def _grade_one_grader(grader, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]:
    if isinstance(grader, BatchGrader):
        try:
            grades = list(grader.grade_batch(examples, completions))
            if len(grades) != len(completions):
                raise ValueError(f"returned {len(grades)} grades for {len(completions)} completions")
            return grades
        except Exception as exc:  # a broken batch grader fails every completion, loudly (see check_health)
            return [_error_grade(exc)] * len(completions)
    grades = []
    for example, completion in zip(examples, completions):
        try:
            grade = grader.grade(example, completion)
            if not isinstance(grade, Grade):
                raise TypeError(f"returned {type(grade).__name__}, expected Grade")
        except Exception as exc:
            grade = _error_grade(exc)
        grades.append(grade)
    return grades


def grade_all(graders: Sequence[WeightedGrader], examples: Sequence[Example],
              completions: Sequence[str]) -> tuple[list[GradedCompletion], GradingStats]:
    """Grade completions[i] (answering examples[i]) with every grader and combine the scores."""
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
    per_grader = {wg.grader.name: _grade_one_grader(wg.grader, examples, completions) for wg in graders}
    weights = {wg.grader.name: wg.weight for wg in graders}
    stats = GradingStats()
    results = []
    for i in range(len(completions)):
        grades = {name: per_grader[name][i] for name in per_grader}
        total = weight_sum = 0.0
        for name, grade in grades.items():
            stats.errors[name] += grade.error
            stats.masked[name] += grade.masked
            stats.flags.update(grade.flags)
            if not grade.masked:
                total += weights[name] * grade.score
                weight_sum += weights[name]
        reward = total / weight_sum if weight_sum > 0 else None
        results.append(GradedCompletion(reward=reward, grades=grades))
    return results, stats


def check_health(stats: GradingStats, num_completions: int) -> None:
    """Stop the run when a grader raised on every completion: silence would waste the run."""
    if num_completions == 0:
        return
    broken = [name for name, count in stats.errors.items() if count == num_completions]
    if broken:
        raise GraderFailure(f"grader(s) {', '.join(broken)} raised on all {num_completions} completions of this "
                            "step; see the reasons in samples.jsonl or run `rft grade` to debug")
