"""Golden values for the GRPO tensor functions, computed by hand in the comments."""

import math

import pytest
import torch

from rftkit.algorithms.grpo import aggregate, clipped_surrogate, group_relative_advantages, kl_k3, masked_mean


def test_advantages_with_std_scaling():
    # group 1: [1, 0, 0, 1] mean 0.5, sample std sqrt(1/3) = 0.57735 -> +-0.5 / (0.57735 + 1e-4)
    # group 2: [0, 0, 0, 3] mean 0.75, sample std 1.5 -> [-0.5, -0.5, -0.5, 1.5] (/1.5001)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0])
    adv = group_relative_advantages(rewards, group_size=4, scale_by_std=True)
    s1 = math.sqrt(1 / 3) + 1e-4
    expected = [0.5 / s1, -0.5 / s1, -0.5 / s1, 0.5 / s1, -0.75 / 1.5001, -0.75 / 1.5001, -0.75 / 1.5001, 2.25 / 1.5001]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)


def test_advantages_without_std_scaling_only_centre():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0])
    adv = group_relative_advantages(rewards, group_size=4, scale_by_std=False)
    assert adv.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, -0.75, -0.75, -0.75, 2.25])


def test_all_equal_group_gets_zero_advantage():
    rewards = torch.tensor([0.7, 0.7, 0.7, 0.0, 1.0, 0.5])
    adv = group_relative_advantages(rewards, group_size=3, scale_by_std=True)
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    assert adv[3:].abs().sum() > 0


def test_kl_k3_is_zero_when_policy_equals_reference_and_positive_otherwise():
    logp = torch.log(torch.tensor([[0.2, 0.5, 0.9]]))
    assert kl_k3(logp, logp).abs().max() == 0
    # logp = log 0.5, ref = log 0.25: ratio ref/pi = 0.5 -> 0.5 - log(0.5) - 1 = 0.193147...
    value = kl_k3(torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25])))
    assert value.item() == pytest.approx(0.5 - math.log(0.5) - 1)


def test_clipped_surrogate_engages_on_large_ratio():
    old = torch.zeros(2, 1)
    new = torch.log(torch.tensor([[1.5], [0.5]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([2.0, -1.0])
    out = clipped_surrogate(new, old, adv, epsilon=0.2)
    # row 0: A>0, ratio 1.5 clipped to 1.2 -> loss -1.2*2 = -2.4 (clipped branch active)
    # row 1: A<0, ratio 0.5 clipped to 0.8 -> min(0.5*-1, 0.8*-1) = -0.8 -> loss 0.8 (clipped)
    assert out.per_token_loss[:, 0].tolist() == pytest.approx([-2.4, 0.8])
    assert out.clipped[:, 0].tolist() == [True, True]


def test_clipped_surrogate_inside_the_trust_region_is_plain_ratio_times_advantage():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.1, 0.9]]))
    out = clipped_surrogate(new, old, torch.tensor([3.0]), epsilon=0.2)
    assert out.per_token_loss[0].tolist() == pytest.approx([-3.3, -2.7])
    assert not out.clipped.any()


def test_clip_higher_uses_separate_upper_bound():
    out = clipped_surrogate(torch.log(torch.tensor([[1.5]])), torch.zeros(1, 1), torch.tensor([1.0]),
                            epsilon=0.2, epsilon_high=0.28)
    assert out.per_token_loss.item() == pytest.approx(-1.28)


def test_masked_mean_and_aggregation():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(values, mask).item() == pytest.approx((1 + 2 + 4) / 3)
    assert masked_mean(values, mask, dim=1).tolist() == pytest.approx([1.5, 4.0])
    # sequence: mean of per-row means (1.5 + 4) / 2; token: mean of the 3 tokens
    assert aggregate(values, mask, "sequence").item() == pytest.approx(2.75)
    assert aggregate(values, mask, "token").item() == pytest.approx(7 / 3)
    # whole-batch denominators for micro-batching: row 0 alone with 2 sequences in the batch
    assert aggregate(values[:1], mask[:1], "sequence", num_sequences=2).item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="allowed: sequence, token"):
        aggregate(values, mask, "bogus")
