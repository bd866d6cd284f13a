"""GSPO: the importance ratio and its clipping at the level of whole sequences.

Zheng et al. 2025, "Group Sequence Policy Optimization" (Qwen team), eq. (5)-(7).
Token-level ratios (PPO, GRPO) weight each token by a single-sample ratio, which the paper argues
is an ill-posed importance weight whose noise accumulates over long completions. GSPO uses the
length-normalised sequence likelihood ratio

    s_i = (pi(y_i | x) / pi_old(y_i | x)) ^ (1 / |y_i|) = exp(mean_t [log pi(y_i,t) - log pi_old(y_i,t)])

and clips it per sequence: J = 1/G sum_i min(s_i A_i, clip(s_i, 1 - eps, 1 + eps_high) A_i).
Included: that ratio with the gradient through s_i (every token of a sequence gets the same weight
s_i A_i / |y_i|), the per-sequence clip with separate lower and upper bounds (the paper's 3e-4 and
4e-4; ratios of sequence means sit much closer to 1 than token ratios), group-relative
advantages with std scaling (GRPO's, as the paper uses), and the sequence mean aggregation
(1/G sum_i). Optional k3 KL to the reference in the loss (`grpo.beta`; the paper uses none).
Omitted: GSPO-token's per-token advantages (equal to GSPO when, as here, advantages are per
sequence) and the paper's MoE routing-replay discussion (nothing here routes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rftkit.algorithms.grpo import masked_mean


@dataclass
class SequenceSurrogateOut:
    per_sequence_loss: torch.Tensor  # [N] -min(s A, clip(s) A)
    clipped: torch.Tensor  # [N] bool: the clipped branch was the active one
    ratio: torch.Tensor  # [N] s_i, the length-normalised sequence ratio


def sequence_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """s_i = exp(mean over completion i's tokens of log pi - log pi_old) [N] (eq. 7); 1 for a row without tokens."""
    return torch.exp(masked_mean(logprobs - old_logprobs, mask, dim=1))


def gspo_surrogate(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor,
                   advantages: torch.Tensor, epsilon: float, epsilon_high: float) -> SequenceSurrogateOut:
    """GSPO's clipped sequence objective (eq. 5), negated to a loss per completion; advantages [N]."""
    ratio = sequence_ratio(logprobs, old_logprobs, mask)
    unclipped, clipped = ratio * advantages, ratio.clamp(1.0 - epsilon, 1.0 + epsilon_high) * advantages
    return SequenceSurrogateOut(-torch.min(unclipped, clipped), clipped < unclipped, ratio)
