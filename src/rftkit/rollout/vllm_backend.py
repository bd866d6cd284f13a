"""Rollouts through vLLM (GPU hosts): the same `RolloutBatch` as the built-in sampler.

Every step the current LoRA adapter is saved (PEFT format) and handed to vLLM as a new
`LoRARequest` (a fresh integer id, so vLLM loads it instead of reusing its cached copy); the
base weights are loaded into vLLM once. Each prompt is sent once as token ids with
`SamplingParams(n=G)`, so vLLM's prefix cache encodes it once for its G samples.

Log-probs: the engine is created with `logprobs_mode="processed_logprobs"` so that the
returned log-prob of each sampled token is taken after temperature scaling, i.e. the same
log_softmax(logits / T) the update computes (`logprobs=0` asks for the sampled token only).
vLLM applies top-p before those log-probs; keep `train.top_p: 1` with this backend so pi_old and
the update's pi are the same distribution. vLLM's kernels differ numerically from the training
forward, so the first-iteration ratio is exp(small) rather than exactly 1.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from rftkit.models.loading import encode_prompts, stop_token_ids
from rftkit.types import RolloutBatch, SamplingSettings

INSTALL_HINT = ("rollout.backend: vllm needs vLLM, which is not installed. Install it on a GPU host with "
                "`pip install rftkit[vllm]` (or `pip install -e .[vllm]`), or set rollout.backend: hf.")


def _vllm():
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return vllm, LoRARequest


def create_engine(model_path: str, dtype: str, lora_rank: int, gpu_memory_utilization: float,
                  max_model_len: int | None, seed: int):
    """A `vllm.LLM` with LoRA enabled (one adapter at a time) and post-temperature log-probs."""
    vllm, _ = _vllm()
    return vllm.LLM(model=model_path, dtype=dtype, enable_lora=True, max_lora_rank=lora_rank, max_loras=1,
                    logprobs_mode="processed_logprobs", gpu_memory_utilization=gpu_memory_utilization,
                    max_model_len=max_model_len, seed=seed)


class VllmBackend:
    """`generate(...)` as the built-in `HFBackend.generate`, through a vLLM engine.

    `engine`, `sampling_params` and `lora_request` default to vLLM's `LLM`, `SamplingParams`
    and `LoRARequest`; tests pass fakes that follow the same API.
    """

    def __init__(self, engine, adapter_root: str | Path | None = None, sampling_params=None, lora_request=None):
        if sampling_params is None or lora_request is None:
            vllm, LoRARequest = _vllm()
            sampling_params, lora_request = sampling_params or vllm.SamplingParams, lora_request or LoRARequest
        self.engine, self.sampling_params, self.lora_request = engine, sampling_params, lora_request
        self.adapter_root = Path(adapter_root or tempfile.mkdtemp(prefix="rftkit-vllm-"))
        self.version = 0

    def save_adapter(self, policy) -> object:
        """Save the current adapter under a new version and return the `LoRARequest` that loads it."""
        previous = self.adapter_root / f"adapter-{self.version}"
        self.version += 1
        path = self.adapter_root / f"adapter-{self.version}"
        policy.save_pretrained(str(path))
        shutil.rmtree(previous, ignore_errors=True)  # vLLM has already loaded (or evicted) the old one
        return self.lora_request(f"policy-v{self.version}", self.version, str(path))

    def generate(self, policy, tokenizer, examples, settings: SamplingSettings, generator: torch.Generator,
                 policy_version: int = 0, prompts: list[list[int]] | None = None) -> RolloutBatch:
        from rftkit.rollout.sampler import left_pad

        num_generations = settings.num_generations
        if prompts is None:
            prompts = encode_prompts(tokenizer, examples, settings.chat_template, settings.system_prompt)
        # vLLM's per-request seed
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        params = self.sampling_params(n=num_generations, temperature=0.0 if settings.greedy else settings.temperature,
                                      top_p=settings.top_p, max_tokens=settings.max_new_tokens, logprobs=0, seed=seed,
                                      stop_token_ids=sorted(stop_token_ids(tokenizer)))
        adapter = self.save_adapter(policy) if hasattr(policy, "get_base_model") else None  # rft eval of the base model
        outputs = self.engine.generate([{"prompt_token_ids": ids} for ids in prompts], params,
                                       lora_request=adapter, use_tqdm=False)
        samples = [sample for request in outputs for sample in request.outputs]  # row i*G+g: prompt i, sample g
        if len(samples) != len(prompts) * num_generations:
            raise RuntimeError(f"vLLM returned {len(samples)} completions for {len(prompts)} prompts x "
                               f"{num_generations} generations")
        width = max(1, max(len(s.token_ids) for s in samples))
        pad = tokenizer.pad_token_id
        completion_ids = torch.full((len(samples), width), pad, dtype=torch.long)  # [N, T]
        completion_mask = torch.zeros((len(samples), width), dtype=torch.long)  # [N, T]
        logprobs = torch.zeros((len(samples), width), dtype=torch.float32)  # [N, T]
        for row, s in enumerate(samples):
            ids = list(s.token_ids)
            if s.logprobs is None or len(s.logprobs) != len(ids):
                raise RuntimeError("vLLM returned no per-token log-probs; SamplingParams(logprobs=0) must be honoured")
            completion_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            completion_mask[row, :len(ids)] = 1
            logprobs[row, :len(ids)] = torch.tensor([step[token].logprob for step, token in zip(s.logprobs, ids)])
        prompt_ids, prompt_mask = left_pad(prompts, pad)
        completions = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        repeated = [example for example in examples for _ in range(num_generations)]
        batch = RolloutBatch(repeated, completions, prompt_ids.repeat_interleave(num_generations, 0),
                             prompt_mask.repeat_interleave(num_generations, 0), completion_ids, completion_mask,
                             logprobs, num_generations, policy_version)
        return batch.to(next(policy.parameters()).device)  # the learner's device, wherever vLLM ran
