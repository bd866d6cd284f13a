"""Every Llama-family variant the kernels accept, through each kernel, against the model's own forward.

The variants are the ones transformers' Qwen2 and Llama code can build and `llama_family` accepts:
Qwen2's q/k/v bias, Llama with and without `attention_bias` (q/k/v and o_proj bias) and with
`mlp_bias` (gate/up/down bias), grouped KV heads, and bfloat16. Every bias is filled with nonzero
random values (transformers initialises them to zero), so a kernel that drops one fails here.
"""

import copy

import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rftkit.models import forward as update
from rftkit.models.kernels.fast_decode import FastDecoder
from rftkit.models.kernels.fused_forward import FusedForward
from tests.conftest import randomise_lora
from tests.models.test_fast_decode import _prefill_against_forward, _step_against_forward
from tests.models.test_fused_forward import _assert_same, _packed_inputs

VOCAB = 60
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=64)
VARIANTS = {
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(num_key_value_heads=2), torch.float32),
    "llama": (LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=4), torch.float32),
    "llama_attention_bias": (LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=4, attention_bias=True),
                             torch.float32),
    "llama_mlp_bias": (LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=4, mlp_bias=True), torch.float32),
    "llama_gqa_all_biases": (LlamaConfig, LlamaForCausalLM,
                             dict(num_key_value_heads=1, attention_bias=True, mlp_bias=True,
                                  rope_scaling={"rope_type": "linear", "factor": 2.0}), torch.float32),
    "qwen2_bfloat16": (Qwen2Config, Qwen2ForCausalLM, dict(num_key_value_heads=2), torch.bfloat16),
    "llama_bfloat16_all_biases": (LlamaConfig, LlamaForCausalLM,
                                  dict(num_key_value_heads=2, attention_bias=True, mlp_bias=True), torch.bfloat16),
}
PROMPTS = [[1, 2, 3, 4, 5], [6, 7]]


def _model(variant: str):
    """A random-initialised model of `variant` with every bias set to seeded N(0, 0.3^2) values."""
    config_class, model_class, extra, dtype = VARIANTS[variant]
    torch.manual_seed(0)
    model = model_class(config_class(**SMALL, **extra)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, 0.3)
    return model.to(dtype), {name for name, m in model.named_modules() if getattr(m, "bias", None) is not None}


def _tolerance(model) -> float:
    return 1e-5 if model.dtype == torch.float32 else 3e-2


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_decoder_prefill_and_step_give_the_models_logits(variant):
    torch.set_num_threads(1)
    model, _ = _model(variant)
    assert FastDecoder.supports(model)
    tolerance = _tolerance(model)
    reference, fast = _prefill_against_forward(model, PROMPTS, pad_id=0, copies=2)
    assert fast.dtype == reference.dtype == model.dtype
    torch.testing.assert_close(fast.float(), reference.float(), atol=tolerance, rtol=tolerance)
    reference, fast = _step_against_forward(model, PROMPTS, pad_id=0)
    torch.testing.assert_close(fast.float(), reference.float(), atol=tolerance, rtol=tolerance)


def test_the_variants_have_the_biases_they_claim():
    """The checks above can only catch a dropped bias that the model has."""
    expected = {"qwen2": {"q_proj", "k_proj", "v_proj"}, "llama": set(),
                "llama_attention_bias": {"q_proj", "k_proj", "v_proj", "o_proj"},
                "llama_mlp_bias": {"gate_proj", "up_proj", "down_proj"},
                "llama_gqa_all_biases": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}
    for variant, projections in expected.items():
        _, with_bias = _model(variant)
        assert {name.rsplit(".", 1)[-1] for name in with_bias} == projections, variant


def _adapted(variant: str):
    model, _ = _model(variant)
    policy = get_peft_model(model, PeftLoraConfig(r=4, lora_alpha=8, target_modules="all-linear")).eval()
    randomise_lora(policy, seed=1, scale=0.1, which="lora_")
    policy.to(model.dtype)
    assert FusedForward.supports(policy)
    return policy


