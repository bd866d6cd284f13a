"""Truncated importance sampling (Yao et al. 2025) against hand-computed values."""

import math

import torch

from rftkit.algorithms.grpo import clipped_surrogate
from rftkit.algorithms.offpolicy import truncated_is_advantages


def test_weights_are_the_capped_learner_over_behaviour_ratio_per_token():
    learner = torch.log(torch.tensor([[0.5, 0.2, 0.9], [0.3, 0.3, 0.3]]))
    behaviour = torch.log(torch.tensor([[0.25, 0.4, 0.3], [0.3, 0.6, 0.1]]))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, metrics = truncated_is_advantages(torch.tensor([1.0, -2.0]), learner, behaviour, mask, cap=2.0)
    # ratios: [2, 0.5, 3 -> capped 2], [1, 0.5, masked]
    expected = torch.tensor([[2.0, 0.5, 2.0], [-2.0, -1.0, 0.0]])
    assert torch.allclose(adv, expected)
    assert math.isclose(metrics["tis/ratio_mean"], (2 + 0.5 + 3 + 1 + 0.5) / 5, rel_tol=1e-6)
    assert math.isclose(metrics["tis/weight_mean"], (2 + 0.5 + 2 + 1 + 0.5) / 5, rel_tol=1e-6)
    assert math.isclose(metrics["tis/capped_frac"], 1 / 5, rel_tol=1e-6)


def test_per_token_advantages_are_weighted_elementwise():
    zeros = torch.zeros(1, 2)
    adv, _ = truncated_is_advantages(torch.tensor([[1.0, 3.0]]), zeros, torch.log(torch.tensor([[0.5, 2.0]])),
                                     torch.ones(1, 2), cap=10.0)
    assert torch.allclose(adv, torch.tensor([[2.0, 1.5]]))


def test_weighting_the_advantage_equals_weighting_the_clipped_term():
    """min(r wA, clip(r) wA) = w min(rA, clip(r)A) for w >= 0: why TIS needs no change to the loss."""
    gen = torch.Generator().manual_seed(0)
    logp, old = torch.randn(4, 5, generator=gen) * 0.3, torch.randn(4, 5, generator=gen) * 0.3
    adv, w = torch.randn(4, 1, generator=gen).expand(4, 5), torch.rand(4, 5, generator=gen) * 2
    a = clipped_surrogate(logp, old, adv * w, 0.2).per_token_loss
    b = clipped_surrogate(logp, old, adv, 0.2).per_token_loss
    assert torch.allclose(a, b * w, atol=1e-6)
