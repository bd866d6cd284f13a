"""Batched sampling with a KV cache, recording per-token log-probs while sampling.

Each distinct prompt is encoded once (one prefill over B prompts), its cache is then expanded
to B*G rows, and all B*G completions decode together. The cache is allocated once at its final
length and written in place (no per-token concatenation); the attention mask is one preallocated
boolean buffer, passed as the 4-D mask so that no mask is rebuilt per step. Finished rows are
dropped from the batch and the cache once a quarter of the live rows have finished: pruning
costs a copy of the cache, so pruning on every finish costs more than it saves.

The log-prob of each sampled token is taken from the same logits it was sampled from,
log_softmax(logits / temperature)[token] = logits[token] / T - logsumexp(logits / T): with one
optimisation pass per batch these are exactly the old-policy log-probs, and no extra forward
is needed (tests/rollout/test_logprobs.py checks them against a fresh forward).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

PRUNE_FRACTION = 0.25  # drop finished rows once this fraction of the live rows has finished


@dataclass
class SampleOutput:
    prompt_ids: torch.Tensor  # [N, P] left-padded prompt tokens, N = B * G (row i*G+g = prompt i, sample g)
    prompt_mask: torch.Tensor  # [N, P] 1 for real prompt tokens
    completion_ids: torch.Tensor  # [N, T] right-padded sampled tokens (EOS included when produced)
    completion_mask: torch.Tensor  # [N, T] 1 for sampled tokens up to and including EOS
    logprobs: torch.Tensor  # [N, T] log pi_old(token) under the sampling temperature; 0 where masked


class PreallocatedLayer(DynamicLayer):
    """A KV-cache layer allocated once at `capacity` positions and written in place.

    `update` returns views of the filled prefix, so attention sees exactly what a growing cache
    would hold, without the per-token `torch.cat` of the whole cache.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows, heads, _, _ = key_states.shape
        self.key_buffer = key_states.new_empty((rows, heads, self.capacity, key_states.shape[-1]))  # [R, H, C, D]
        self.value_buffer = value_states.new_empty((rows, heads, self.capacity, value_states.shape[-1]))
        self.device, self.is_initialized = key_states.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        self.key_buffer[:, :, self.length:end] = key_states
        self.value_buffer[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def fill(self, key_states: torch.Tensor, value_states: torch.Tensor, copies: int) -> None:
        """Start the cache with a prefix of B rows, each written `copies` times (rows b*copies to
        b*copies + copies - 1 hold row b): the expanded prefill without a second copy of the cache."""
        rows, heads, length, dim = key_states.shape
        self.key_buffer = key_states.new_empty((rows * copies, heads, self.capacity, dim))
        self.value_buffer = value_states.new_empty((rows * copies, heads, self.capacity, value_states.shape[-1]))
        self.key_buffer.view(rows, copies, heads, self.capacity, dim)[:, :, :, :length] = key_states[:, None]
        self.value_buffer.view(rows, copies, heads, self.capacity, -1)[:, :, :, :length] = value_states[:, None]
        self.device, self.is_initialized, self.length = key_states.device, True, length
        self.keys, self.values = self.key_buffer[:, :, :length], self.value_buffer[:, :, :length]

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
        self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]


