"""The update's forward: one packed row per distinct prompt, [prompt | completion 1 | completion 2 | ...].

It must be the same function as one forward over whole [prompt | completion] rows: the same
log-probs, entropies and value estimates, and the same LoRA gradients.
"""

import pytest
import torch

from rftkit.config import DataConfig, LoraConfig, ModelConfig
from rftkit.models.loading import attach_lora, encode_prompts, load_base_model, load_tokenizer, stop_token_ids
from rftkit.rollout.sampler import sample
from rftkit.tasks import load_examples
from rftkit.models.forward import prompt_runs, token_logprobs_and_values
from tests.conftest import randomise_lora


def test_prompt_runs_groups_consecutive_identical_prompts():
    ids = torch.tensor([[0, 5, 6], [0, 5, 6], [7, 5, 6], [7, 5, 6], [7, 5, 6], [0, 5, 6]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]])
    starts, counts = prompt_runs(ids, mask)
    assert starts.tolist() == [0, 2, 5]  # the last row repeats row 0 but is not next to it: its own run
    assert counts.tolist() == [2, 3, 1]
    starts, counts = prompt_runs(ids[:1], mask[:1])
    assert starts.tolist() == [0] and counts.tolist() == [1]


@pytest.fixture(scope="module")
def batch():
    torch.set_num_threads(1)
    model_config = ModelConfig()
    tokenizer = load_tokenizer(model_config)
    policy = attach_lora(load_base_model(model_config), LoraConfig(r=4))
    randomise_lora(policy, seed=0, scale=0.02)  # a non-zero adapter, so the outputs depend on it
    examples, _ = load_examples(DataConfig(train_size=8, val_size=2))
    prompts = encode_prompts(tokenizer, examples[:3], model_config.chat_template, None)
    prompts[1] = prompts[1][5:]  # different lengths: rows are left-padded by different amounts
    out = sample(policy, prompts, 4, 24, stop_token_ids(tokenizer), tokenizer.pad_token_id,
                 generator=torch.Generator().manual_seed(1))
    assert out.completion_mask.sum(-1).min() < out.completion_mask.sum(-1).max()  # ragged completions
    value_head = torch.nn.Linear(policy.config.hidden_size, 1)
    return policy, value_head, out


def _outputs_and_grads(policy, value_head, out, rows):
    """Outputs for `rows` in one call, and the gradient of a loss that uses all three outputs."""
    policy.zero_grad(set_to_none=True)
    logp, entropy, values = token_logprobs_and_values(policy, value_head, out.prompt_ids[rows], out.prompt_mask[rows],
                                                      out.completion_ids[rows], out.completion_mask[rows], 0.8,
                                                      with_entropy=True)
    mask = out.completion_mask[rows, :logp.shape[1]]
    ((logp + 0.1 * entropy + 0.01 * values) * mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
    return logp * mask, entropy * mask, values * mask, grads


@pytest.mark.parametrize("attention", ["sdpa", "eager"])  # a boolean 4-D mask, an additive one
def test_shared_prompt_forward_equals_one_forward_per_row(batch, attention):
    policy, value_head, out = batch
    policy.get_base_model().set_attn_implementation(attention)
    n = out.prompt_ids.shape[0]
    shared = _outputs_and_grads(policy, value_head, out, slice(0, n))  # 3 prompts x 4 completions: shared path
    per_row = [_outputs_and_grads(policy, value_head, out, slice(i, i + 1)) for i in range(n)]  # no sharing
    for k in range(3):
        width = shared[k].shape[1]
        stacked = torch.cat([torch.nn.functional.pad(r[k], (0, width - r[k].shape[1])) for r in per_row])
        torch.testing.assert_close(shared[k], stacked, atol=2e-5, rtol=1e-4)
    for name, grad in shared[3].items():  # sums over 12 rows in another order: float32 noise ~1e-5 of the scale
        expected = sum(r[3][name] for r in per_row)
        torch.testing.assert_close(grad, expected, atol=2e-4 * float(expected.abs().max()), rtol=1e-3)
    policy.get_base_model().set_attn_implementation("sdpa")


def test_a_micro_batch_that_splits_a_group_gives_the_same_outputs(batch):
    policy, value_head, out = batch
    whole = _outputs_and_grads(policy, value_head, out, slice(0, 12))[0]
    parts = [_outputs_and_grads(policy, value_head, out, slice(s, s + 5))[0] for s in (0, 5, 10)]  # 4|1, 3|2, 2
    width = whole.shape[1]
    stacked = torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])
    torch.testing.assert_close(whole, stacked, atol=2e-5, rtol=1e-4)
