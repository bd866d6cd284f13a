"""countdown_feedback: Countdown with retries; after a wrong answer the environment says what was wrong.

The first prompt is the single-turn Countdown prompt, so the first turn is exactly a single-turn
rollout. Each model turn is checked by the Countdown verifier (exact rationals, no `eval`); a correct
answer ends the episode, a wrong one is answered with one short user message that says what the
expression evaluates to and what was wrong, e.g.

    (4+8)*3 = 36, not 31.
    (4+8)*7 = 84, and it uses 7, which is not among the given numbers [4, 8, 16, 3].
    No answer: no <answer>...</answer> tags.

The outcome is 1 when some turn solved the puzzle (the episode then ends on that turn), else 0.
Data: `data.source: countdown` (its rows' `numbers` and `target`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from rftkit.data import Example
from rftkit.envs import EnvParams, register_environment
from rftkit.envs.base import EnvReply, EpisodeStart, score_each
from rftkit.graders.base import Grade
from rftkit.tasks.countdown import _puzzle_fields, verify


@dataclass
class CountdownState:
    numbers: list[int]
    target: int
    verdicts: list[Grade] = field(default_factory=list)  # one per model turn

    @property
    def solved_on(self) -> int | None:
        return next((i + 1 for i, g in enumerate(self.verdicts) if g.score == 1.0), None)


def feedback(grade: Grade, numbers: list[int], target: int) -> str:
    """What a wrong answer evaluates to and what was wrong with it, in one short line."""
    answer, value = grade.details.get("answer"), grade.details.get("value")
    if answer is None:
        return f"No answer: {grade.reason}."
    if value is None:  # did not parse
        return f"{answer}: {grade.reason}."
    if grade.reason.startswith("evaluates to"):
        return f"{answer} = {value}, not {target}."
    wrong = grade.reason.removeprefix("uses ")
    return f"{answer} = {value}, and it uses {wrong}."


@dataclass
class CountdownFeedback:
    name: str = "countdown_feedback"
    tools: Sequence = ()

    def reset(self, example: Example) -> EpisodeStart:
        numbers, target = _puzzle_fields(example)
        return EpisodeStart(CountdownState(numbers, target))

    def step(self, state: CountdownState, reply: str) -> EnvReply:
        grade = verify(reply, state.numbers, state.target)
        state.verdicts.append(grade)
        if grade.score == 1.0:
            return EnvReply(done=True)
        return EnvReply(({"role": "user", "content": feedback(grade, state.numbers, state.target)},))

    def close(self, state: CountdownState, reason: str) -> None:
        return None

    def outcome(self, state: CountdownState) -> Grade:
        turn = state.solved_on
        if turn is not None:
            return Grade(1.0, f"solved on turn {turn}", {"solved_on": turn})
        last = state.verdicts[-1].reason if state.verdicts else "no turn"
        return Grade(0.0, f"not solved in {len(state.verdicts)} turn(s); last: {last}", {"solved_on": None})

    def score(self, states) -> list[Grade | None]:
        return score_each(self, states)


class CountdownFeedbackParams(EnvParams):
    pass


@register_environment("countdown_feedback", CountdownFeedbackParams, "Countdown with retries: a wrong answer is "
                      "answered with what it evaluates to and what was wrong; outcome 1 when a turn solves it")
def _build(params: CountdownFeedbackParams) -> CountdownFeedback:
    return CountdownFeedback()
