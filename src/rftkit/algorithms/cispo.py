"""CISPO: clip the importance-sampling weight, not the update, so every token keeps its gradient.

MiniMax 2025, "MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention",
section 3.1, eq. (4)-(5). PPO's and GRPO's clipped objective has zero gradient on a token whose
ratio left the clip range on the side the advantage pushes; the paper finds that these are often
rare "fork" tokens (However, Wait, Recheck) that matter for reflection. CISPO keeps REINFORCE's
gradient on every token and only bounds its importance weight:

    J = 1 / sum_i |o_i| * sum_i sum_t sg(clip(r_i,t, 1 - eps_low, 1 + eps_high)) * A_i * log pi(o_i,t)

Included: that objective (the clipped weight detached, the gradient through log pi), token-level
aggregation over the whole batch (the paper's 1 / sum |o_i|), group-relative advantages with std
scaling (the paper's eq. 2), no lower bound by default (the paper sets eps_low large and tunes
only eps_high). Optional k3 KL to the reference in the loss (`grpo.beta`).
Omitted: the unified formulation's token mask M_i,t (eq. 7, which recovers PPO's trust region)
and MiniMax-M1's FP32 LM-head fix (the CPU path already computes log-probs in float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CispoOut:
    per_token_loss: torch.Tensor  # [N, T] -sg(clipped weight) * A * log pi
    clipped: torch.Tensor  # [N, T] bool: the weight was clipped
    weight: torch.Tensor  # [N, T] the detached, clipped importance weight


def cispo_objective(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    epsilon_high: float, epsilon_low: float | None = None) -> CispoOut:
    """Per-token CISPO loss; advantages [N] (broadcast over tokens) or [N, T]. epsilon_low None: no lower bound."""
    ratio = torch.exp(logprobs - old_logprobs).detach()
    weight = ratio.clamp(min=None if epsilon_low is None else 1.0 - epsilon_low, max=1.0 + epsilon_high)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    return CispoOut(-weight * adv * logprobs, weight != ratio, weight)
