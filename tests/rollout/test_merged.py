"""Sampling from a merged copy of the policy: the same model as the adapter-wrapped policy, kept in step."""

import pytest
import torch

from rftkit.types import SamplingSettings
from rftkit.config import DataConfig, LoraConfig, ModelConfig
from rftkit.models.loading import attach_lora, load_base_model, load_tokenizer
from rftkit.rollout import HFBackend
from rftkit.rollout.merged import MergedCopy, wants_merged_copy
from rftkit.tasks import load_examples
from rftkit.models.forward import token_logprobs
from tests.conftest import randomise_lora


def _randomise_adapter(policy, seed: int) -> None:
    randomise_lora(policy, seed, scale=0.05, which="lora_")  # A and B both


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model_config = ModelConfig()
    policy = attach_lora(load_base_model(model_config), LoraConfig(r=4, lora_alpha=8))
    examples, _ = load_examples(DataConfig(train_size=4, val_size=2))
    return policy, load_tokenizer(model_config), model_config, examples


def test_merged_copy_computes_the_policy_and_follows_its_updates(setup):
    policy, *_ = setup
    base_before = {n: p.clone() for n, p in policy.named_parameters() if "lora_" not in n}
    ids = torch.tensor([[2, 40, 41, 42, 43, 44]])
    _randomise_adapter(policy, 0)
    merged = MergedCopy(policy)
    assert len(merged.targets) == 4 * 7  # q, k, v, o, gate, up, down in each of 4 layers
    with torch.no_grad():
        torch.testing.assert_close(merged.refresh(policy)(ids).logits, policy(ids).logits, atol=1e-5, rtol=1e-5)
        _randomise_adapter(policy, 1)  # an optimizer step changes the adapter: refresh must follow
        stale = merged.model(ids).logits
        fresh = merged.refresh(policy)(ids).logits
        assert (stale - fresh).abs().max() > 1e-3
        torch.testing.assert_close(fresh, policy(ids).logits, atol=1e-5, rtol=1e-5)
        with policy.disable_adapter():  # the policy's own base weights are untouched, bit for bit
            for name, param in policy.named_parameters():
                if "lora_" not in name:
                    assert torch.equal(param, base_before[name]), name
    assert not any(p.requires_grad for p in merged.model.parameters())


def test_merged_sampling_records_the_policys_logprobs(setup):
    policy, tokenizer, model_config, examples = setup
    _randomise_adapter(policy, 2)
    backend = HFBackend("on")
    batch = backend.generate(policy, tokenizer, examples, SamplingSettings(3, 16, 1.0, 1.0),
                             torch.Generator().manual_seed(0))
    assert backend.merged is not None
    fresh, _ = token_logprobs(policy, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                              batch.completion_mask, 1.0)
    mask = batch.completion_mask[:, :fresh.shape[1]].bool()
    torch.testing.assert_close(batch.old_logprobs[:, :fresh.shape[1]][mask], fresh[mask], atol=1e-4, rtol=1e-4)
    unmerged = HFBackend("off").generate(policy, tokenizer, examples, SamplingSettings(3, 16, 1.0, 1.0),
                                         torch.Generator().manual_seed(0))
    assert unmerged.completions == batch.completions  # same draws: the two models differ only by rounding
    bare = policy.get_base_model()  # another model through the same backend: decided afresh, nothing to merge
    backend.generate(bare, tokenizer, examples[:1], SamplingSettings(1, 4, 1.0, 1.0), torch.Generator().manual_seed(0))
    assert backend.policy is bare and backend.merged is None


def test_auto_merges_small_peft_models_only(setup, monkeypatch):
    policy, *_ = setup
    assert wants_merged_copy("auto", policy) and wants_merged_copy("on", policy)
    assert not wants_merged_copy("off", policy)
    assert not wants_merged_copy("on", policy.get_base_model())  # no adapter: nothing to merge
    monkeypatch.setattr("rftkit.rollout.merged.MERGE_AUTO_MAX_PARAMS", 1000)
    assert not wants_merged_copy("auto", policy) and wants_merged_copy("on", policy)


def test_backend_encodes_each_prompt_once(setup, monkeypatch):
    policy, tokenizer, model_config, examples = setup
    import rftkit.rollout as rollout
    from rftkit.models.loading import encode_prompts

    calls = []
    monkeypatch.setattr(rollout, "encode_prompts",
                        lambda tok, exs, *a: calls.append(len(exs)) or encode_prompts(tok, exs, *a))
    backend = HFBackend("on")
    first = backend.encode(tokenizer, examples[:3], model_config.chat_template, None)
    assert first == encode_prompts(tokenizer, examples[:3], model_config.chat_template, None) and calls == [3]
    assert backend.encode(tokenizer, examples[1:4], model_config.chat_template, None)[:2] == first[1:]
    assert calls == [3, 1]
    with_system = backend.encode(tokenizer, examples[:1], model_config.chat_template, "Be brief.")
    assert with_system != first[:1] and calls == [3, 1, 1]  # another system prompt is another prompt
    # another tokenizer: afresh
    backend.encode(load_tokenizer(model_config), examples[:1], model_config.chat_template, None)
    assert calls == [3, 1, 1, 1]
