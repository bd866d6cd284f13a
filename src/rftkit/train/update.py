"""The policy update: log-probs of sampled tokens under the current policy, the loss, one optimizer step.

Per batch: reference log-probs once (adapter disabled, no gradient, only when a KL term is on);
then `num_iterations` passes, each one forward+backward per micro-batch and one optimizer step.
Micro-batches are trimmed to their own longest prompt and completion. PPO adds a value head on
the policy's last hidden state (or on a separate critic adapter's); its clipped loss joins the same
backward pass. A loss over several rows (online DPO's pairs) gets the rows the targets select, in
micro-batches of whole items.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from rftkit.algorithms.grpo import aggregate, masked_mean
from rftkit.algorithms.losses import POLICY_LOSSES, LossInputs, LossSettings
from rftkit.models.forward import policy_and_values
from rftkit.train.dist import LOCAL, Collective
from rftkit.types import RolloutBatch, UpdateTargets


@dataclass
class UpdateStats:
    loss: float
    policy_loss: float
    kl: float
    clip_frac: float
    entropy: float
    grad_norm: float
    value_loss: float = 0.0


@dataclass
class Learner:
    """What the update trains: the policy (base + adapter, or every weight), its optimizer, and PPO's critic."""

    policy: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]  # every trained parameter (clipped together)
    value_head: torch.nn.Module | None = None
    gradient_checkpointing: bool = False  # train.gradient_checkpointing: transformers checkpoints only in train mode
    value_adapter: str | None = None  # ppo.value_model: separate: the critic's own LoRA adapter on the policy's base


@contextmanager
def training_mode(policy: torch.nn.Module, enabled: bool):
    """Train mode for the update when checkpointing (the policy has no active dropout: lora_dropout 0 is
    enforced for RL by the docs and attention dropout is 0 in the supported models), eval mode after."""
    if not enabled:
        yield
        return
    policy.train()
    try:
        yield
    finally:
        policy.eval()


@dataclass(frozen=True)
class UpdateSettings:
    loss: LossSettings
    temperature: float  # the sampling temperature: log-probs are taken under logits / temperature
    micro_batch_size: int  # completions per forward + backward
    max_grad_norm: float
    fused_forward: str = "auto"  # train.fused_forward


def update_policy(learner: Learner, batch: RolloutBatch, targets: UpdateTargets, sample_weight: torch.Tensor,
                  settings: UpdateSettings, collective: Collective = LOCAL) -> UpdateStats:
    """One optimizer step over the whole batch (gradients accumulated over micro-batches).

    `targets.advantages` is [N] (outcome) or [N, T] (GAE); `sample_weight` [N] is 0 for completions
    masked out of the gradient (no grader signal). Under torchrun each rank passes its own shard of
    the batch: the loss denominators and the gradients are summed over ranks (`collective`), so N
    ranks with B/N prompts each make the update one rank makes with all B.
    """
    cfg, temperature, micro_batch_size = settings.loss, settings.temperature, settings.micro_batch_size
    policy, value_head = learner.policy, learner.value_head
    advantages, ref_logprobs, value_targets = targets.advantages, targets.ref_logprobs, targets.value_targets
    if targets.rows is not None:  # the rows the loss is over, in its order (online DPO: chosen, rejected, ...)
        batch, sample_weight = batch.rows(targets.rows), sample_weight[targets.rows]
    micro_batch_size = max(micro_batch_size - micro_batch_size % cfg.rows_per_item, cfg.rows_per_item)
    loss_fn = POLICY_LOSSES[cfg.name]
    n = len(batch.completions)
    mask_all = batch.loss_mask.float() * sample_weight[:, None]  # model tokens only (environment turns: 0)
    counts = collective.sum(torch.stack([(sample_weight > 0).sum().float(), mask_all.sum()]))
    totals = dict(num_sequences=counts[0].clamp(min=1.0), num_tokens=counts[1].clamp(min=1.0),
                  max_length=cfg.max_length)
    learner.optimizer.zero_grad(set_to_none=True)
    sums = dict(loss=0.0, policy=0.0, kl=0.0, clip=0.0, entropy=0.0, value=0.0)
    with training_mode(policy, learner.gradient_checkpointing):
        for s in range(0, n, micro_batch_size):
            sl = slice(s, s + micro_batch_size)
            logp, entropy, values = policy_and_values(policy, value_head, learner.value_adapter, batch.prompt_ids[sl],
                                                      batch.prompt_mask[sl], batch.completion_ids[sl],
                                                      batch.completion_mask[sl], temperature, with_entropy=True,
                                                      fused_forward=settings.fused_forward)
            width = logp.shape[1]
            mask = mask_all[sl, :width]
            adv = advantages[sl] if advantages.dim() == 1 else advantages[sl, :width]
            terms = loss_fn(LossInputs(
                logp, batch.old_logprobs[sl, :width], adv,
                ref_logprobs[sl, :width] if ref_logprobs is not None else None, values,
                value_targets.old_values[sl, :width] if value_targets is not None else None,
                value_targets.returns[sl, :width] if value_targets is not None else None, mask), cfg)
            # Whole-batch denominators: the micro-batch losses sum to the full-batch loss.
            loss = aggregate(terms.per_token, mask, cfg.loss_aggregation, **totals)
            loss.backward()
            tokens_here = mask.sum()
            sums["loss"] += loss.item()
            for key, term in (("policy", terms.policy), ("kl", terms.kl), ("clip", terms.clipped),
                              ("entropy", entropy), ("value", terms.value)):
                sums[key] += float(masked_mean(term.detach(), mask) * tokens_here)
    collective.sum_gradients(learner.params)
    grad_norm = torch.nn.utils.clip_grad_norm_(learner.params, settings.max_grad_norm)
    learner.optimizer.step()
    sums = dict(zip(sums, collective.sum(torch.tensor(list(sums.values()), dtype=torch.float64)).tolist()))
    denom = float(totals["num_tokens"])
    return UpdateStats(loss=sums["loss"], policy_loss=sums["policy"] / denom, kl=sums["kl"] / denom,
                       clip_frac=sums["clip"] / denom, entropy=sums["entropy"] / denom, grad_norm=float(grad_norm),
                       value_loss=sums["value"] / denom)
