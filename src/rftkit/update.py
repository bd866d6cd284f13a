"""The policy update: log-probs of sampled tokens under the current policy, the loss, one optimizer step.

Per batch: reference log-probs once (adapter disabled, no gradient, only when beta > 0);
then `num_iterations` passes, each one forward+backward per micro-batch and one optimizer step.
Micro-batches are trimmed to their own longest prompt and completion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rftkit.algorithms.grpo import aggregate, clipped_surrogate, kl_k3, masked_mean
from rftkit.rollout import RolloutBatch


@dataclass
class UpdateStats:
    loss: float
    policy_loss: float
    kl: float
    clip_frac: float
    entropy: float
    grad_norm: float


def token_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                   completion_mask: torch.Tensor, temperature: float,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(completion token | prefix) under logits / temperature: [N, T] (and entropy [N, T])."""
    keep = prompt_mask.any(0).nonzero()
    start = int(keep.min()) if len(keep) else 0  # drop columns that are padding in every row
    width = int(completion_mask.sum(-1).max())
    prompt_ids, prompt_mask = prompt_ids[:, start:], prompt_mask[:, start:]
    completion_ids, completion_mask = completion_ids[:, :width], completion_mask[:, :width]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([prompt_mask, completion_mask], dim=1)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions).logits
    logits = logits[:, prompt_ids.shape[1] - 1:-1, :].float() / temperature  # predicts each completion token
    logp_all = torch.log_softmax(logits, dim=-1)
    logprobs = logp_all.gather(-1, completion_ids[:, :, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
    return logprobs, entropy


def _pad_to(t: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, width - t.shape[1])) if t.shape[1] < width else t


@torch.no_grad()
def reference_logprobs(policy, batch: RolloutBatch, temperature: float, micro_batch_size: int) -> torch.Tensor:
    """Log-probs under the reference: the same base weights with the LoRA adapter disabled."""
    chunks = []
    with policy.disable_adapter():
        for s in range(0, len(batch.completions), micro_batch_size):
            sl = slice(s, s + micro_batch_size)
            logp, _ = token_logprobs(policy, batch.prompt_ids[sl], batch.prompt_mask[sl], batch.completion_ids[sl],
                                     batch.completion_mask[sl], temperature)
            chunks.append(_pad_to(logp, batch.completion_ids.shape[1]))
    return torch.cat(chunks)  # [N, T]


def update_policy(policy, optimizer, params, batch: RolloutBatch, advantages: torch.Tensor,
                  sample_weight: torch.Tensor, ref_logprobs: torch.Tensor | None, cfg, temperature: float,
                  micro_batch_size: int, max_grad_norm: float) -> UpdateStats:
    """One optimizer step over the whole batch (gradients accumulated over micro-batches).

    `sample_weight` [N] is 0 for completions masked out of the gradient (no grader signal).
    """
    n = len(batch.completions)
    mask_all = batch.completion_mask.float() * sample_weight[:, None]
    total_tokens = mask_all.sum().clamp(min=1.0)
    total_seqs = (sample_weight > 0).sum().clamp(min=1).float()
    optimizer.zero_grad(set_to_none=True)
    sums = dict(loss=0.0, policy=0.0, kl=0.0, clip=0.0, entropy=0.0)
    for s in range(0, n, micro_batch_size):
        sl = slice(s, s + micro_batch_size)
        logp, entropy = token_logprobs(policy, batch.prompt_ids[sl], batch.prompt_mask[sl],
                                       batch.completion_ids[sl], batch.completion_mask[sl], temperature,
                                       with_entropy=True)
        width = logp.shape[1]
        mask = mask_all[sl, :width]
        surrogate = clipped_surrogate(logp, batch.old_logprobs[sl, :width], advantages[sl], cfg.epsilon,
                                      cfg.epsilon_high)
        per_token = surrogate.per_token_loss
        kl = torch.zeros_like(per_token)
        if ref_logprobs is not None and cfg.beta > 0:
            kl = kl_k3(logp, ref_logprobs[sl, :width])
            per_token = per_token + cfg.beta * kl
        # Whole-batch denominators: the micro-batch losses sum to the full-batch loss.
        loss = aggregate(per_token, mask, cfg.loss_aggregation, num_sequences=total_seqs, num_tokens=total_tokens)
        loss.backward()
        tokens_here = mask.sum()
        sums["loss"] += loss.item()
        sums["policy"] += float(masked_mean(surrogate.per_token_loss.detach(), mask) * tokens_here)
        sums["kl"] += float(masked_mean(kl.detach(), mask) * tokens_here)
        sums["clip"] += float(masked_mean(surrogate.clipped.float(), mask) * tokens_here)
        sums["entropy"] += float(masked_mean(entropy.detach(), mask) * tokens_here)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    denom = float(total_tokens)
    return UpdateStats(loss=sums["loss"], policy_loss=sums["policy"] / denom, kl=sums["kl"] / denom,
                       clip_frac=sums["clip"] / denom, entropy=sums["entropy"] / denom, grad_norm=float(grad_norm))
