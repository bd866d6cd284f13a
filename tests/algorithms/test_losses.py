"""Golden values for the registered policy losses, computed by hand."""

import math

import pytest
import torch

from rftkit.algorithms.losses import POLICY_LOSSES, LossInputs, LossSettings, register_policy_loss
from rftkit.algorithms.grpo import aggregate
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


def masked_inputs(logp, old, adv, mask, ref=None) -> LossInputs:
    return LossInputs(logp, old, adv, ref, mask=mask)


def test_gspo_clips_the_length_normalised_sequence_ratio_by_hand():
    # Per-sequence log-ratio means: row 0 (0.3 - 0.1) / 2 = 0.1, its third token masked; row 1 (-0.2 - 0.1 - 0.3) / 3
    # = -0.2; row 2 (0.01 + 0.01) / 2 = 0.01. Ratios e^0.1 = 1.10517, e^-0.2 = 0.81873, e^0.01 = 1.01005, clipped to
    # [0.95, 1.08]: row 0 (A = 1) takes the clipped 1.08; row 1 (A = -2): min(-1.6375, 0.95 * -2 = -1.9) = -1.9;
    # row 2 (A = 0.5) is inside the range: 0.50503.
    old = torch.zeros(3, 3)
    logp = torch.tensor([[0.3, -0.1, 7.0], [-0.2, -0.1, -0.3], [0.01, 0.01, 7.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([1.0, -2.0, 0.5])
    terms = POLICY_LOSSES["gspo"](masked_inputs(logp, old, adv, mask),
                                  settings(name="gspo", epsilon=0.05, epsilon_high=0.08, loss_aggregation="sequence"))
    per_sequence = torch.tensor([-1.08, 1.9, -0.5 * math.exp(0.01)])
    torch.testing.assert_close(terms.per_token, per_sequence[:, None].expand(3, 3))
    assert terms.clipped[:, 0].tolist() == [1.0, 1.0, 0.0]
    # The sequence mean of the per-token loss is GSPO's 1/G sum_i; its gradient on row 2's tokens is
    # -A s / |y| / G = -0.5 * e^0.01 / 2 / 3 on each unmasked token, and 0 on clipped rows and masked tokens.
    loss = aggregate(terms.per_token, mask, "sequence")
    assert loss.item() == pytest.approx(per_sequence.sum().item() / 3)
    loss.backward()
    expected = -0.5 * math.exp(0.01) / 2 / 3
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [expected, expected, 0.0]]))


def test_gspo_needs_the_mask():
    with pytest.raises(ValueError, match="needs LossInputs.mask"):
        POLICY_LOSSES["gspo"](LossInputs(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1)),
                              settings(name="gspo", epsilon_high=0.1))


def test_cispo_keeps_the_gradient_of_clipped_tokens_by_hand():
    # ratios e^(-1 + 1.5) = 1.6487 -> weight capped at 1 + 0.28; e^(-2 + 1) = 0.3679 (no lower bound: kept);
    # e^0 = 1. Loss -w * A * logp: -1.28 * 1 * -1 = 1.28, -0.3679 * 1 * -2 = 0.7358, -1 * 1 * -0.5 = 0.5,
    # and for A = -1 on a token with logp -1: -1 * -1 * -1 = -1.
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, 0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -1.0, -0.5], [-1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    cispo = settings(name="cispo", epsilon=float("inf"), epsilon_high=0.28)
    terms = POLICY_LOSSES["cispo"](LossInputs(logp, old, adv), cispo)
    w = math.exp(-1.0)
    torch.testing.assert_close(terms.per_token, torch.tensor([[1.28, 2 * w, 0.5], [-1.0, 0.0, 0.0]]))
    assert terms.clipped.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    # d loss / d logp = -w * A on every token, the clipped one included (PPO's clip would give it 0)
    terms.per_token.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.28, -w, -1.0], [1.0, 1.0, 1.0]]))
    # a lower bound 1 - 0.5 lifts the second token's weight to 0.5: loss -0.5 * 1 * -2 = 1.0
    bounded = POLICY_LOSSES["cispo"](LossInputs(logp.detach(), old, adv), settings(name="cispo", epsilon=0.5,
                                                                                     epsilon_high=0.28))
    assert bounded.per_token[0, 1].item() == pytest.approx(1.0) and bounded.clipped[0, 1].item() == 1.0


def test_online_dpo_loss_on_hand_computed_logprobs():
    # chosen: log pi = -1 - 2 = -3, ref = -1.5 - 2 = -3.5 -> log-ratio 0.5; rejected (second token padding):
    # log pi = -0.5, ref = -0.2 -> -0.3. margin = 0.1 * (0.5 + 0.3) = 0.08, loss = -log sigmoid(0.08).
    logp = torch.tensor([[-1.0, -2.0], [-0.5, 9.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0], [-0.2, 9.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    dpo = settings(name="online_dpo", beta=0.1, loss_aggregation="sequence", rows_per_item=2)
    terms = POLICY_LOSSES["online_dpo"](masked_inputs(logp, torch.zeros(2, 2), torch.tensor([1.0, -1.0]), mask, ref),
                                        dpo)
    expected = math.log(1.0 + math.exp(-0.08))
    torch.testing.assert_close(terms.per_token, torch.full((2, 2), expected))
    loss = aggregate(terms.per_token, mask, "sequence")  # the mean over the one pair
    assert loss.item() == pytest.approx(expected)
    # d loss / d log pi(chosen token) = -beta * sigmoid(-margin); the rejected tokens get the opposite sign
    loss.backward()
    g = 0.1 / (1.0 + math.exp(0.08))
    torch.testing.assert_close(logp.grad, torch.tensor([[-g, -g], [g, 0.0]]))
    # the order inside a pair does not matter: the +1 / -1 marks say which is chosen
    swapped = POLICY_LOSSES["online_dpo"](masked_inputs(logp.detach().flip(0), torch.zeros(2, 2),
                                                        torch.tensor([-1.0, 1.0]), mask.flip(0), ref.flip(0)), dpo)
    assert swapped.per_token[0, 0].item() == pytest.approx(expected)
    # a pair with a row that has no tokens (no grader signal) contributes nothing
    empty = POLICY_LOSSES["online_dpo"](masked_inputs(logp.detach(), torch.zeros(2, 2), torch.tensor([1.0, -1.0]),
                                                      torch.tensor([[1.0, 1.0], [0.0, 0.0]]), ref), dpo)
    assert empty.per_token.abs().sum() == 0


def test_dpo_loss_and_best_worst_pairs():
    from rftkit.algorithms.dpo import best_worst_pairs, dpo_loss

    loss, margin = dpo_loss(torch.tensor([-3.0]), torch.tensor([-0.5]), torch.tensor([-3.5]), torch.tensor([-0.2]), 0.1)
    assert margin.item() == pytest.approx(0.08) and loss.item() == pytest.approx(math.log(1 + math.exp(-0.08)))
    # group 0: best 1.0 first at row 1, worst 0.0 at row 2; group 1 tied: no pair; group 2: best row 9, worst row 8
    rewards = torch.tensor([0.1, 1.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.2, 0.2, 0.0])
    assert best_worst_pairs(rewards, 4).tolist() == [[1, 2], [9, 8]]
    assert best_worst_pairs(torch.ones(4), 4).shape == (0, 2)
