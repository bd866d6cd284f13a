"""Composition of graders into one reward per completion: the only place weights are applied.

reward = sum_i w_i * score_i / sum_i w_i over the graders that gave a signal, so the reward
stays in [0, 1] whatever the weights. A grader that raises scores 0 with the error as its
reason (counted in `grader/errors`); a masked grade (no signal) is left out of the weighted
mean, and a completion with no signal at all gets reward None (masked from the loss).

Errors stay with their row: when a batch grader raises on a batch, each completion is graded
again on its own, so one malformed row (a null field, a value nested past the recursion limit)
errors only itself. A completion longer than MAX_GRADED_CHARS is scored 0 by every grader with
a reason, without being passed to them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from rftkit.data import Example
from rftkit.graders import WeightedGrader
from rftkit.graders.base import BatchContext, BatchGrader, BatchShapeError, Grade

MAX_GRADED_CHARS = 1_000_000  # ~250k tokens: far past any max_completion_length, so only runaway output


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
    # Scalars a TRL reward function logged with `log_metric`, as `reward/<grader>/<name>`:
    # sums and counts over completions, so that stats of several batches add up.
    metric_sums: Counter = field(default_factory=Counter)
    metric_counts: Counter = field(default_factory=Counter)

    def metrics(self) -> dict[str, float]:
        return {name: self.metric_sums[name] / count for name, count in self.metric_counts.items() if count}

    def __add__(self, other: "GradingStats") -> "GradingStats":
        return GradingStats(self.errors + other.errors, self.masked + other.masked, self.flags + other.flags,
                            self.metric_sums + other.metric_sums, self.metric_counts + other.metric_counts)


def _error_grade(exc: BaseException) -> Grade:
    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return Grade(0.0, f"grader raised {type(exc).__name__}: {message}", error=True)


def _call_batch(grader, examples: Sequence[Example], completions: Sequence[str],
                context: BatchContext | None) -> list[Grade]:
    grades = list(grader.grade_batch(examples, completions, context=context) if getattr(
        grader, "accepts_context", False) else grader.grade_batch(examples, completions))
    if len(grades) != len(completions):
        raise BatchShapeError(f"returned {len(grades)} grades for {len(completions)} completions")
    if not all(isinstance(g, Grade) for g in grades):
        raise BatchShapeError("returned something that is not a Grade")
    return grades


def _grade_one_grader(grader, examples: Sequence[Example], completions: Sequence[str],
                      context: BatchContext | None = None) -> list[Grade]:
    if isinstance(grader, BatchGrader):
        try:
            return _call_batch(grader, examples, completions, context)
        except BatchShapeError as exc:  # the grader itself is wrong: every completion errs (see check_health)
            return [_error_grade(exc)] * len(completions)
        except Exception as exc:
            if len(completions) == 1:
                return [_error_grade(exc)]
        # Something in the batch broke it: grade each completion alone, so the error stays with its row.
        grades = []
        for i in range(len(completions)):
            try:
                grades += _call_batch(grader, examples[i:i + 1], completions[i:i + 1],
                                      None if context is None else context.rows([i]))
            except Exception as exc:
                grades.append(_error_grade(exc))
        return grades
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


def _too_long(completion: str) -> Grade:
    return Grade(0.0, f"completion is {len(completion):,} characters; longer than {MAX_GRADED_CHARS:,} is not "
                 "graded")


def grade_with(grader, examples: Sequence[Example], completions: Sequence[str],
               context: BatchContext | None = None) -> list[Grade]:
    """One grader's grades for a batch; runaway completions are scored 0 without reaching it."""
    keep = [i for i, c in enumerate(completions) if len(c) <= MAX_GRADED_CHARS]
    if len(keep) == len(completions):
        return _grade_one_grader(grader, examples, completions, context)
    kept = iter(_grade_one_grader(grader, [examples[i] for i in keep], [completions[i] for i in keep],
                                  None if context is None else context.rows(keep)) if keep else [])
    return [next(kept) if len(c) <= MAX_GRADED_CHARS else _too_long(c) for c in completions]


def grade_all(graders: Sequence[WeightedGrader], examples: Sequence[Example], completions: Sequence[str],
              context: BatchContext | None = None) -> tuple[list[GradedCompletion], GradingStats]:
    """Grade completions[i] (answering examples[i]) with every grader and combine the scores.

    `context` carries what TRL reward functions read besides the text (token ids, the step)."""
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
    if context is not None and context.completion_ids is not None and len(context.completion_ids) != len(completions):
        raise ValueError(f"{len(context.completion_ids)} completion_ids for {len(completions)} completions")
    per_grader = {wg.grader.name: grade_with(wg.grader, examples, completions, context) for wg in graders}
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
            for metric, value in grade.details.get("log_metric", {}).items():
                stats.metric_sums[f"reward/{name}/{metric}"] += value
                stats.metric_counts[f"reward/{name}/{metric}"] += 1
            if not grade.masked:
                total += weights[name] * grade.score
                weight_sum += weights[name]
        reward = total / weight_sum if weight_sum > 0 else None
        results.append(GradedCompletion(reward=reward, grades=grades))
    return results, stats


def check_health(stats: GradingStats, num_completions: int, graded: Sequence[GradedCompletion] = ()) -> None:
    """Stop the run when a grader raised on every completion: silence would waste the run. The message
    is one line per broken grader with the first completion's error (nothing else was written yet)."""
    if num_completions == 0:
        return
    broken = [name for name, count in stats.errors.items() if count == num_completions]
    if broken:
        first = {name: next((g.grades[name].reason for g in graded if name in g.grades), "") for name in broken}
        lines = [f"grader {name!r} raised on all {num_completions} completions of this step: {first[name]}"
                 for name in broken]
        raise GraderFailure("; ".join(lines) + ". Debug it with `rft grade CONFIG --show 5` before training")
