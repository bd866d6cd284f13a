"""The plain data that crosses stage boundaries: prompts -> rollouts -> targets -> update.

Each stage takes and returns these typed records (no string-keyed bags). Every tensor field
carries a shape comment; N = prompts x num_generations rows, T = completion tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from rftkit.data import Example


@dataclass(frozen=True)
class SamplingSettings:
    """How a rollout backend samples: what `rollout`/`train`/`eval` settings it needs, and nothing else."""

    num_generations: int  # completions per prompt (the group size G)
    max_new_tokens: int
    temperature: float
    top_p: float = 1.0
    greedy: bool = False
    chat_template: bool = True  # render prompts through the tokenizer's chat template
    system_prompt: str | None = None


@dataclass
class RolloutBatch:
    examples: list[Example]  # [N] the prompt each completion answers (each prompt repeated G times)
    completions: list[str]  # [N] decoded completion text (special tokens removed)
    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, T] right-padded
    completion_mask: torch.Tensor  # [N, T]
    old_logprobs: torch.Tensor  # [N, T] behaviour log-probs recorded while sampling
    group_size: int
    policy_version: int = 0  # optimizer steps the sampling policy had taken (the async pipeline bounds staleness by it)
    # Multi-turn episodes (rftkit.envs): completion_ids holds model and environment turns; completion_mask is
    # what the forward attends to, action_mask the model's own tokens (the loss). None: every completion token.
    action_mask: torch.Tensor | None = None  # [N, T]
    episodes: list | None = None  # [N] rftkit.envs.Episode of each row; None: single-turn rollouts

    @property
    def loss_mask(self) -> torch.Tensor:  # [N, T] the tokens that carry gradient
        return self.completion_mask if self.action_mask is None else self.action_mask

    @property
    def device(self) -> torch.device:
        """Where the batch's tensors live (all of them: `to` moves them together)."""
        return self.completion_ids.device

    @property
    def completion_lengths(self) -> torch.Tensor:  # [N]
        return self.completion_mask.sum(-1)

    def to(self, device: torch.device | str) -> "RolloutBatch":
        return replace(self, prompt_ids=self.prompt_ids.to(device), prompt_mask=self.prompt_mask.to(device),
                       completion_ids=self.completion_ids.to(device),
                       completion_mask=self.completion_mask.to(device), old_logprobs=self.old_logprobs.to(device),
                       action_mask=None if self.action_mask is None else self.action_mask.to(device))

    def rows(self, index: torch.Tensor) -> "RolloutBatch":
        """The batch restricted to rows `index` ([n] long), in that order."""
        picked = index.tolist()
        index = index.to(self.device)
        return replace(self, examples=[self.examples[i] for i in picked],
                       completions=[self.completions[i] for i in picked], prompt_ids=self.prompt_ids[index],
                       prompt_mask=self.prompt_mask[index], completion_ids=self.completion_ids[index],
                       completion_mask=self.completion_mask[index], old_logprobs=self.old_logprobs[index],
                       action_mask=None if self.action_mask is None else self.action_mask[index],
                       episodes=None if self.episodes is None else [self.episodes[i] for i in picked])


@dataclass
class ValueTargets:
    old_values: torch.Tensor  # [N, T] value head's estimates at sampling time
    returns: torch.Tensor  # [N, T] GAE returns, the regression targets


@dataclass
class UpdateTargets:
    """What an algorithm hands the update besides the rollouts."""

    advantages: torch.Tensor  # [N] per completion or [N, T] per token (GAE)
    ref_logprobs: torch.Tensor | None  # [N, T] reference log-probs when a KL term is on
    value_targets: ValueTargets | None = None  # PPO only
    metrics: dict[str, float] = field(default_factory=dict)  # algorithm-specific step metrics
    # [M] the batch rows the update trains on, in this order (online DPO: chosen_0, rejected_0, chosen_1, ...);
    # advantages and ref_logprobs are then those rows' ([M], [M, T]). None: every row, in batch order.
    rows: torch.Tensor | None = None
