"""Policy losses: registered pure functions from per-token terms to a per-token loss [n, T].

Adding a loss is one function registered here plus its golden test (tests/algorithms/test_losses.py);
an algorithm in `rftkit.algorithms.registry` names it in its `LossSettings`, and the update calls
`POLICY_LOSSES[settings.name](inputs, settings)` on every micro-batch. The update then reduces the
per-token loss with `aggregate` over whole-batch (all ranks') denominators, so a loss function never
sees batch sizes or ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rftkit.algorithms.grpo import clipped_surrogate, kl_k3
from rftkit.algorithms.ppo import clipped_value_loss


@dataclass(frozen=True)
class LossSettings:
    """Which registered loss an algorithm uses and its coefficients (built by rftkit.algorithms.registry)."""

    name: str  # a key of POLICY_LOSSES
    epsilon: float  # ratio clipped to [1 - epsilon, 1 + (epsilon_high or epsilon)]
    epsilon_high: float | None
    beta: float  # weight of the k3 KL to the reference inside the loss (0: none)
    loss_aggregation: str  # a key of rftkit.algorithms.grpo.AGGREGATIONS
    max_length: int | None = None  # the 'constant' aggregation's normaliser
    vf_coef: float = 0.0  # weight of the value loss (PPO)
    value_clip: float = 0.2


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
