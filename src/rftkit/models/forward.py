"""Per-token log-probs (and PPO's values) of completions under the policy: the training forward.

One row per completion is wasteful when G completions share a prompt: `_forward_packed` lays out
one row per distinct prompt, [prompt | completion 1 | completion 2 | ...], with a block mask, so
no prompt is computed twice and no completion is padded. For Qwen2/Llama LoRA policies the
packed forward runs through `models.kernels.fused_forward` (PEFT's function in fewer matmuls);
every other model, and `train.fused_forward: off`, uses the model's own forward. Every tensor
made here is made on the device of the inputs. PPO's separate critic (`ppo.value_model: separate`)
is the same base under a second adapter: `policy_and_values` runs it as a second forward.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from rftkit.models.kernels.fused_forward import FusedForward
from rftkit.rollout.sampler import unwrap_peft
from rftkit.types import RolloutBatch

def prompt_runs(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs of consecutive rows with the same prompt: (first row of each run [U], run lengths [U]).

    Rollouts put the G completions of a prompt next to each other, so a micro-batch of N rows
    usually holds N / G distinct prompts.
    """
    n = prompt_ids.shape[0]
    differs = (prompt_ids[1:] != prompt_ids[:-1]).any(-1) | (prompt_mask[1:] != prompt_mask[:-1]).any(-1)
    device = prompt_ids.device
    starts = torch.cat([torch.zeros(1, dtype=torch.long, device=device), differs.nonzero().squeeze(-1) + 1])
    return starts, torch.diff(starts, append=torch.tensor([n], device=device))


def _forward(model, prompt_ids, prompt_mask, completion_ids, completion_mask, with_hidden: bool,
             fused_forward: str = "auto"):
    """(logits [M, V] predicting the M real completion tokens, in row-major order of the mask; hidden
    states [N, T, H] that predict every completion position, or None; completion ids trimmed to [N, T]).

    Only real tokens get logits: padding columns are about half of [N, T] on short answers, and on a
    large vocabulary their logits would dominate time and memory."""
    keep = prompt_mask.any(0).nonzero()
    start = int(keep.min()) if len(keep) else 0  # drop columns that are padding in every row
    width = int(completion_mask.sum(-1).max())
    prompt_ids, prompt_mask = prompt_ids[:, start:], prompt_mask[:, start:]
    completion_ids, completion_mask = completion_ids[:, :width], completion_mask[:, :width]
    starts, counts = prompt_runs(prompt_ids, prompt_mask)
    mask_dtype = _packed_mask_dtype(model)
    if len(starts) < prompt_ids.shape[0] and width > 0 and mask_dtype is not None:
        return _forward_packed(model, prompt_ids, prompt_mask, completion_ids, completion_mask, starts, counts,
                               mask_dtype, with_hidden, fused_forward)
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([prompt_mask, completion_mask], dim=1)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    # The LM head runs only on the W + 1 last positions (logits_to_keep): prompt positions but the last
    # predict nothing we score, and on a large vocabulary their logits would dominate time and memory.
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, output_hidden_states=with_hidden,
                logits_to_keep=completion_ids.shape[1] + 1)
    window = slice(prompt_ids.shape[1] - 1, -1)  # position t predicts completion token t
    hidden = out.hidden_states[-1][:, window, :] if with_hidden else None
    return out.logits[:, :-1][completion_mask.bool()].float(), hidden, completion_ids


def _packed_mask_dtype(model) -> torch.dtype | None:
    """How a custom 4-D mask reaches this model's attention: bool for SDPA, additive float for eager;
    None for implementations that take no 4-D mask (flash attention), which use the unpacked path."""
    implementation = getattr(unwrap_peft(model).config, "_attn_implementation", None)
    return {"sdpa": torch.bool, "eager": torch.float32}.get(implementation)


