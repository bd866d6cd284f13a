"""Policy losses: registered pure functions from per-token terms to a per-token loss [n, T].

Adding a loss is one function registered here plus its golden test (tests/algorithms/test_losses.py);
an algorithm in `rftkit.algorithms.registry` names it in its `LossSettings`, and the update calls
`POLICY_LOSSES[settings.name](inputs, settings)` on every micro-batch. The update then reduces the
per-token loss with `aggregate` over whole-batch (all ranks') denominators, so a loss function never
sees batch sizes or ranks.

Registered: clipped_surrogate (PPO / GRPO and its variants), gspo (a sequence-level ratio: reads
`inputs.mask`), cispo (clipped, detached importance weights) and online_dpo (a loss over pairs of
rows: the update hands it micro-batches of whole pairs, `LossSettings.rows_per_item = 2`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rftkit.algorithms.cispo import cispo_objective
from rftkit.algorithms.dpo import dpo_loss
from rftkit.algorithms.grpo import clipped_surrogate, kl_k3
from rftkit.algorithms.gspo import gspo_surrogate
from rftkit.algorithms.ppo import clipped_value_loss


@dataclass(frozen=True)
class LossSettings:
    """Which registered loss an algorithm uses and its coefficients (built by rftkit.algorithms.registry)."""

    name: str  # a key of POLICY_LOSSES
    epsilon: float  # ratio clipped to [1 - epsilon, 1 + (epsilon_high or epsilon)] (cispo: inf = no lower bound)
    epsilon_high: float | None
    beta: float  # weight of the k3 KL to the reference inside the loss (0: none); online_dpo: DPO's beta
    loss_aggregation: str  # a key of rftkit.algorithms.grpo.AGGREGATIONS
    max_length: int | None = None  # the 'constant' aggregation's normaliser
    vf_coef: float = 0.0  # weight of the value loss (PPO)
    value_clip: float = 0.2
    rows_per_item: int = 1  # rows one loss term spans (online_dpo: 2, a pair); micro-batches hold whole items


@dataclass
class LossInputs:
    """One micro-batch's per-token terms, all trimmed to the same width T."""

    logprobs: torch.Tensor  # [n, T] under the current policy (with gradient)
    old_logprobs: torch.Tensor  # [n, T] behaviour log-probs recorded at sampling time
    advantages: torch.Tensor  # [n] per completion or [n, T] per token
    ref_logprobs: torch.Tensor | None = None  # [n, T] reference (adapter disabled), when a KL term is on
    values: torch.Tensor | None = None  # [n, T] value head now (PPO)
    old_values: torch.Tensor | None = None  # [n, T] value head at sampling time (PPO)
    returns: torch.Tensor | None = None  # [n, T] GAE returns (PPO)
    mask: torch.Tensor | None = None  # [n, T] tokens that count (completion mask x sample weight), for sequence terms


@dataclass
class LossTerms:
    per_token: torch.Tensor  # [n, T] the loss to aggregate
    policy: torch.Tensor  # [n, T] the policy term alone (logged as loss/policy)
    kl: torch.Tensor  # [n, T] k3 KL to the reference (zeros without one)
    clipped: torch.Tensor  # [n, T] 1.0 where the clipped branch was active (logged as clip_frac)
    value: torch.Tensor  # [n, T] value loss (zeros without a value head)


PolicyLossFn = Callable[[LossInputs, LossSettings], LossTerms]
POLICY_LOSSES: dict[str, PolicyLossFn] = {}


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    def register(fn: PolicyLossFn) -> PolicyLossFn:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name] = fn
        return fn
    return register


@register_policy_loss("clipped_surrogate")
def clipped_surrogate_loss(inputs: LossInputs, settings: LossSettings) -> LossTerms:
    """PPO's clipped ratio objective (Schulman et al. 2017, eq. 7) as used by GRPO (Shao et al. 2024,
    eq. 3), + beta * k3 KL to the reference when given, + vf_coef * the clipped value loss when PPO's
    value targets are given. Clip-higher (DAPO) through `epsilon_high`."""
    surrogate = clipped_surrogate(inputs.logprobs, inputs.old_logprobs, inputs.advantages, settings.epsilon,
                                  settings.epsilon_high)
    per_token = surrogate.per_token_loss
    kl = torch.zeros_like(per_token)
    if inputs.ref_logprobs is not None:
        kl = kl_k3(inputs.logprobs, inputs.ref_logprobs)
        per_token = per_token + settings.beta * kl
    value = torch.zeros_like(per_token)
    if inputs.returns is not None:
        value = clipped_value_loss(inputs.values, inputs.old_values, inputs.returns, settings.value_clip)
        per_token = per_token + settings.vf_coef * value
    return LossTerms(per_token, surrogate.per_token_loss, kl, surrogate.clipped.float(), value)


