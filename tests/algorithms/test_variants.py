"""Golden values for Dr. GRPO's aggregation, RLOO, DAPO and PPO tensor functions (hand-computed in comments)."""

import pytest
import torch

from rftkit.algorithms.dapo import informative_groups, overlong_penalty
from rftkit.algorithms.grpo import aggregate, clipped_surrogate
from rftkit.algorithms.ppo import adaptive_kl_coefficient, clipped_value_loss, gae, kl_shaped_rewards, whiten
from rftkit.algorithms.rloo import leave_one_out_advantages


def test_constant_aggregation_ignores_lengths():
    # rows: 2 tokens of loss 1, 4 tokens of loss 1 -> token sum 6 / (2 rows * max_length 8) = 0.375
    per_token = torch.ones(2, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert aggregate(per_token, mask, "constant", max_length=8).item() == pytest.approx(0.375)
    # sequence: (1 + 1) / 2 = 1; token: 6 / 6 = 1
    assert aggregate(per_token, mask, "sequence").item() == pytest.approx(1.0)
    assert aggregate(per_token, mask, "token").item() == pytest.approx(1.0)


def test_token_aggregation_weights_long_completions_more():
    per_token = torch.tensor([[2.0, 2.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert aggregate(per_token, mask, "token").item() == pytest.approx(8 / 6)  # (4 + 4) / 6 tokens
    assert aggregate(per_token, mask, "sequence").item() == pytest.approx(1.5)  # (2 + 1) / 2


def test_unknown_aggregation_names_the_choices():
    with pytest.raises(ValueError, match="sequence, token, constant"):
        aggregate(torch.ones(1, 1), torch.ones(1, 1), "bogus")


def test_clip_higher_uses_the_upper_bound_only_for_positive_advantages():
    old = torch.zeros(2, 1)
    new = torch.log(torch.tensor([[1.5], [0.5]]))
    out = clipped_surrogate(new, old, torch.tensor([1.0, -1.0]), epsilon=0.2, epsilon_high=0.28)
    # row 0: ratio 1.5 clipped at 1.28 -> -1.28; row 1: ratio 0.5 clipped at 0.8 -> +0.8
    assert out.per_token_loss[:, 0].tolist() == pytest.approx([-1.28, 0.8])


def test_per_token_advantages_are_not_broadcast():
    out = clipped_surrogate(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[1.0, -2.0]]), epsilon=0.2)
    assert out.per_token_loss[0].tolist() == pytest.approx([-1.0, 2.0])


def test_leave_one_out_baseline():
    # group [1, 0, 0, 1]: others' means 1/3, 2/3, 2/3, 1/3 -> [2/3, -2/3, -2/3, 2/3]
    # group [0, 0, 0, 3]: others' means 1, 1, 1, 0 -> [-1, -1, -1, 3]
    adv = leave_one_out_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0]), 4)
    assert adv.tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3, -1.0, -1.0, -1.0, 3.0])
    assert leave_one_out_advantages(torch.tensor([0.5, 0.5]), 2).tolist() == [0.0, 0.0]


def test_overlong_penalty_is_zero_then_linear_then_capped():
    # max 10, buffer 4: free up to 6 tokens; 8 tokens -> -(2/4) * 0.5 factor = -0.25; 10 and 12 -> -0.5
    pen = overlong_penalty(torch.tensor([3, 6, 8, 10, 12]), max_length=10, buffer=4, factor=0.5)
    assert pen.tolist() == pytest.approx([0.0, 0.0, -0.25, -0.5, -0.5])
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(torch.tensor([1]), max_length=4, buffer=5)


def test_informative_groups_drop_ties():
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.3, 0.3, 0.0, 1.0])
    assert informative_groups(rewards, 2).tolist() == [False, False, False, True]


def test_kl_shaped_rewards_put_the_score_on_the_last_token():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -0.5, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    out = kl_shaped_rewards(torch.tensor([1.0, 0.0]), logp, ref, mask, beta=0.1)
    # row 0: -0.1 * [0.5, 0, -1] + [0, 0, 1] = [-0.05, 0, 1.1]; row 1: -0.1 * [0, -0.5, (masked)] = [0, 0.05, 0]
    assert out.tolist()[0] == pytest.approx([-0.05, 0.0, 1.1])
    assert out.tolist()[1] == pytest.approx([0.0, 0.05, 0.0])
    assert kl_shaped_rewards(torch.tensor([1.0, 0.0]), logp, None, mask, 0.1).tolist() == [[0, 0, 1], [0, 0, 0]]


def test_gae_by_hand():
    # one row, 3 tokens, rewards [0, 0, 1], values [0.5, 0.6, 0.8], gamma 0.9, lambda 0.5
    # delta2 = 1 - 0.8 = 0.2; A2 = 0.2
    # delta1 = 0 + 0.9*0.8 - 0.6 = 0.12; A1 = 0.12 + 0.45*0.2 = 0.21
    # delta0 = 0 + 0.9*0.6 - 0.5 = 0.04; A0 = 0.04 + 0.45*0.21 = 0.1345
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.8]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.5)
    assert adv[0].tolist() == pytest.approx([0.1345, 0.21, 0.2])
    assert ret[0].tolist() == pytest.approx([0.6345, 0.81, 1.0])


def test_gae_stops_at_the_end_of_each_completion():
    # the padded token's value (9) must not leak into the last real token: A1 = 1 - 0.5 = 0.5
    adv, _ = gae(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.5, 9.0]]), torch.tensor([[1, 1, 0]]), 1.0, 1.0)
    assert adv[0].tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_whiten_is_zero_mean_unit_variance_on_the_mask():
    out = whiten(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1, 1, 0]]))
    assert out[0].tolist() == pytest.approx([-1.0, 1.0, 0.0], abs=1e-4)


def test_clipped_value_loss_takes_the_pessimistic_branch():
    # V=2, V_old=1, R=1.5, clip 0.2: unclipped (0.5)^2 = 0.25; clipped V=1.2 -> (0.3)^2 = 0.09; max 0.25 * 0.5
    # V=1.1, V_old=1, R=3: unclipped 1.9^2 = 3.61; clipped 1.1 -> same -> 0.5 * 3.61
    loss = clipped_value_loss(torch.tensor([2.0, 1.1]), torch.tensor([1.0, 1.0]), torch.tensor([1.5, 3.0]), 0.2)
    assert loss.tolist() == pytest.approx([0.125, 1.805])


def test_adaptive_kl_moves_beta_toward_the_target():
    assert adaptive_kl_coefficient(0.1, 0.2, 0.1, horizon=100, num_samples=10) == pytest.approx(0.1 * 1.02)  # capped
    assert adaptive_kl_coefficient(0.1, 0.09, 0.1, horizon=100, num_samples=10) == pytest.approx(0.1 * 0.99)
