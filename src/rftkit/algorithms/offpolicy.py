"""Off-policy correction for batches sampled by another engine or an older policy: truncated IS.

Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training": the
sampler's probabilities mu (vLLM's kernels, or a policy k steps old) differ from the learner's
pi_old, so the PPO objective is taken against the learner's pi_old and each token's term is
weighted by the truncated importance ratio

    w_t = min(pi_old(y_t) / mu(y_t), C)

The clipped surrogate min(r A, clip(r) A) is positively homogeneous in A, so weighting the term
by w_t >= 0 is the same as weighting the advantage: w_t * min(r A, clip(r) A) = min(r w_t A,
clip(r) w_t A). This function therefore returns per-token advantages and leaves the loss alone.
Included: the token-level truncation (TIS). Omitted: sequence-level IS, masking instead of capping
(MIS), and any correction of the KL term.
"""

from __future__ import annotations

import torch


def truncated_is_advantages(advantages: torch.Tensor, learner_logprobs: torch.Tensor,
                            behaviour_logprobs: torch.Tensor, completion_mask: torch.Tensor,
                            cap: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token advantages [N, T] = A * min(exp(learner - behaviour), cap), and the weights' stats.

    `advantages`: [N] per completion or [N, T] per token; log-probs [N, T]; `completion_mask` [N, T].
    Masked positions get weight 0 (they carry no gradient anyway)."""
    mask = completion_mask.bool()
    ratio = torch.exp(learner_logprobs - behaviour_logprobs).masked_fill(~mask, 0.0)  # [N, T]
    weight = ratio.clamp(max=cap)
    per_token = advantages[:, None] if advantages.dim() == 1 else advantages
    real = mask.sum().clamp(min=1)
    metrics = {"tis/ratio_mean": float(ratio.sum() / real), "tis/weight_mean": float(weight.sum() / real),
               "tis/capped_frac": float(((ratio > cap) & mask).sum() / real)}
    return per_token * weight, metrics
