"""The log-probs recorded while sampling are the policy's log-probs of the sampled tokens.

The update uses them as pi_old without another forward, so they must equal what a fresh
forward pass (`update.token_logprobs`) gives for the same tokens: with left-padded prompts of
different lengths, with rows that finish early (dropped from the batch, or kept until pruning),
and under temperature and nucleus sampling.
"""

import pytest
import torch

from rftkit.config import DataConfig, LoraConfig, ModelConfig
from rftkit.models.loading import attach_lora, encode_prompts, load_base_model, load_tokenizer, stop_token_ids
from rftkit.rollout import sampler
from rftkit.rollout.sampler import generate_with_logprobs, sample
from rftkit.tasks import load_examples
from rftkit.models.forward import token_logprobs
from tests.conftest import randomise_lora


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model_config = ModelConfig()
    tokenizer = load_tokenizer(model_config)
    policy = attach_lora(load_base_model(model_config), LoraConfig(r=4))
    randomise_lora(policy, seed=0, scale=0.02)  # a non-zero adapter, so the log-probs depend on it
    examples, _ = load_examples(DataConfig(train_size=8, val_size=2))
    prompts = encode_prompts(tokenizer, examples[:4], model_config.chat_template, None)
    prompts[1] = prompts[1][7:]  # different lengths, so rows are left-padded by different amounts
    prompts[3] = prompts[3][3:]
    return policy, tokenizer, prompts


def _recompute(policy, out, temperature):
    logp, _ = token_logprobs(policy, out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask,
                             temperature)
    return logp


@pytest.mark.parametrize("prune_fraction", [0.0, 0.25, 1.0])  # prune on every finish, by default, never
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_sampling_logprobs_equal_a_fresh_forward(setup, monkeypatch, prune_fraction, temperature, top_p):
    policy, tokenizer, prompts = setup
    monkeypatch.setattr(sampler, "PRUNE_FRACTION", prune_fraction)
    out = sample(policy, prompts, 4, 24, stop_token_ids(tokenizer), tokenizer.pad_token_id, temperature=temperature,
                 top_p=top_p, generator=torch.Generator().manual_seed(1))
    assert out.prompt_mask.sum(-1).unique().numel() >= 3  # really different prompt lengths
    lengths = out.completion_mask.sum(-1)
    assert lengths.min() < out.completion_ids.shape[1]  # some rows finished before others
    finished = torch.isin(out.completion_ids, torch.tensor(sorted(stop_token_ids(tokenizer)))).any(-1)
    assert finished.sum() >= 2
    mask = out.completion_mask.bool()
    fresh = _recompute(policy, out, temperature)
    torch.testing.assert_close(out.logprobs[mask], fresh[mask], atol=2e-5, rtol=1e-5)
    assert (out.logprobs[~mask] == 0).all() and (out.completion_ids[~mask] == tokenizer.pad_token_id).all()
    assert (out.logprobs[mask] <= 0).all()


def test_greedy_completions_match_generate_and_ignore_pruning(setup, monkeypatch):
    """Dropping finished rows changes nothing for the live rows; greedy decoding equals `model.generate`."""
    policy, tokenizer, prompts = setup
    eos, pad = stop_token_ids(tokenizer), tokenizer.pad_token_id
    runs = []
    for fraction in (0.0, 1.0):
        monkeypatch.setattr(sampler, "PRUNE_FRACTION", fraction)
        runs.append(sample(policy, prompts, 1, 24, eos, pad, greedy=True))
    reference = generate_with_logprobs(policy, prompts, 1, 24, eos, pad, greedy=True)
    width = reference.completion_mask.sum(-1).max()
    for out in runs:
        assert torch.equal(out.completion_ids, reference.completion_ids[:, :width])
        assert torch.equal(out.completion_mask, reference.completion_mask[:, :width])
        torch.testing.assert_close(out.logprobs, reference.logprobs[:, :width], atol=2e-5, rtol=1e-5)


def test_each_prompt_gets_its_group_of_samples(setup):
    policy, tokenizer, prompts = setup
    out = sample(policy, prompts, 3, 8, stop_token_ids(tokenizer), tokenizer.pad_token_id,
                 generator=torch.Generator().manual_seed(2))
    assert out.completion_ids.shape[0] == 12
    for i in range(4):  # rows i*G .. i*G+G-1 carry prompt i
        rows = out.prompt_ids[i * 3:(i + 1) * 3]
        assert (rows == rows[0]).all()
        assert rows[0][out.prompt_mask[i * 3].bool()].tolist() == prompts[i]
