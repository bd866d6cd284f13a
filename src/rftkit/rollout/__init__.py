"""Rollout: sample G completions per prompt from the current policy and keep what the update needs."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from rftkit.config import RFTConfig
from rftkit.data import Example
from rftkit.models.loading import encode_prompts, stop_token_ids
from rftkit.rollout.merged import MergedCopy, wants_merged_copy
from rftkit.rollout.sampler import SampleOutput, sample
from rftkit.types import RolloutBatch, SamplingSettings

__all__ = ["HFBackend", "RolloutBackend", "RolloutBatch", "SamplingSettings", "build_backend", "generate_rollouts"]


def generate_rollouts(policy, tokenizer, examples: list[Example], settings: SamplingSettings,
                      generator: torch.Generator, decoder=None, prompts: list[list[int]] | None = None,
                      policy_version: int = 0) -> RolloutBatch:
    """`prompts`: the examples' prompt token ids when the caller has them (encoded here otherwise)."""
    if prompts is None:
        prompts = encode_prompts(tokenizer, examples, settings.chat_template, settings.system_prompt)
    num_generations = settings.num_generations
    out: SampleOutput = sample(policy, prompts, num_generations, settings.max_new_tokens, stop_token_ids(tokenizer),
                               tokenizer.pad_token_id, temperature=settings.temperature, top_p=settings.top_p,
                               greedy=settings.greedy, generator=generator, decoder=decoder)
    completions = tokenizer.batch_decode(out.completion_ids * out.completion_mask
                                         + tokenizer.pad_token_id * (1 - out.completion_mask),
                                         skip_special_tokens=True)
    repeated = [example for example in examples for _ in range(num_generations)]
    return RolloutBatch(repeated, completions, out.prompt_ids, out.prompt_mask, out.completion_ids,
                        out.completion_mask, out.logprobs, num_generations, policy_version)


class RolloutBackend(Protocol):
    """Anything with `generate_rollouts`' signature as a `generate` method. `prompts`: the examples' prompt
    token ids when the caller rendered them itself (multi-turn episodes: a whole trajectory so far)."""

    def generate(self, policy, tokenizer, examples: list[Example], settings: SamplingSettings,
                 generator: torch.Generator, policy_version: int = 0,
                 prompts: list[list[int]] | None = None) -> RolloutBatch: ...


class HFBackend:
    """The built-in KV-cache sampler (CPU or GPU): on the policy itself, or on a merged copy of it.

    With `merge_lora` ('auto', 'on', 'off'; see rftkit.rollout.merged) the sampler decodes with a
    plain copy of the model whose weights have the current adapter merged in, refreshed on every call;
    with `fast_decode`, that copy's decode steps run through rftkit.models.kernels.fast_decode where supported.
    """

    def __init__(self, merge_lora: str = "off", fast_decode: str = "off"):
        self.merge_lora, self.fast_decode = merge_lora, fast_decode
        self.policy = None  # the policy `merged` was decided for
        self.merged = None  # its MergedCopy, when it wants one
        self.tokenizer = None  # the tokenizer `prompt_ids` was encoded with
        self.prompt_ids: dict[tuple, list[int]] = {}  # training revisits its prompts: render each chat once

    def encode(self, tokenizer, examples: list[Example], chat_template: bool,
               system_prompt: str | None) -> list[list[int]]:
        if tokenizer is not self.tokenizer:
            self.tokenizer, self.prompt_ids = tokenizer, {}
        keys = [(example.id, example.prompt, repr(example.messages), system_prompt, chat_template)
                for example in examples]
        missing = [(key, example) for key, example in zip(keys, examples) if key not in self.prompt_ids]
        if missing:
            encoded = encode_prompts(tokenizer, [example for _, example in missing], chat_template, system_prompt)
            self.prompt_ids.update((key, ids) for (key, _), ids in zip(missing, encoded))
        return [self.prompt_ids[key] for key in keys]

    def generate(self, policy, tokenizer, examples: list[Example], settings: SamplingSettings,
                 generator: torch.Generator, policy_version: int = 0,
                 prompts: list[list[int]] | None = None) -> RolloutBatch:
        if policy is not self.policy:  # decided once per policy (it counts parameters), not on every rollout
            self.policy = policy
            self.merged = (MergedCopy(policy, self.fast_decode != "off") if wants_merged_copy(self.merge_lora, policy)
                           else None)
            if self.fast_decode == "on" and (self.merged is None or self.merged.decoder is None):
                raise ValueError("rollout.fast_decode: 'on' but this policy has no fast decode path (it needs the "
                                 "merged copy, rollout.merge_lora, and a plain Qwen2/Llama architecture); use 'auto'")
        model = self.merged.refresh(policy) if self.merged else policy
        return generate_rollouts(model, tokenizer, examples, settings, generator,
                                 decoder=self.merged.decoder if self.merged else None,
                                 prompts=prompts if prompts is not None else self.encode(
                                     tokenizer, examples, settings.chat_template, settings.system_prompt),
                                 policy_version=policy_version)


def build_backend(config: RFTConfig, run_dir: Path) -> RolloutBackend:
    """The one place `rollout.backend` is read; with an `env:` the backend samples each turn of its episodes."""
    backend = _sampling_backend(config, run_dir)
    if config.env.name is None:
        return backend
    from rftkit.envs import episode_backend  # environments sit on top of any sampling backend

    return episode_backend(config, backend)


def _sampling_backend(config: RFTConfig, run_dir: Path) -> RolloutBackend:
    if config.rollout.backend == "vllm":
        from rftkit.models.loading import resolve_model_path
        from rftkit.rollout.vllm_backend import VllmBackend, create_engine

        dtype = "bfloat16" if config.model.dtype == "auto" else config.model.dtype  # vLLM runs on GPUs only
        engine = create_engine(resolve_model_path(config.model.name), dtype, config.lora.r,
                               config.rollout.gpu_memory_utilization, config.rollout.max_model_len,
                               config.train.seed)
        return VllmBackend(engine, adapter_root=run_dir / "vllm_adapter")
    return HFBackend(config.rollout.merge_lora, config.rollout.fast_decode)
