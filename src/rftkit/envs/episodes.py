"""Multi-turn rollouts: episodes against an environment, laid out as one [prompt | completion] row each.

    batch = EpisodeBackend(backend, env, limits).generate(policy, tokenizer, examples, settings, generator)

Row layout (what the update trains on): `prompt_ids` is the first prompt, left-padded, exactly as
in a single-turn batch (the G episodes of an example share it, so the packed forward still computes
it once); `completion_ids` is everything after it, model turns and environment turns in order.
`completion_mask` is 1 on all of those tokens (the forward attends to them), `action_mask` only on
the tokens the model sampled (the loss, and `old_logprobs`, which are 0 on environment tokens).
A one-turn episode is therefore the single-turn row with `action_mask == completion_mask`.

Each turn is sampled by the wrapped backend (`generate(..., prompts=token ids)`): turn 1 for all
examples with G samples each (one prefill per prompt), every later turn for the live episodes with
one sample each, from their whole token context (the backend re-encodes the context; its KV cache is
not kept across turns). The backend is all the runner needs of a model, so a Ray worker holding a
backend runs episodes with the same code.

Limits: `max_turns` model turns; `max_tokens` tokens after the first prompt (model and environment
together): a model turn is cut where the budget ends, and an environment turn that would leave no
room for another model token ends the episode instead of being shown. The environment still sees
(`step`) every model turn, including the last, so its final state judges the final answer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch

from rftkit.data import Example
from rftkit.envs.base import EnvReply, Environment, EnvironmentFailure, Episode, EpisodeStart, Transcript
from rftkit.envs.render import TurnRenderer
from rftkit.rollout.sampler import left_pad
from rftkit.types import RolloutBatch, SamplingSettings


@dataclass(frozen=True)
class EpisodeLimits:
    max_turns: int  # model turns per episode (env.max_turns)
    max_tokens: int  # tokens after the first prompt, model and environment (env.max_episode_tokens)


@dataclass
class _Row:
    """One episode while it runs."""

    example: Example
    state: Any
    prompt: tuple[dict, ...]
    prompt_ids: list[int]
    ids: list[int]
    actions: list[int]
    logprobs: list[float]
    messages: list[dict]
    turn_rewards: list[float]
    finish: str | None = None


def call_env(env: Environment, what: str, example: Example, turn: int, fn: Callable, *args):
    """Run one environment call; anything it raises becomes an `EnvironmentFailure` that names it."""
    try:
        return fn(*args)
    except EnvironmentFailure:
        raise
    except Exception as exc:
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise EnvironmentFailure(f"environment {env.name!r} raised {type(exc).__name__} in {what} (example "
                                 f"{example.id!r}, model turn {turn}): {message}") from exc


class EpisodeBackend:
    """A `RolloutBackend` whose rollouts are episodes; `backend` samples each turn."""

    def __init__(self, backend, env: Environment, limits: EpisodeLimits):
        self.backend, self.env, self.limits = backend, env, limits
        self._renderer: TurnRenderer | None = None

    def renderer(self, tokenizer, settings: SamplingSettings) -> TurnRenderer:
        r = self._renderer
        if r is None or r.tokenizer is not tokenizer or r.system_prompt != settings.system_prompt:
            self._renderer = TurnRenderer(tokenizer, settings.chat_template, settings.system_prompt)
        return self._renderer

    def generate(self, policy, tokenizer, examples: list[Example], settings: SamplingSettings,
                 generator: torch.Generator, policy_version: int = 0) -> RolloutBatch:
        renderer, env, g = self.renderer(tokenizer, settings), self.env, settings.num_generations
        rows = self._start_all(renderer, [example for example in examples for _ in range(g)])
        shared = all(rows[i].prompt_ids == rows[i - i % g].prompt_ids for i in range(len(rows)))
        if shared:  # the usual case: G episodes of an example share its first prompt (one prefill)
            first = self.backend.generate(policy, tokenizer, examples, settings, generator, policy_version,
                                          prompts=[rows[i * g].prompt_ids for i in range(len(examples))])
        else:
            first = self.backend.generate(policy, tokenizer, [r.example for r in rows],
                                          replace(settings, num_generations=1), generator, policy_version,
                                          prompts=[r.prompt_ids for r in rows])
        live = list(range(len(rows)))
        self._advance(renderer, rows, live, first, turn=1)
        for turn in range(2, self.limits.max_turns + 1):
            live = [i for i in live if rows[i].finish is None]
            if not live:
                break
            room = max(self.limits.max_tokens - len(rows[i].ids) for i in live)
            batch = self.backend.generate(policy, tokenizer, [rows[i].example for i in live],
                                          replace(settings, num_generations=1,
                                                  max_new_tokens=min(settings.max_new_tokens, room)),
                                          generator, policy_version,
                                          prompts=[rows[i].prompt_ids + rows[i].ids for i in live])
            self._advance(renderer, rows, live, batch, turn)
        outcomes = call_env(env, "score", rows[0].example, 0, env.score, [r.state for r in rows])
        if len(outcomes) != len(rows):
            raise EnvironmentFailure(f"environment {env.name!r}: score returned {len(outcomes)} outcomes for "
                                     f"{len(rows)} episodes")
        return self._batch(rows, outcomes, first, tokenizer.pad_token_id, g, policy_version)

    def _start_all(self, renderer: TurnRenderer, examples: list[Example]) -> list[_Row]:
        """One row per example. An environment with `reset_many` starts them together (the verifiers 0.4
        adapter launches one harness program per episode, so starting them one by one would serialise that)."""
        reset_many = getattr(self.env, "reset_many", None)
        if reset_many is None:
            starts = [call_env(self.env, "reset", example, 0, self.env.reset, example) for example in examples]
        else:
            starts = call_env(self.env, "reset", examples[0], 0, reset_many, examples)
            if len(starts) != len(examples):
                raise EnvironmentFailure(f"environment {self.env.name!r}: reset_many returned {len(starts)} starts "
                                         f"for {len(examples)} episodes")
        return [self._start(renderer, example, start) for example, start in zip(examples, starts)]

    def _start(self, renderer: TurnRenderer, example: Example, start: EpisodeStart) -> _Row:
        prompt = start.messages if start.messages is not None else tuple(example.chat(renderer.system_prompt))
        ids = renderer.prompt_ids(example, start.messages, list(self.env.tools if start.tools is None else start.tools))
        return _Row(example, start.state, tuple(prompt), ids, [], [], [], [], [])

    def _advance(self, renderer: TurnRenderer, rows: list[_Row], live: Sequence[int], batch: RolloutBatch,
                 turn: int) -> None:
        """Append each live episode's sampled turn, let the environment answer it, append the answer."""
        lengths = batch.completion_mask.sum(-1).tolist()
        sampled, logprobs = batch.completion_ids.tolist(), batch.old_logprobs.tolist()
        tokenizer = renderer.tokenizer
        texts, stops = [], []
        for j, i in enumerate(live):
            row = rows[i]
            keep = min(int(lengths[j]), self.limits.max_tokens - len(row.ids))
            tokens = sampled[j][:keep]
            stops.append(tokens[-1] if tokens and tokens[-1] in renderer.stop_ids else None)
            row.ids += tokens
            row.actions += [1] * len(tokens)
            row.logprobs += logprobs[j][:keep]
            texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
            row.messages.append({"role": "assistant", "content": texts[-1]})
        replies = self._step_all([rows[i] for i in live], texts, turn)
        for j, i in enumerate(live):
            row, reply, stopped = rows[i], replies[j], stops[j]
            row.turn_rewards.append(float(reply.reward))
            room = self.limits.max_tokens - len(row.ids)
            if reply.done:
                row.finish = "environment"
            elif turn >= self.limits.max_turns:
                row.finish = "max_turns"
            elif room <= 0:
                row.finish = "token_budget"
            else:
                observation = renderer.env_ids(reply.observation, stopped)
                if len(observation) >= room:  # no room left for the model to answer it
                    row.finish = "token_budget"
                else:
                    row.ids += observation
                    row.actions += [0] * len(observation)
                    row.logprobs += [0.0] * len(observation)
                    row.messages.extend(dict(m) for m in reply.observation)
            if row.finish is not None:
                call_env(self.env, "close", row.example, turn, self.env.close, row.state, row.finish)

    def _step_all(self, rows: list[_Row], texts: list[str], turn: int) -> list[EnvReply | None]:
        """The environment's answers to one model turn of each live episode: `step_many` where the environment
        has it (answered together), else `step` per episode in row order."""
        step_many = getattr(self.env, "step_many", None)
        if step_many is None:
            return [call_env(self.env, "step", row.example, turn, self.env.step, row.state, text)
                    for row, text in zip(rows, texts)]
        replies = call_env(self.env, "step", rows[0].example, turn, step_many, [row.state for row in rows], texts)
        if len(replies) != len(rows):
            raise EnvironmentFailure(f"environment {self.env.name!r}: step_many returned {len(replies)} replies for "
                                     f"{len(rows)} episodes")
        return replies

    def _batch(self, rows: list[_Row], outcomes, first: RolloutBatch, pad_id: int, group_size: int,
               policy_version: int) -> RolloutBatch:
        device = first.device
        prompt_ids, prompt_mask = left_pad([r.prompt_ids for r in rows], pad_id)
        width = max(1, max(len(r.ids) for r in rows))
        completion_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [N, T]
        completion_mask = torch.zeros((len(rows), width), dtype=torch.long)  # [N, T] model + environment tokens
        action_mask = torch.zeros((len(rows), width), dtype=torch.long)  # [N, T] model tokens
        old_logprobs = torch.zeros((len(rows), width), dtype=torch.float32)  # [N, T] 0 on environment tokens
        episodes = []
        for n, (row, outcome) in enumerate(zip(rows, outcomes)):
            length = len(row.ids)
            completion_ids[n, :length] = torch.tensor(row.ids, dtype=torch.long)
            completion_mask[n, :length] = 1
            action_mask[n, :length] = torch.tensor(row.actions, dtype=torch.long)
            old_logprobs[n, :length] = torch.tensor(row.logprobs, dtype=torch.float32)
            episodes.append(Episode(row.example, row.prompt, row.messages, row.state, row.finish or "max_turns",
                                    row.turn_rewards, outcome, length, sum(row.actions)))
        batch = RolloutBatch([r.example for r in rows], [Transcript(e) for e in episodes], prompt_ids, prompt_mask,
                             completion_ids, completion_mask, old_logprobs, group_size, policy_version,
                             action_mask=action_mask, episodes=episodes)
        return batch.to(device)


def turn_reward_sums(batch: RolloutBatch) -> torch.Tensor | None:
    """[N] each episode's per-turn rewards summed (the environment's shaping), or None for single-turn."""
    if batch.episodes is None:
        return None
    return torch.tensor([sum(e.turn_rewards) for e in batch.episodes], device=batch.device)