def _needs_mask(inputs: LossInputs, name: str) -> torch.Tensor:
    if inputs.mask is None:
        raise ValueError(f"policy loss {name!r} needs LossInputs.mask (its terms are per sequence)")
    return inputs.mask.to(inputs.logprobs.dtype)


def _with_kl(per_token: torch.Tensor, inputs: LossInputs, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """per_token + beta * k3 KL to the reference when given; (loss, kl)."""
    if inputs.ref_logprobs is None:
        return per_token, torch.zeros_like(per_token)
    kl = kl_k3(inputs.logprobs, inputs.ref_logprobs)
    return per_token + beta * kl, kl


@register_policy_loss("gspo")
def gspo_loss(inputs: LossInputs, settings: LossSettings) -> LossTerms:
    """GSPO (Zheng et al. 2025, eq. 5): the clipped objective on the length-normalised sequence ratio,
    spread over the sequence's tokens so that the 'sequence' aggregation gives 1/G sum_i (rftkit.algorithms.gspo);
    + beta * k3 KL to the reference when given."""
    mask = _needs_mask(inputs, "gspo")
    out = gspo_surrogate(inputs.logprobs, inputs.old_logprobs, mask, inputs.advantages, settings.epsilon,
                         settings.epsilon_high if settings.epsilon_high is not None else settings.epsilon)
    policy = out.per_sequence_loss[:, None].expand_as(inputs.logprobs)
    per_token, kl = _with_kl(policy, inputs, settings.beta)
    return LossTerms(per_token, policy, kl, out.clipped[:, None].float().expand_as(policy), torch.zeros_like(policy))


@register_policy_loss("cispo")
def cispo_loss(inputs: LossInputs, settings: LossSettings) -> LossTerms:
    """CISPO (MiniMax-M1, eq. 4): -sg(clip(ratio, 1 - epsilon, 1 + epsilon_high)) * A * log pi per token, the
    gradient through every token's log-prob (rftkit.algorithms.cispo); + beta * k3 KL when given."""
    low = None if settings.epsilon == float("inf") else settings.epsilon
    out = cispo_objective(inputs.logprobs, inputs.old_logprobs, inputs.advantages, settings.epsilon_high, low)
    per_token, kl = _with_kl(out.per_token_loss, inputs, settings.beta)
    return LossTerms(per_token, out.per_token_loss, kl, out.clipped.float(), torch.zeros_like(per_token))


@register_policy_loss("online_dpo")
def online_dpo_loss(inputs: LossInputs, settings: LossSettings) -> LossTerms:
    """DPO's sigmoid loss (Rafailov et al. 2023, eq. 7) on pairs of adjacent rows (2k, 2k+1), the chosen one
    marked by advantage +1 and the rejected one by -1 (rftkit.algorithms.dpo); `settings.beta` is DPO's beta.

    Sequence log-probs are the token sums under `inputs.mask`; a pair with a row that has no tokens there
    (no grader signal) contributes 0. Each pair's loss is written on every token of both its rows, so the
    'sequence' aggregation (mean over the row's tokens, then sum over rows / rows in the batch) is the mean
    over pairs, and the gradient reaches both completions through the one pair term. The KL is logged only."""
    mask = _needs_mask(inputs, "online_dpo")
    if inputs.ref_logprobs is None or inputs.logprobs.shape[0] % 2:
        raise ValueError("online_dpo needs reference log-probs and micro-batches of whole pairs (rows_per_item 2)")
    seq = (inputs.logprobs * mask).sum(1).view(-1, 2)  # [P, 2]
    ref = (inputs.ref_logprobs * mask).sum(1).view(-1, 2)
    chosen = (inputs.advantages.view(-1, 2)[:, 0] <= 0).long()[:, None]  # [P, 1] the chosen row's column
    rejected = 1 - chosen
    loss, _ = dpo_loss(seq.gather(1, chosen)[:, 0], seq.gather(1, rejected)[:, 0], ref.gather(1, chosen)[:, 0],
                       ref.gather(1, rejected)[:, 0], settings.beta)
    valid = (mask.sum(1).view(-1, 2) > 0).all(1)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    policy = loss.repeat_interleave(2)[:, None].expand_as(inputs.logprobs)
    kl = kl_k3(inputs.logprobs, inputs.ref_logprobs).detach()
    return LossTerms(policy, policy, kl, torch.zeros_like(policy), torch.zeros_like(policy))