def _forward_packed(model, prompt_ids, prompt_mask, completion_ids, completion_mask, starts, counts,
                    mask_dtype: torch.dtype, with_hidden: bool, fused_forward: str = "auto"):
    """`_forward` over one packed row per distinct prompt: [prompt | completion 1 | completion 2 | ...].

    Each completion attends to the whole prompt and to its own earlier tokens only, and its
    positions continue from the prompt's, so every token sees exactly what it sees in its own
    [prompt | completion] row: the same function, with gradients (the shared prompt collects the
    gradient of all its completions). The rows hold U*P + (real completion tokens) instead of
    N*(P + longest completion): no prompt is computed twice and no completion is padded.
    """
    # Built with whole-batch index arithmetic (no per-row loop): completions are contiguous from their
    # first column, prompts are left-padded.
    groups = len(starts)
    device = completion_ids.device
    group_of_row = torch.repeat_interleave(torch.arange(groups, device=device), counts)  # [N]
    lengths = completion_mask.sum(-1)  # [N]
    group_prompt = prompt_mask[starts].bool()  # [U, P]
    plen = group_prompt.sum(-1)  # [U]
    before = torch.cumsum(lengths, 0) - lengths  # [N] completion tokens before row n in the batch
    offset = before - before[starts][group_of_row]  # [N] ... and before it within its group
    width = int((plen + torch.zeros(groups, dtype=torch.long, device=device).index_add(0, group_of_row, lengths)).max())
    ids = torch.zeros((groups, width), dtype=torch.long, device=device)
    # -1: padding, 0: prompt, j: completion j
    segment = torch.full((groups, width), -1, dtype=torch.long, device=device)
    position = torch.zeros((groups, width), dtype=torch.long, device=device)
    u, col = group_prompt.nonzero(as_tuple=True)  # prompt tokens, in order within each row
    dest = (group_prompt.cumsum(-1) - 1)[u, col]
    ids[u, dest], segment[u, dest], position[u, dest] = prompt_ids[starts][u, col], 0, dest
    n, t = completion_mask.bool().nonzero(as_tuple=True)  # completion tokens
    g = group_of_row[n]
    column = plen[g] + offset[n] + t
    ids[g, column], segment[g, column], position[g, column] = completion_ids[n, t], n - starts[g] + 1, plen[g] + t
    # token 0 is predicted by the prompt's last column, token t by the column of token t - 1; padding: 0
    source = torch.zeros(completion_ids.shape, dtype=torch.long, device=device)  # [N, T]
    source[n, t] = torch.where(t == 0, plen[g] - 1, column - 1)
    causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
    keys = segment[:, None, :]
    allowed = causal & ((keys == 0) | (keys == segment[:, :, None])) & (keys != -1)  # [U, S, S]
    # PEFT's function in fewer, larger matmuls (rftkit.models.kernels.fused_forward)
    if fused_forward != "off" and FusedForward.supports(model):
        first = max(int(plen.min()) - 1, 0)  # no earlier column predicts a completion token
        hidden = FusedForward.hidden_states(model, ids, allowed[:, None], position, queries_from=first)
        hidden = hidden[group_of_row[:, None], (source - first).clamp(min=0)]
        logits = unwrap_peft(model).lm_head(hidden[completion_mask.bool()]).float()  # [M, V]
        return logits, hidden if with_hidden else None, completion_ids
    mask = allowed[:, None]
    if mask_dtype is not torch.bool:
        mask = torch.zeros(mask.shape, device=device).masked_fill(~mask, torch.finfo(torch.float32).min)
    # The LM head runs only from the shortest prompt's last column on (logits_to_keep): on a large
    # vocabulary the logits of prompt positions would dominate time and memory.
    keep = width - (int((segment == 0).sum(-1).min()) - 1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position, output_hidden_states=with_hidden,
                logits_to_keep=keep)
    logits = out.logits[group_of_row[n], source[n, t] - (width - keep)]  # [M, V]: real tokens only
    hidden = out.hidden_states[-1][group_of_row[:, None], source] if with_hidden else None
    return logits.float(), hidden, completion_ids


