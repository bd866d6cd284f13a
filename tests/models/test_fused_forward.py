"""The update's fused forward computes PEFT's function: the same hidden states, log-probs and LoRA gradients."""

import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from rftkit.models import forward as update
from rftkit.config import LoraConfig, ModelConfig
from rftkit.models.kernels.fused_forward import FusedForward
from rftkit.models.loading import attach_lora, load_base_model
from tests.conftest import randomise_lora


def _packed_inputs(rows: int, width: int, vocab: int, seed: int = 0):
    """Ids, a causal block mask with two segments per row after a shared prefix, and positions."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (rows, width), generator=gen)
    segment = torch.zeros(rows, width, dtype=torch.long)
    segment[:, width // 2:width * 3 // 4], segment[:, width * 3 // 4:] = 1, 2
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    keys = segment[:, None, :]
    allowed = (causal & ((keys == 0) | (keys == segment[:, :, None])))[:, None]  # [U, 1, S, S]
    position = torch.arange(width).repeat(rows, 1)
    position[:, width * 3 // 4:] -= width // 4  # the second segment continues from the prefix too
    return ids, allowed, position


def _hidden_and_grads(policy, ids, allowed, position, fused: bool, queries_from: int = 0):
    policy.zero_grad(set_to_none=True)
    if fused:
        hidden = FusedForward.hidden_states(policy, ids, allowed, position, queries_from=queries_from)
    else:
        hidden = policy(input_ids=ids, attention_mask=allowed, position_ids=position,
                        output_hidden_states=True).hidden_states[-1][:, queries_from:]
    (hidden * torch.linspace(-1, 1, hidden.shape[-1])).sum().backward()
    return hidden.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}


def _assert_same(policy, ids, allowed, position, queries_from: int = 0):
    fused, fused_grads = _hidden_and_grads(policy, ids, allowed, position, fused=True, queries_from=queries_from)
    reference, reference_grads = _hidden_and_grads(policy, ids, allowed, position, fused=False,
                                                   queries_from=queries_from)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-4)
    assert fused_grads.keys() == reference_grads.keys() and fused_grads
    for name, grad in fused_grads.items():
        expected = reference_grads[name]
        assert expected.abs().max() > 0, name
        torch.testing.assert_close(grad, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-3)


@pytest.fixture(scope="module")
def policy():
    torch.set_num_threads(1)
    policy = attach_lora(load_base_model(ModelConfig()), LoraConfig(r=4))
    randomise_lora(policy, seed=0, scale=0.05, which="lora_")
    return policy


def test_embedded_policy_matches_peft_with_and_without_its_adapter(policy):
    assert FusedForward.supports(policy)
    ids, allowed, position = _packed_inputs(3, 24, 300)
    _assert_same(policy, ids, allowed, position)
    with policy.disable_adapter():  # the reference model: base weights only
        base = FusedForward.hidden_states(policy, ids, allowed, position)
        expected = policy(input_ids=ids, attention_mask=allowed, position_ids=position,
                          output_hidden_states=True).hidden_states[-1]
        torch.testing.assert_close(base, expected, atol=1e-5, rtol=1e-4)


def test_queries_from_gives_the_later_columns_with_gradients_through_the_earlier_keys(policy):
    ids, allowed, position = _packed_inputs(3, 24, 300, seed=3)
    fused, _ = _hidden_and_grads(policy, ids, allowed, position, fused=True, queries_from=10)
    assert fused.shape == (3, 14, policy.config.hidden_size)
    _assert_same(policy, ids, allowed, position, queries_from=10)  # LoRA gradients flow through columns < 10 too


def test_llama_with_grouped_kv_heads_and_some_layers_adapted():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                         rope_scaling={"rope_type": "linear", "factor": 2.0})
    model = get_peft_model(LlamaForCausalLM(config),
                           PeftLoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    model.eval()
    randomise_lora(model, seed=1, scale=0.1, which="lora_")
    assert FusedForward.supports(model)
    _assert_same(model, *_packed_inputs(2, 16, 60, seed=3))


def test_packed_update_uses_it_and_gives_the_models_logprobs_and_gradients(policy, monkeypatch):
    ids, allowed, position = _packed_inputs(2, 20, 300, seed=5)
    completion_ids = torch.randint(4, 300, (4, 6), generator=torch.Generator().manual_seed(2))
    completion_mask = torch.ones(4, 6, dtype=torch.long)
    completion_mask[1, 4:] = completion_mask[3, 2:] = 0
    prompt_ids = ids[[0, 0, 1, 1], :8]
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[:2, :3] = 0  # prompts of 5 and 8 tokens: the last layer's queries start at column 4

    def run():
        policy.zero_grad(set_to_none=True)
        logp, _ = update.token_logprobs(policy, prompt_ids, prompt_mask, completion_ids, completion_mask, 1.0)
        (logp * completion_mask).sum().backward()
        return logp * completion_mask, {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}

    calls = []
    original = FusedForward.hidden_states
    monkeypatch.setattr(FusedForward, "hidden_states",
                        staticmethod(lambda *a, **k: calls.append(k) or original(*a, **k)))
    fused_logp, fused_grads = run()
    assert calls == [{"queries_from": 4}]  # the packed path went through the fused forward
    monkeypatch.setattr(FusedForward, "supports", staticmethod(lambda model: False))
    model_logp, model_grads = run()
    torch.testing.assert_close(fused_logp, model_logp, atol=2e-5, rtol=1e-4)
    for name, grad in fused_grads.items():
        torch.testing.assert_close(grad, model_grads[name], atol=1e-4 * float(model_grads[name].abs().max()),
                                   rtol=1e-3)


def test_unsupported_setups_use_the_models_own_forward():
    torch.manual_seed(0)
    tiny = dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2)
    dora = get_peft_model(LlamaForCausalLM(LlamaConfig(**tiny)), PeftLoraConfig(r=2, target_modules=["q_proj"],
                                                                                 use_dora=True))
    assert not FusedForward.supports(dora)
    head = get_peft_model(LlamaForCausalLM(LlamaConfig(**tiny)), PeftLoraConfig(r=2, target_modules=["q_proj",
                                                                                                     "lm_head"]))
    assert not FusedForward.supports(head)  # an adapted LM head
    merged = get_peft_model(LlamaForCausalLM(LlamaConfig(**tiny)), PeftLoraConfig(r=2, target_modules=["q_proj"]))
    merged.merge_adapter()
    assert not FusedForward.supports(merged)  # the adapter already sits inside the weights
    trained = get_peft_model(LlamaForCausalLM(LlamaConfig(**tiny)), PeftLoraConfig(r=2, target_modules=["q_proj"]))
    trained.base_model.model.model.layers[0].self_attn.k_proj.weight.requires_grad_(True)
    assert not FusedForward.supports(trained)  # a base weight trained next to the adapter it is stacked with
    assert not FusedForward.supports(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=30)))
    assert FusedForward.supports(LlamaForCausalLM(LlamaConfig(**tiny)))  # a plain model: its weights as they are


def test_bfloat16_policy_matches_peft_to_bfloat16_precision():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = get_peft_model(LlamaForCausalLM(config), PeftLoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    model.to(torch.bfloat16).eval()
    randomise_lora(model, seed=1, scale=0.1, which="lora_")
    assert FusedForward.supports(model)
    ids, allowed, position = _packed_inputs(2, 16, 60, seed=3)
    with torch.no_grad():
        fused = FusedForward.hidden_states(model, ids, allowed, position)
        reference = model(input_ids=ids, attention_mask=allowed, position_ids=position,
                          output_hidden_states=True).hidden_states[-1]
    assert fused.dtype == torch.bfloat16
    torch.testing.assert_close(fused.float(), reference.float(), atol=5e-2, rtol=5e-2)
