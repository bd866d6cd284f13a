"""DAPO's additions to GRPO as pure functions: soft overlong penalty and dynamic-sampling filter.

Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale".
The other two DAPO pieces live in grpo.py: clip-higher (`clipped_surrogate(..., epsilon_high)`,
section 3.1) and token-level aggregation (`aggregate(..., 'token')`, section 3.3).
Included: dynamic sampling (section 3.2: groups whose rewards all tie are dropped and the batch
is refilled with fresh prompts) and the soft overlong punishment (section 3.4, eq. 13).
Omitted: DAPO's own reward scale (+1/-1; we keep the graders' [0, 1]) and its dataset
transformation.
"""

from __future__ import annotations

import torch


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """Soft overlong punishment [N] (eq. 13), added to the reward.

    0 up to max_length - buffer tokens, then falling linearly to -factor at max_length (and
    below, for a completion cut off at the limit): length is penalised gently before the hard cut.
    """
    if not 0 < buffer <= max_length:
        raise ValueError(f"overlong buffer must be in (0, max_length={max_length}], got {buffer}")
    free = max_length - buffer
    over = (lengths.float() - free).clamp(min=0.0)
    return -factor * (over / buffer).clamp(max=1.0)


def informative_groups(rewards: torch.Tensor, group_size: int, atol: float = 1e-6) -> torch.Tensor:
    """[B] bool: groups whose rewards are not all equal (0 < accuracy < 1 in the paper's eq. 11).

    A tied group has zero group-relative advantage everywhere and so no gradient; dynamic
    sampling drops it and samples more prompts instead.
    """
    grouped = rewards.view(-1, group_size)  # [B, G]
    return (grouped.max(dim=1).values - grouped.min(dim=1).values) > atol
