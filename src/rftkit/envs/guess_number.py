"""guess_number: find a hidden number in [low, high]; after each wrong guess the environment says
'Higher.' or 'Lower.'. Win (outcome 1) when a guess hits it within env.max_turns turns, else loss (0).

Why this game for a small model: the rules fit in one line and every observation is one word, so a
whole episode stays short (the embedded model's context is 256 tokens); the prompt is worded like the
Countdown prompt and the guess is written the way the Countdown model already answers
(`<answer>...</answer>`, an integer or any + - * / expression, evaluated exactly), so the first
episodes already win sometimes and the reward is not all-zero;
and a simple policy (halve the interval) always wins within ceil(log2(high - low + 1)) turns (6 for
the default ranges of at most 64 numbers), so the ceiling is 1.

The hidden number comes from the example (`data.source: guess_number`, seeded by `data.seed`), so the
G episodes of a prompt play the same game. Option `step_penalty` (per-turn reward) charges each
wrong guess, to reward faster wins.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from pydantic import Field

from rftkit.data import Example
from rftkit.envs import EnvParams, register_environment
from rftkit.envs.base import EnvReply, EpisodeStart, score_each
from rftkit.graders.base import Grade
from rftkit.tasks.countdown import ExpressionError, evaluate_expression, extract_answer


def render_prompt(low: int, high: int) -> str:
    # Worded like the Countdown prompt the embedded model was trained on, so that it answers with a guess.
    return (f"Using the numbers [{low}, {high}], guess my secret number from {low} to {high}. Use + - * / and "
            "each number at most once. Answer in <answer> </answer> tags. I say higher or lower.")


def generate(n: int, seed: int, options: dict[str, Any] | None = None) -> list[Example]:
    """`n` seeded games (the task generator of `data.source: guess_number`): a range [low, high] with low in
    [1, 200] and high - low + 1 in [16, max_span] (option, default 64), and a secret in it. The ranges
    differ from game to game so that prompts do (the held-out set is kept apart by prompt text)."""
    options = dict(options or {})
    max_span = options.pop("max_span", 64)
    if options:
        raise ValueError(f"data.options: unknown key(s) {sorted(options)} for guess_number; allowed: ['max_span']")
    if not isinstance(max_span, int) or max_span < 16:
        raise ValueError("data.options.max_span: must be an integer >= 16")
    rng = random.Random(f"guess-number-{seed}")
    examples = []
    for i in range(n):
        low = rng.randint(1, 200)
        high = low + rng.randint(16, max_span) - 1
        examples.append(Example(id=f"guess-{seed}-{i}", prompt=render_prompt(low, high),
                                fields={"secret": rng.randint(low, high), "low": low, "high": high}))
    return examples


def read_guess(reply: str) -> tuple[int | None, str]:
    answer, why = extract_answer(reply)
    if answer is None:
        return None, why
    try:
        value, _ = evaluate_expression(answer)
    except (ExpressionError, RecursionError) as exc:
        return None, f"{answer} is not a number ({exc})"
    if value.denominator != 1:
        return None, f"{answer} = {value} is not a whole number"
    return int(value), "ok"


@dataclass
class GameState:
    secret: int
    low: int
    high: int
    guesses: list[int | None] = field(default_factory=list)

    @property
    def won_on(self) -> int | None:
        return next((i + 1 for i, g in enumerate(self.guesses) if g == self.secret), None)


@dataclass
class GuessNumber:
    step_penalty: float = 0.0
    name: str = "guess_number"
    tools: Sequence = ()

    def reset(self, example: Example) -> EpisodeStart:
        try:
            secret, low, high = (int(example.fields[k]) for k in ("secret", "low", "high"))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"example {example.id}: guess_number needs integer fields 'secret', 'low' and 'high' "
                             "(data.source: guess_number makes them)") from None
        return EpisodeStart(GameState(secret, low, high))

    def step(self, state: GameState, reply: str) -> EnvReply:
        guess, why = read_guess(reply)
        state.guesses.append(guess)
        if guess == state.secret:
            return EnvReply(done=True)
        if guess is None:
            text = f"No guess: {why}."
        elif not state.low <= guess <= state.high:
            text = f"{guess} is not from {state.low} to {state.high}."
        else:
            text = "Higher." if guess < state.secret else "Lower."
        return EnvReply(({"role": "user", "content": text},), reward=-self.step_penalty)

    def close(self, state: GameState, reason: str) -> None:
        return None

    def outcome(self, state: GameState) -> Grade:
        turn = state.won_on
        if turn is not None:
            return Grade(1.0, f"won on turn {turn}", {"won_on": turn, "secret": state.secret})
        return Grade(0.0, f"lost: {state.secret} not found in {len(state.guesses)} guesses "
                     f"{[g for g in state.guesses]}", {"won_on": None, "secret": state.secret})

    def score(self, states) -> list[Grade | None]:
        return score_each(self, states)


class GuessNumberParams(EnvParams):
    step_penalty: float = Field(0.0, ge=0, description="Per-turn reward -step_penalty for each wrong guess.")


@register_environment("guess_number", GuessNumberParams, "Find a hidden number with higher/lower hints; win 1, "
                      "loss 0")
def _build(params: GuessNumberParams) -> GuessNumber:
    return GuessNumber(params.step_penalty)

