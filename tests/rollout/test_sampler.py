"""The token draw itself: inverse-CDF sampling follows softmax(logits / T), and nucleus sampling its cut."""

import torch

from rftkit.rollout.sampler import _pick_tokens

LOGITS = torch.tensor([2.0, 1.0, 0.5, -1.0, -3.0])


def test_draws_follow_the_tempered_softmax_and_report_its_logprob():
    rows = 40000
    tokens, logprobs = _pick_tokens(LOGITS.repeat(rows, 1), 0.7, 1.0, False, torch.Generator().manual_seed(0))
    expected = torch.softmax(LOGITS / 0.7, -1)  # [0.765, 0.184, 0.090, 0.011, 0.0003] (hand: exp(l/0.7) / sum)
    observed = torch.bincount(tokens, minlength=5).float() / rows
    assert (observed - expected).abs().max() < 0.01  # binomial SE at p=0.77 is 0.002
    torch.testing.assert_close(logprobs, torch.log_softmax(LOGITS / 0.7, -1)[tokens])


def test_a_token_of_zero_probability_is_never_drawn():
    # exp(-200 - 10) underflows to 0 in float32: the first and the last token have no weight at all
    logits = torch.tensor([-200.0, 10.0, 10.0, -200.0]).repeat(20000, 1)
    tokens, logprobs = _pick_tokens(logits, 1.0, 1.0, False, torch.Generator().manual_seed(2))
    assert set(tokens.tolist()) == {1, 2}
    assert abs((tokens == 1).float().mean() - 0.5) < 0.02
    torch.testing.assert_close(logprobs, torch.full((20000,), -torch.log(torch.tensor(2.0))))


def test_nucleus_never_draws_outside_the_top_p_mass():
    probs = torch.softmax(LOGITS, -1)  # [0.609, 0.224, 0.136, 0.030, 0.004]
    tokens, _ = _pick_tokens(LOGITS.repeat(5000, 1), 1.0, 0.8, False, torch.Generator().manual_seed(1))
    assert set(tokens.tolist()) == {0, 1}  # 0.609 < 0.8, 0.609 + 0.224 >= 0.8: the nucleus is the top two
    share = (tokens == 0).float().mean()
    assert abs(share - probs[0] / (probs[0] + probs[1])) < 0.02


def test_greedy_takes_the_argmax():
    tokens, logprobs = _pick_tokens(torch.stack([LOGITS, LOGITS.flip(0)]), 1.0, 1.0, True, None)
    assert tokens.tolist() == [0, 4]
    torch.testing.assert_close(logprobs, torch.log_softmax(LOGITS, -1)[[0, 0]])
