"""Golden values for the registered policy losses, computed by hand."""

import math

import pytest
import torch

from rftkit.algorithms.losses import POLICY_LOSSES, LossInputs, LossSettings, register_policy_loss
from rftkit.algorithms.ppo import whiten


def settings(**overrides) -> LossSettings:
    values = dict(name="clipped_surrogate", epsilon=0.2, epsilon_high=None, beta=0.0, loss_aggregation="token")
    return LossSettings(**(values | overrides))


def test_clipped_surrogate_loss_by_hand():
    # ratios e^0.5 = 1.6487 (clipped at 1.2 for A > 0), e^-0.5 = 0.6065 (clipped at 0.8 for A < 0 -> min picks
    # the clipped 0.8 * -1 = -0.8 over -0.6065), and 1.0 (unclipped)
    logp = torch.tensor([[0.5, -0.5, 0.0]])
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    terms = POLICY_LOSSES["clipped_surrogate"](LossInputs(logp, old, adv), settings())
    expected = torch.tensor([[-1.2, 0.8, -2.0]])
    torch.testing.assert_close(terms.per_token, expected)
    torch.testing.assert_close(terms.policy, expected)
    assert terms.clipped.tolist() == [[1.0, 1.0, 0.0]]
    assert terms.kl.abs().sum() == 0 and terms.value.abs().sum() == 0


def test_clipped_surrogate_loss_adds_beta_k3_and_the_value_loss():
    logp, old, ref = torch.tensor([[0.0]]), torch.tensor([[0.0]]), torch.tensor([[math.log(0.5)]])
    values, old_values, returns = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]])
    inputs = LossInputs(logp, old, torch.tensor([1.0]), ref, values, old_values, returns)
    terms = POLICY_LOSSES["clipped_surrogate"](inputs, settings(beta=0.1, vf_coef=0.5, value_clip=0.2))
    k3 = 0.5 - math.log(0.5) - 1.0  # exp(ref - logp) - (ref - logp) - 1
    # value loss: 0.5 * max((1 - 2)^2, (0 + clip(1, -0.2, 0.2) - 2)^2) = 0.5 * 1.8^2 = 1.62
    assert terms.kl.item() == pytest.approx(k3)
    assert terms.value.item() == pytest.approx(1.62)
    assert terms.per_token.item() == pytest.approx(-1.0 + 0.1 * k3 + 0.5 * 1.62)


def test_clip_higher_bounds_the_ratio_separately():
    terms = POLICY_LOSSES["clipped_surrogate"](
        LossInputs(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.tensor([1.0])), settings(epsilon_high=0.28))
    assert terms.per_token.item() == pytest.approx(-1.28)


def test_registering_a_loss_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("clipped_surrogate")(lambda inputs, settings: None)


def test_whiten_over_ranks_equals_whitening_the_whole_batch():
    values = torch.tensor([[1.0, 2.0, 5.0], [3.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    whole = whiten(values, mask)
    # two ranks holding one row each: the sum over ranks is this rank's value plus the other's
    rows = [(values[i:i + 1], mask[i:i + 1]) for i in range(2)]
    partial = [torch.stack([(v * m).sum(), m.sum().float()]) for v, m in rows]
    first_total = partial[0] + partial[1]
    for i, (v, m) in enumerate(rows):
        other = rows[1 - i]

        def sum_over_ranks(t, v=v, m=m, other=other):
            if t.dim() == 1:
                return first_total
            mean = first_total[0] / first_total[1]
            return t + ((other[0] - mean) ** 2 * other[1]).sum()

        torch.testing.assert_close(whiten(v, m, sum_over_ranks=sum_over_ranks), whole[i:i + 1])
