"""GRPO as pure tensor functions: advantages, clipped surrogate, k3 KL, masked means.

GRPO: Shao et al. 2024, "DeepSeekMath", eq. (3) and section 4.1.2 (outcome supervision).
Included: group-relative advantages (optionally std-scaled), PPO's clipped ratio (Schulman
et al. 2017, eq. 7) with an optional separate upper bound (DAPO's clip-higher, Yu et al. 2025),
the unbiased k3 KL estimator to the reference (Schulman 2020, "Approximating KL divergence"),
and the choice of loss aggregation from the AGGREGATIONS registry: per sequence (GRPO), per
token (DAPO) or by a constant (Dr. GRPO, Liu et al. 2025, which also drops the std scaling).
Omitted: a value function (see ppo.py) and any entropy bonus.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where mask == 1 (0 where a row has no unmasked entry)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def group_relative_advantages(rewards: torch.Tensor, group_size: int, scale_by_std: bool = True,
                              eps: float = 1e-4) -> torch.Tensor:
    """A_i = (r_i - mean(group)) [/ (std(group) + eps)] for rewards laid out [B*G] group by group.

    std is the unbiased sample std, as in the GRPO paper and TRL. A group whose rewards all tie
    gets zero advantages: it carries no learning signal.
    """
    grouped = rewards.view(-1, group_size)  # [B, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)  # [B*G]


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1 (>= 0, 0 iff equal)."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1.0


@dataclass
class SurrogateOut:
    per_token_loss: torch.Tensor  # [N, T] -min(ratio * A, clip(ratio) * A)
    clipped: torch.Tensor  # [N, T] bool: the clipped branch was the active one
    ratio: torch.Tensor  # [N, T]


def clipped_surrogate(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                      epsilon: float, epsilon_high: float | None = None) -> SurrogateOut:
    """PPO's clipped objective, negated to a loss.

    Advantages are per sequence [N] (broadcast over tokens) or per token [N, T] (PPO with GAE).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    clipped_ratio = ratio.clamp(1.0 - epsilon, 1.0 + (epsilon_high if epsilon_high is not None else epsilon))
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    unclipped_obj, clipped_obj = ratio * adv, clipped_ratio * adv
    return SurrogateOut(per_token_loss=-torch.min(unclipped_obj, clipped_obj),
                        clipped=clipped_obj < unclipped_obj, ratio=ratio)


def _sequence_mean(per_token, mask, num_sequences, num_tokens, max_length):
    rows = (mask.sum(1) > 0).sum() if num_sequences is None else num_sequences
    return masked_mean(per_token, mask, dim=1).sum() / max(float(rows), 1.0)


def _token_mean(per_token, mask, num_sequences, num_tokens, max_length):
    tokens = mask.sum() if num_tokens is None else num_tokens
    return (per_token * mask).sum() / max(float(tokens), 1.0)


def _constant_normaliser(per_token, mask, num_sequences, num_tokens, max_length):
    # Dr. GRPO (Liu et al. 2025, eq. 3 and their code): divide the token sum by a constant,
    # num_sequences * max_completion_length, so neither 1/|o_i| nor the batch's token count
    # rescales a completion's gradient by its length.
    if max_length is None:
        raise ValueError("aggregation 'constant' needs max_length (the max completion length)")
    rows = mask.shape[0] if num_sequences is None else num_sequences
    return (per_token * mask).sum() / (max(float(rows), 1.0) * max_length)


# mode -> reducer(per_token [N, T], mask [N, T], num_sequences, num_tokens, max_length) -> scalar
AGGREGATIONS = {"sequence": _sequence_mean, "token": _token_mean, "constant": _constant_normaliser}


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, num_sequences: torch.Tensor | float | None = None,
              num_tokens: torch.Tensor | float | None = None, max_length: int | None = None) -> torch.Tensor:
    """Reduce a per-token loss [N, T] to a scalar.

    'sequence': mean over each completion's tokens, then over completions (GRPO's 1/|o_i|);
    'token': mean over every token of the batch (DAPO), so long completions weigh more;
    'constant': token sum / (completions * max_length) (Dr. GRPO: no length normalisation).
    The denominators default to this tensor's own counts; the update passes the whole batch's
    counts so that micro-batch losses sum to the full-batch loss.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {mode!r}; allowed: {', '.join(AGGREGATIONS)}")
    return AGGREGATIONS[mode](per_token, mask.to(per_token.dtype), num_sequences, num_tokens, max_length)
