"""Batched sampling with a KV cache, recording per-token log-probs while sampling.

Each distinct prompt is encoded once (one prefill over B prompts), its cache is then expanded
to B*G rows, and all B*G completions decode together. Rows that finished are dropped from the
batch (and from the cache) as they finish, so a batch costs what its longest live rows cost.
The log-prob of each sampled token is taken from the same logits it was sampled from,
log_softmax(logits / temperature): with one optimisation pass per batch these are exactly the
old-policy log-probs, and no extra forward is needed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch


@dataclass
class SampleOutput:
    prompt_ids: torch.Tensor  # [N, P] left-padded prompt tokens, N = B * G (row i*G+g = prompt i, sample g)
    prompt_mask: torch.Tensor  # [N, P] 1 for real prompt tokens
    completion_ids: torch.Tensor  # [N, T] right-padded sampled tokens (EOS included when produced)
    completion_mask: torch.Tensor  # [N, T] 1 for sampled tokens up to and including EOS
    logprobs: torch.Tensor  # [N, T] log pi_old(token) under the sampling temperature; 0 where masked


def _cache_kwarg(model) -> str:
    """transformers 5 renamed `past_key_values` to `cache`; support both."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(model):
    from transformers import DynamicCache

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return DynamicCache(config=base.config)
    except TypeError:  # older transformers
        return DynamicCache()


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


def _pick_tokens(logits: torch.Tensor, temperature: float, top_p: float, greedy: bool,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; return (tokens [R], log-probs [R] under logits/temperature)."""
    logprobs_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    if greedy:
        tokens = logprobs_all.argmax(dim=-1)
    else:
        probs = logprobs_all.exp()
        if top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p  # always keeps the top token
            sorted_probs = sorted_probs * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logprobs_all.gather(-1, tokens[:, None]).squeeze(-1)


@torch.no_grad()
def sample(model, prompts: list[list[int]], num_generations: int, max_new_tokens: int, eos_ids: set[int],
           pad_id: int, temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
           generator: torch.Generator | None = None) -> SampleOutput:
    """Sample `num_generations` completions for each prompt (token-id lists)."""
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    cache = _new_cache(model)
    cache_key = _cache_kwarg(model)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True,
                **{cache_key: cache})
    last_logits = out.logits[:, -1, :]
    # Expand the prefill to B*G rows: each prompt was encoded once.
    if num_generations > 1:
        cache.batch_repeat_interleave(num_generations)
        last_logits = last_logits.repeat_interleave(num_generations, dim=0)
        prompt_ids = prompt_ids.repeat_interleave(num_generations, dim=0)
        prompt_mask = prompt_mask.repeat_interleave(num_generations, dim=0)
    n = prompt_ids.shape[0]
    completion_ids = torch.full((n, max_new_tokens), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((n, max_new_tokens), dtype=torch.long)
    logprobs = torch.zeros((n, max_new_tokens), dtype=torch.float32)
    live = torch.arange(n)  # original row index of each row still in the batch
    attention = prompt_mask.clone()  # [live, P + t]
    next_position = prompt_mask.sum(-1)  # [live]
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long)
    for step in range(max_new_tokens):
        tokens, token_logprobs = _pick_tokens(last_logits, temperature, top_p, greedy, generator)
        completion_ids[live, step] = tokens
        completion_mask[live, step] = 1
        logprobs[live, step] = token_logprobs
        done = torch.isin(tokens, eos)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):  # drop finished rows from the batch and the cache
            keep = (~done).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            live, tokens, attention, next_position = live[keep], tokens[keep], attention[keep], next_position[keep]
        attention = torch.cat([attention, torch.ones((len(live), 1), dtype=torch.long)], dim=-1)
        out = model(input_ids=tokens[:, None], attention_mask=attention, position_ids=next_position[:, None],
                    use_cache=True, **{cache_key: cache})
        next_position = next_position + 1
        last_logits = out.logits[:, -1, :]
    width = int(completion_mask.sum(-1).max().item()) if n else 0
    return SampleOutput(prompt_ids, prompt_mask, completion_ids[:, :width], completion_mask[:, :width],
                        logprobs[:, :width])