@pytest.mark.parametrize("variant", [v for v, spec in VARIANTS.items() if spec[3] == torch.float32])
def test_fused_forward_gives_the_models_hidden_states_and_lora_gradients(variant):
    torch.set_num_threads(1)
    policy = _adapted(variant)
    ids, allowed, position = _packed_inputs(2, 16, VOCAB, seed=3)
    _assert_same(policy, ids, allowed, position)
    _assert_same(policy, ids, allowed, position, queries_from=7)


@pytest.mark.parametrize("variant", ["qwen2", "llama_gqa_all_biases"])
def test_fused_forward_gives_trainable_biases_their_gradients(variant):
    """PEFT's bias="all" trains every bias next to the adapter; the fused projections pass them gradients too."""
    torch.set_num_threads(1)
    model, with_bias = _model(variant)
    policy = get_peft_model(model, PeftLoraConfig(r=4, lora_alpha=8, target_modules="all-linear", bias="all")).eval()
    randomise_lora(policy, seed=1, scale=0.1, which="lora_")
    assert FusedForward.supports(policy)
    trained = {name for name, p in policy.named_parameters() if p.requires_grad and name.endswith("bias")}
    assert len(trained) == len(with_bias)
    _assert_same(policy, *_packed_inputs(2, 16, VOCAB, seed=3))  # every trainable parameter, biases included


def _logprobs_and_grads(policy, fused: bool, monkeypatch):
    """Completion log-probs [4, 6] and LoRA gradients of their sum through the update's packed forward, fused or
    the model's own."""
    gen = torch.Generator().manual_seed(2)
    prompt_ids = torch.randint(4, VOCAB, (2, 8), generator=gen)[[0, 0, 1, 1]]  # two completions per prompt: packed
    completion_ids = torch.randint(4, VOCAB, (4, 6), generator=gen)
    prompt_mask, completion_mask = torch.ones_like(prompt_ids), torch.ones_like(completion_ids)
    prompt_mask[:2, :3] = 0
    completion_mask[1, 4:] = completion_mask[3, 2:] = 0
    with monkeypatch.context() as patch:
        if not fused:
            patch.setattr(FusedForward, "supports", staticmethod(lambda model: False))
        policy.zero_grad(set_to_none=True)
        logp, _ = update.token_logprobs(policy, prompt_ids, prompt_mask, completion_ids, completion_mask, 1.0)
        (logp * completion_mask).sum().backward()
    grads = {n: p.grad.float().clone() for n, p in policy.named_parameters() if p.requires_grad}
    return (logp * completion_mask).detach().float(), grads


@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_forward_gives_the_models_logprobs_and_gradients(variant, monkeypatch):
    torch.set_num_threads(1)
    policy = _adapted(variant)
    calls = []
    original = FusedForward.hidden_states
    monkeypatch.setattr(FusedForward, "hidden_states",
                        staticmethod(lambda *a, **k: calls.append(k) or original(*a, **k)))
    fused_logp, fused_grads = _logprobs_and_grads(policy, True, monkeypatch)
    assert calls, "the packed update did not go through the fused forward"
    model_logp, model_grads = _logprobs_and_grads(policy, False, monkeypatch)
    assert fused_grads.keys() == model_grads.keys() and fused_grads
    if policy.dtype == torch.float32:
        torch.testing.assert_close(fused_logp, model_logp, atol=2e-5, rtol=1e-4)
        for name, grad in fused_grads.items():
            expected = model_grads[name]
            assert expected.abs().max() > 0, name
            torch.testing.assert_close(grad, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-3)
        return
    # bfloat16: both paths round differently, so each is measured against float32 on the same weights,
    # and the fused path must be about as accurate as the model's own bfloat16 forward
    exact_logp, exact_grads = _logprobs_and_grads(copy.deepcopy(policy).float(), False, monkeypatch)
    error = lambda logp: float((logp - exact_logp).abs().max())
    assert error(fused_logp) <= 2 * error(model_logp) + 1e-3, (error(fused_logp), error(model_logp))
    relative = lambda grads: max(float((grads[n] - g).norm() / g.norm()) for n, g in exact_grads.items())
    assert relative(fused_grads) <= 1.5 * relative(model_grads) + 1e-2, (relative(fused_grads), relative(model_grads))