def unwrap_peft(model):
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def cache_kwarg(model) -> str:
    """transformers 5 renamed `past_key_values` to `cache`; support both."""
    params = inspect.signature(unwrap_peft(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(model, capacity: int) -> Cache:
    layers = unwrap_peft(model).config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[PreallocatedLayer(capacity) for _ in range(layers)])


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
    """Sample one token per row; return (tokens [R], log-probs [R] under logits/temperature).

    Sampling is an inverse-CDF draw: one uniform per row against the running sum of
    exp(logits/T - max), the first token whose cumulative weight exceeds it (a token of weight 0
    is never drawn). One random number per row instead of one per vocabulary entry (the Gumbel-max
    draw) is half the cost of a draw on a CPU. The chosen token's log-prob is its scaled logit minus
    the row's logsumexp, max + log(sum of the weights).
    """
    scaled = logits.float() / temperature  # [R, V]
    if greedy:
        tokens = scaled.argmax(dim=-1)
    elif top_p < 1.0:
        probs = torch.softmax(scaled, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p  # always keeps the top token
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    else:
        top = scaled.max(dim=-1, keepdim=True).values
        cumulative = (scaled - top).exp_().cumsum_(dim=-1)  # [R, V]
        total = cumulative[:, -1:]
        draw = torch.rand(total.shape, generator=generator, dtype=total.dtype, device=total.device).mul_(total)
        tokens = torch.searchsorted(cumulative, draw, right=True).squeeze(-1).clamp_(max=scaled.shape[-1] - 1)
        return tokens, (scaled.gather(-1, tokens[:, None]) - top - total.log()).squeeze(-1)
    chosen = scaled.gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, chosen - torch.logsumexp(scaled, dim=-1)


def sample(model, prompts: list[list[int]], num_generations: int, max_new_tokens: int, eos_ids: set[int],
           pad_id: int, temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
           generator: torch.Generator | None = None, decoder=None) -> SampleOutput:
    """Sample `num_generations` completions for each prompt (token-id lists).

    `decoder` (a `fast_decode.FastDecoder` of `model`) runs the prefill and the one-token decode
    steps; without it, every forward runs through the model's own.
    """
    out = _sample(model, prompts, num_generations, max_new_tokens, eos_ids, pad_id, temperature, top_p, greedy,
                  generator, decoder)
    # Inference-mode tensors cannot enter autograd (the update uses old_logprobs); copies made here can.
    return SampleOutput(*(t.clone() for t in (out.prompt_ids, out.prompt_mask, out.completion_ids,
                                              out.completion_mask, out.logprobs)))


@torch.inference_mode()
def _sample(model, prompts, num_generations, max_new_tokens, eos_ids, pad_id, temperature, top_p, greedy,
            generator, decoder) -> SampleOutput:
    device = next(unwrap_peft(model).parameters()).device  # every tensor of the rollout lives with the model
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    width = prompt_ids.shape[1]
    cache, cache_key = _new_cache(model, width + max_new_tokens), cache_kwarg(model)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    # Each prompt is encoded once; its cache is expanded to its G rows of the B*G batch.
    if decoder is not None:  # writes the keys and values straight into the expanded cache
        last_logits = decoder.prefill(prompt_ids, prompt_mask, positions, cache.layers, num_generations)
    else:
        out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True,
                    logits_to_keep=1, **{cache_key: cache})
        last_logits = out.logits[:, -1, :]
        if num_generations > 1:
            cache.batch_repeat_interleave(num_generations)
    if num_generations > 1:
        last_logits = last_logits.repeat_interleave(num_generations, dim=0)
        prompt_ids = prompt_ids.repeat_interleave(num_generations, dim=0)
        prompt_mask = prompt_mask.repeat_interleave(num_generations, dim=0)
    n = prompt_ids.shape[0]
    completion_ids = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=device)
    completion_mask = torch.zeros((n, max_new_tokens), dtype=torch.long, device=device)
    logprobs = torch.zeros((n, max_new_tokens), dtype=torch.float32, device=device)
    rows = torch.arange(n, device=device)  # original row index of each row in the (possibly pruned) batch
    running = torch.ones(n, dtype=torch.bool, device=device)  # [rows] not finished yet
    attention = torch.zeros((n, width + max_new_tokens), dtype=torch.bool, device=device)  # [rows, P + T]
    attention[:, :width] = prompt_mask.bool()
    next_position = prompt_mask.sum(-1)  # [rows]
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        tokens, token_logprobs = _pick_tokens(last_logits, temperature, top_p, greedy, generator)
        live = rows[running]
        completion_ids[live, step] = tokens[running]
        completion_mask[live, step] = 1
        logprobs[live, step] = token_logprobs[running]
        running &= ~torch.isin(tokens, eos)
        finished = len(rows) - int(running.sum())
        if step == max_new_tokens - 1 or finished == len(rows):
            break
        if finished and finished >= PRUNE_FRACTION * len(rows):  # drop finished rows from the batch and the cache
            keep = running.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            rows, tokens, attention, next_position = rows[keep], tokens[keep], attention[keep], next_position[keep]
            running = running[keep]
        attention[:, width + step] = True
        if decoder is not None:
            last_logits = decoder.step(tokens, next_position, cache.layers, attention[:, :width + step + 1])
        else:
            out = model(input_ids=tokens[:, None], attention_mask=attention[:, None, None, :width + step + 1],
                        position_ids=next_position[:, None], use_cache=True, **{cache_key: cache})
            last_logits = out.logits[:, -1, :]
        next_position = next_position + 1
    used = int(completion_mask.sum(-1).max().item()) if n else 0
    return SampleOutput(prompt_ids, prompt_mask, completion_ids[:, :used], completion_mask[:, :used],
                        logprobs[:, :used])


@torch.no_grad()
def generate_with_logprobs(model, prompts: list[list[int]], num_generations: int, max_new_tokens: int,
                           eos_ids: set[int], pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
                           greedy: bool = False) -> SampleOutput:
    """The same contract as `sample`, through `model.generate` (the baseline `benchmarks/rollout.py` measures).

    `generate` expands each prompt G times before the prefill and keeps finished rows in the
    batch; the log-probs come from its raw logits (`output_logits`) under the same temperature.
    """
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens,
                         do_sample=not greedy, temperature=temperature if not greedy else None, top_p=top_p,
                         top_k=None, num_return_sequences=num_generations, eos_token_id=sorted(eos_ids),
                         pad_token_id=pad_id, output_logits=True, return_dict_in_generate=True)
    completion_ids = out.sequences[:, prompt_ids.shape[1]:]  # [N, T]
    is_eos = torch.isin(completion_ids, torch.tensor(sorted(eos_ids)))
    completion_mask = ((is_eos.long().cumsum(-1) - is_eos.long()) == 0).long()  # up to and including the first EOS
    logits = torch.stack(out.logits, dim=1).float() / temperature  # [N, T, V]
    logprobs = torch.log_softmax(logits, -1).gather(-1, completion_ids[:, :, None]).squeeze(-1) * completion_mask
    completion_ids = torch.where(completion_mask.bool(), completion_ids, pad_id)
    return SampleOutput(prompt_ids.repeat_interleave(num_generations, 0),
                        prompt_mask.repeat_interleave(num_generations, 0), completion_ids, completion_mask, logprobs)
