"""Rollout: sample G completions per prompt from the current policy and keep what the update needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rftkit.data import Example
from rftkit.models.loading import encode_prompts, stop_token_ids
from rftkit.rollout.sampler import SampleOutput, sample


@dataclass
class RolloutBatch:
    examples: list[Example]  # [N] the prompt each completion answers (each prompt repeated G times)
    completions: list[str]  # [N] decoded completion text (special tokens removed)
    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, T] right-padded
    completion_mask: torch.Tensor  # [N, T]
    old_logprobs: torch.Tensor  # [N, T] recorded while sampling
    group_size: int

    @property
    def completion_lengths(self) -> torch.Tensor:  # [N]
        return self.completion_mask.sum(-1)


def generate_rollouts(policy, tokenizer, examples: list[Example], num_generations: int, max_new_tokens: int,
                      temperature: float, top_p: float, generator: torch.Generator, model_config,
                      system_prompt: str | None, greedy: bool = False) -> RolloutBatch:
    prompts = encode_prompts(tokenizer, examples, model_config, system_prompt)
    out: SampleOutput = sample(policy, prompts, num_generations, max_new_tokens, stop_token_ids(tokenizer),
                               tokenizer.pad_token_id, temperature=temperature, top_p=top_p, greedy=greedy,
                               generator=generator)
    completions = tokenizer.batch_decode(out.completion_ids * out.completion_mask
                                         + tokenizer.pad_token_id * (1 - out.completion_mask),
                                         skip_special_tokens=True)
    repeated = [example for example in examples for _ in range(num_generations)]
    return RolloutBatch(repeated, completions, out.prompt_ids, out.prompt_mask, out.completion_ids,
                        out.completion_mask, out.logprobs, num_generations)