def token_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                   completion_mask: torch.Tensor, temperature: float,
                   with_entropy: bool = False, fused_forward: str = "auto") -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(completion token | prefix) under logits / temperature: [N, T] (and entropy [N, T])."""
    logp, entropy, _ = token_logprobs_and_values(model, None, prompt_ids, prompt_mask, completion_ids,
                                                 completion_mask, temperature, with_entropy, fused_forward)
    return logp, entropy


def token_logprobs_and_values(model, value_head, prompt_ids, prompt_mask, completion_ids, completion_mask,
                              temperature: float, with_entropy: bool = False, fused_forward: str = "auto"):
    """(log-probs [N, T], entropy [N, T] or None, values [N, T] or None when value_head is None).

    `fused_forward` ('auto', 'on', 'off': `train.fused_forward`): 'off' always runs the model's own
    forward; otherwise the fused kernels run where `FusedForward.supports` the policy."""
    logits, hidden, completion_ids = _forward(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                              with_hidden=value_head is not None, fused_forward=fused_forward)
    # Softmax, log-probs and entropy on the real tokens only; padding positions read 0.
    real = completion_mask[:, :completion_ids.shape[1]].bool()
    where = real.nonzero(as_tuple=True)
    logp_all = torch.log_softmax(logits / temperature, dim=-1)  # [M, V]
    chosen = logp_all.gather(-1, completion_ids[where][:, None])[:, 0]
    logprobs = logp_all.new_zeros(real.shape).index_put(where, chosen)
    entropy = None
    if with_entropy:
        entropy = logp_all.new_zeros(real.shape).index_put(where, -(logp_all.exp() * logp_all).sum(-1))
    values = value_head(hidden.float()).squeeze(-1) if value_head is not None else None
    return logprobs, entropy, values


def _trainable_flags(model) -> list[tuple[torch.nn.Parameter, bool]]:
    return [(param, param.requires_grad) for param in model.parameters()]


def _restore(flags: list[tuple[torch.nn.Parameter, bool]]) -> None:
    for param, flag in flags:
        param.requires_grad_(flag)


@contextmanager
def same_trainable(model):
    """Every parameter's requires_grad put back on exit: PEFT's disable_adapter, when it re-enables the
    adapters, makes every adapter but the active one untrainable (PPO's separate critic trains beside the
    policy's adapter)."""
    flags = _trainable_flags(model)
    try:
        yield model
    finally:
        _restore(flags)


@contextmanager
def active_adapter(policy, name: str | None):
    """`policy` with its PEFT adapter `name` active (None: as it is). PEFT's set_adapter also makes every other
    adapter untrainable; the flags are put back at once and on exit, so both adapters keep training."""
    if name is None:
        yield policy
        return
    flags, previous = _trainable_flags(policy), policy.active_adapter
    policy.set_adapter(name)
    _restore(flags)
    try:
        yield policy
    finally:
        policy.set_adapter(previous)
        _restore(flags)


def policy_and_values(policy, value_head, value_adapter: str | None, prompt_ids, prompt_mask, completion_ids,
                      completion_mask, temperature: float, with_entropy: bool = False, fused_forward: str = "auto"):
    """`token_logprobs_and_values` with PPO's critic: the value head on the policy's own last hidden state
    (value_adapter None: one forward), or on the same base under the critic's adapter (a second forward)."""
    if value_adapter is None or value_head is None:
        return token_logprobs_and_values(policy, value_head, prompt_ids, prompt_mask, completion_ids,
                                         completion_mask, temperature, with_entropy, fused_forward)
    logp, entropy, _ = token_logprobs_and_values(policy, None, prompt_ids, prompt_mask, completion_ids,
                                                 completion_mask, temperature, with_entropy, fused_forward)
    with active_adapter(policy, value_adapter):
        _, _, values = token_logprobs_and_values(policy, value_head, prompt_ids, prompt_mask, completion_ids,
                                                 completion_mask, temperature, False, fused_forward)
    return logp, entropy, values


def _pad_to(t: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, width - t.shape[1])) if t.shape[1] < width else t


@torch.no_grad()
def reference_logprobs(policy, batch: RolloutBatch, temperature: float, micro_batch_size: int,
                       fused_forward: str = "auto", reference=None) -> torch.Tensor:
    """Log-probs under the reference: the same base weights with the LoRA adapter disabled, or `reference`,
    a frozen copy of the base (full-weight runs, where the policy has no adapter to disable)."""
    chunks = [batch.old_logprobs[:0]]  # [0, T]: a batch without rows (online DPO with every group tied)
    model = policy if reference is None else reference
    with same_trainable(policy), policy.disable_adapter() if reference is None else nullcontext():
        for s in range(0, len(batch.completions), micro_batch_size):
            sl = slice(s, s + micro_batch_size)
            logp, _ = token_logprobs(model, batch.prompt_ids[sl], batch.prompt_mask[sl], batch.completion_ids[sl],
                                     batch.completion_mask[sl], temperature, fused_forward=fused_forward)
            chunks.append(_pad_to(logp, batch.completion_ids.shape[1]))
    return torch.cat(chunks)  # [N, T]


@torch.no_grad()
def rollout_values(policy, value_head, batch: RolloutBatch, temperature: float, micro_batch_size: int,
                   fused_forward: str = "auto", value_adapter: str | None = None) -> torch.Tensor:
    """Value estimates [N, T] of the critic at sampling time (PPO's V_old); `value_adapter`: the separate
    critic's adapter (None: the head on the policy's own hidden states)."""
    chunks = []
    with active_adapter(policy, value_adapter):
        for s in range(0, len(batch.completions), micro_batch_size):
            sl = slice(s, s + micro_batch_size)
            _, _, values = token_logprobs_and_values(policy, value_head, batch.prompt_ids[sl],
                                                     batch.prompt_mask[sl], batch.completion_ids[sl],
                                                     batch.completion_mask[sl], temperature,
                                                     fused_forward=fused_forward)
            chunks.append(_pad_to(values, batch.completion_ids.shape[1]))
    return torch.cat(chunks) * batch.completion_mask  # [N, T]
