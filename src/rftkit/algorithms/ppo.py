"""PPO as used for RLVR in Tülu 3 (Lambert et al. 2024, section 6), as pure tensor functions.

PPO: Schulman et al. 2017; GAE: Schulman et al. 2016, eq. (16); the KL-shaped per-token reward
and the adaptive KL controller: Ziegler et al. 2019, section 2.2; the clipped value loss as in
OpenAI baselines / OpenRLHF. Included: a per-token reward (verifier score on the last token
minus beta * KL(pi_old || ref) on every token when the KL goes in the reward), GAE with gamma
and lambda, whitened advantages, the clipped value loss, the adaptive KL coefficient.
Omitted: a separate value model initialised from a reward model (Tülu 3): the value is a
linear head on the policy's last hidden state, trained with the LoRA adapter; reward-model
rewards; entropy bonus.
"""

from __future__ import annotations

import torch

from rftkit.algorithms.grpo import masked_mean


def kl_shaped_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor | None,
                      mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards [N, T]: -beta * (logp - ref) on each token, plus the score [N] on the last.

    The k1 estimate log(pi/ref) is the one whose expectation is the KL of the sequence
    (Ziegler et al. 2019); pass ref_logprobs=None (or beta=0) to leave the KL out of the reward.
    """
    mask = mask.to(logprobs.dtype)
    rewards = torch.zeros_like(logprobs)
    if ref_logprobs is not None and beta > 0:
        rewards = -beta * (logprobs - ref_logprobs) * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)  # index of each completion's final token
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, last] += scores * (mask.sum(1) > 0).to(scores.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over completion tokens: (advantages [N, T], returns [N, T]).

    delta_t = r_t + gamma * V_{t+1} - V_t; A_t = delta_t + gamma * lam * A_{t+1}; V after the
    last token (and on padding) is 0: the episode ends there. returns = A + V (the value target).
    """
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros(values.shape[0], dtype=values.dtype, device=values.device)
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


def pack_masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, T] -> [N, A]: each row's entries where `mask` is 1, moved to the front in order (A: the most in
    a row), 0 after them. A multi-turn row interleaves model and environment tokens; packed, its model
    tokens are one sequence, so GAE runs through the whole episode (environment tokens are no actions)."""
    rows, cols = mask.bool().nonzero(as_tuple=True)
    slot = (mask.long().cumsum(-1) - 1)[rows, cols]
    packed = values.new_zeros((values.shape[0], max(1, int(mask.sum(-1).max()) if len(mask) else 1)))
    packed[rows, slot] = values[rows, cols]
    return packed


def unpack_masked(packed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The inverse of `pack_masked`: [N, A] back to [N, T], 0 where `mask` is 0."""
    rows, cols = mask.bool().nonzero(as_tuple=True)
    values = packed.new_zeros(mask.shape)
    values[rows, cols] = packed[rows, (mask.long().cumsum(-1) - 1)[rows, cols]]
    return values


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, sum_over_ranks=None) -> torch.Tensor:
    """(x - mean) / std over the masked entries; masked-out entries become 0.

    `sum_over_ranks` (a tensor -> tensor sum over torchrun ranks) makes mean and variance those of the
    whole batch across ranks, so a sharded batch is whitened as one process would whiten it."""
    if sum_over_ranks is None:
        mean = masked_mean(values, mask)
        var = masked_mean((values - mean) ** 2, mask)
    else:
        weight = mask.to(values.dtype)
        total, count = sum_over_ranks(torch.stack([(values * weight).sum(), weight.sum()])).unbind()
        mean = total / count.clamp(min=1.0)
        var = sum_over_ranks(((values - mean) ** 2 * weight).sum()) / count.clamp(min=1.0)
    return (values - mean) * torch.rsqrt(var + eps) * mask.to(values.dtype)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float) -> torch.Tensor:
    """Per-token 0.5 * max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2) [N, T]."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2)


def adaptive_kl_coefficient(beta: float, observed_kl: float, target_kl: float, horizon: int,
                            num_samples: int) -> float:
    """Ziegler et al. 2019's proportional controller: beta *= 1 + clip(KL/target - 1, +-0.2) * n / horizon."""
    error = max(-0.2, min(0.2, observed_kl / target_kl - 1.0))
    return beta * (1.0 + error * num_samples / horizon)
