"""The environment protocol and the episode record: what crosses the boundary between rollout and a world.

An environment starts from an `Example`, answers each model turn with an `EnvReply` (observation
messages, or the end of the episode, and an optional per-turn reward), and scores its final states.
The runner (rftkit.envs.episodes) owns the limits (`env.max_turns`, `env.max_episode_tokens`), the
token layout and the chat template; an environment sees and returns text only.

    class Environment(Protocol):
        tools: Sequence[Tool]                                 # callable by the model (rftkit.envs.tools)
        def reset(self, example) -> EpisodeStart              # fresh state, seeded by the example
        def step(self, state, reply: str) -> EnvReply         # one model turn -> observation or end
        def close(self, state, reason: str) -> None           # the episode ended ('environment', 'max_turns', ...)
        def score(self, states) -> list[Grade | None]         # the final states' outcomes, in order

Graders see an episode through the text of its final model turn (a `Transcript`, a str) whose
`.episode` is the whole trajectory and the environment's final state and outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from rftkit.data import Example
from rftkit.graders.base import Grade

Message = dict[str, str]  # {"role": "assistant" | "user" | "tool" | "system", "content": ...}

# Why an episode ended: the environment said so, rftkit's turn limit, or its token budget.
FINISH_REASONS = ("environment", "max_turns", "token_budget")


class EnvironmentFailure(RuntimeError):
    """An environment raised: the message names the environment, the example and the turn.

    Unlike a grader (scored 0 for that completion), a failing environment stops the run: the
    trajectory it was building has no defined next observation."""


@dataclass(frozen=True)
class EpisodeStart:
    state: Any  # the environment's own per-episode state
    messages: tuple[Message, ...] | None = None  # the first prompt; None: the example's own (as single-turn)
    tools: tuple[Any, ...] | None = None  # this episode's tools; None: the environment's `tools`


@dataclass(frozen=True)
class EnvReply:
    """The environment's answer to one model turn."""

    observation: tuple[Message, ...] = ()  # messages the model sees next (role user or tool)
    done: bool = False  # the episode is over (the observation, if any, is then not shown)
    reward: float = 0.0  # optional per-turn reward, added to the episode's return


@runtime_checkable
class Environment(Protocol):
    name: str
    tools: Sequence[Any]  # rftkit.envs.tools.Tool

    def reset(self, example: Example) -> EpisodeStart: ...

    def step(self, state: Any, reply: str) -> EnvReply: ...

    def close(self, state: Any, reason: str) -> None: ...

    def score(self, states: Sequence[Any]) -> list[Grade | None]: ...


@dataclass
class Episode:
    """One finished trajectory: the first prompt, then every later message in order.

    Model turns have role 'assistant' (their tokens carry gradient); every other message is the
    environment's (its tokens are attended to but masked from the loss)."""

    example: Example
    prompt: tuple[Message, ...]  # what the model saw before its first turn
    messages: list[Message]  # model and environment turns after the prompt, in order
    state: Any  # the environment's final state
    finish: str  # one of FINISH_REASONS
    turn_rewards: list[float] = field(default_factory=list)  # [model turns] the environment's per-turn rewards
    outcome: Grade | None = None  # the environment's score of its final state (None: it gives none)
    tokens: int = 0  # tokens after the prompt: model and environment
    model_tokens: int = 0

    @property
    def model_turns(self) -> int:
        return sum(m["role"] == "assistant" for m in self.messages)

    @property
    def final_reply(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), "")

    def record(self) -> dict[str, Any]:
        """The whole trajectory turn by turn (the first prompt's messages, then every turn), as samples.jsonl,
        `rft eval --output` and `rft grade --output` write it and `rft report` shows it."""
        return {"messages": [dict(m) for m in self.prompt] + [dict(m) for m in self.messages],
                "finish": self.finish, "model_turns": self.model_turns,
                "turn_rewards": list(self.turn_rewards), "tokens": self.tokens,
                "outcome": None if self.outcome is None else {"score": self.outcome.score,
                                                             "reason": self.outcome.reason}}


class Transcript(str):
    """What graders see of an episode: the text of its final model turn, as a plain `str`, so that every
    single-turn grader applies unchanged; `.episode` holds the whole trajectory for graders that read it
    (the `environment` grader reads its outcome)."""

    episode: Episode

    def __new__(cls, episode: Episode) -> "Transcript":
        text = super().__new__(cls, episode.final_reply)
        text.episode = episode
        return text

    def __reduce__(self):  # pickles (Ray, torchrun gathers) with its episode
        return (Transcript, (self.episode,))


def episode_of(completion: str) -> Episode | None:
    return completion.episode if isinstance(completion, Transcript) else None


def score_each(env: Any, states: Sequence[Any]) -> list[Grade | None]:
    """`Environment.score` for environments whose outcome depends on one state alone (`env.outcome(state)`)."""
    return [env.outcome(state) for state in states]
