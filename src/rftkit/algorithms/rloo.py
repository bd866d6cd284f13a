"""RLOO: REINFORCE with a leave-one-out baseline.

Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from
Human Feedback in LLMs", eq. (6) (after Kool et al. 2019). Each completion's baseline is the
mean reward of the other G-1 completions of its prompt, an unbiased baseline (it does not
depend on the completion it scores). Included: that advantage, used with the shared clipped
ratio (TRL's RLOO trainer does the same; with one pass per batch the ratio is 1 and the loss is
plain REINFORCE). Omitted: the paper's KL term folded into the reward (here the optional k3
KL to the reference sits in the loss, as in GRPO) and any advantage whitening.
"""

from __future__ import annotations

import torch


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """A_i = r_i - (sum_j r_j - r_i) / (G - 1) for rewards laid out [B*G] group by group.

    Equal to G / (G - 1) times the group-centred reward; a tied group gets zeros.
    """
    if group_size < 2:
        raise ValueError("leave-one-out needs at least 2 completions per prompt")
    grouped = rewards.view(-1, group_size)  # [B, G]
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(-1)  # [B*G]
