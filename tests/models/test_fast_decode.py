"""The fused decode step computes what the model's own forward computes, and sampling through it draws the same."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from rftkit.types import SamplingSettings
from rftkit.config import DataConfig, LoraConfig, ModelConfig
from rftkit.models.loading import attach_lora, encode_prompts, load_base_model, load_tokenizer, stop_token_ids
from rftkit.rollout import HFBackend, sampler
from rftkit.models.kernels.fast_decode import FastDecoder
from rftkit.rollout.merged import MergedCopy
from rftkit.rollout.sampler import _new_cache, cache_kwarg, left_pad, sample
from rftkit.tasks import load_examples
from rftkit.models.forward import token_logprobs
from tests.conftest import randomise_lora


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model_config = ModelConfig()
    tokenizer = load_tokenizer(model_config)
    policy = attach_lora(load_base_model(model_config), LoraConfig(r=4, lora_alpha=8))
    randomise_lora(policy, seed=0, scale=0.05, which="lora_")  # a non-zero adapter in the merged weights
    examples, _ = load_examples(DataConfig(train_size=6, val_size=2))
    prompts = encode_prompts(tokenizer, examples[:3], model_config.chat_template, None)
    prompts[1] = prompts[1][5:]  # left padding of different widths
    return policy, tokenizer, model_config, examples, prompts


def _step_against_forward(model, prompts, pad_id):
    """Prefill two identical caches, then one decode step through each path; returns both logits."""
    ids, mask = left_pad(prompts, pad_id)
    width, rows = ids.shape[1], ids.shape[0]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    caches = [_new_cache(model, width + 4) for _ in range(2)]
    with torch.inference_mode():
        for cache in caches:
            model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                  **{cache_kwarg(model): cache})
        tokens = torch.arange(rows) + 20
        attention = torch.cat([mask.bool(), torch.ones(rows, 1, dtype=torch.bool)], dim=1)
        next_position = mask.sum(-1)
        reference = model(input_ids=tokens[:, None], attention_mask=attention[:, None, None, :],
                          position_ids=next_position[:, None], use_cache=True,
                          **{cache_kwarg(model): caches[0]}).logits[:, -1]
        fast = FastDecoder(model).step(tokens, next_position, caches[1].layers, attention)
        # both paths appended the same key/value column to their caches
        tolerance = 1e-5 if model.dtype == torch.float32 else 2e-2
        for a, b in zip(caches[0].layers, caches[1].layers):
            torch.testing.assert_close(a.keys, b.keys, atol=tolerance, rtol=tolerance)
    return reference, fast


def test_step_logits_equal_the_models_forward(setup):
    policy, tokenizer, _, _, prompts = setup
    merged = MergedCopy(policy).refresh(policy)
    reference, fast = _step_against_forward(merged, prompts, tokenizer.pad_token_id)
    assert reference.shape == fast.shape == (3, len(tokenizer))
    torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-4)


def test_step_handles_llama_without_biases_and_scaled_rope():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64,
                         rope_scaling={"rope_type": "linear", "factor": 2.0})
    model = LlamaForCausalLM(config).eval()
    assert FastDecoder.supports(model)
    reference, fast = _step_against_forward(model, [[1, 2, 3, 4, 5], [6, 7]], pad_id=0)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def _prefill_against_forward(model, prompts, pad_id, copies: int):
    """The fused prefill's logits and cache against the model's forward on the same left-padded prompts."""
    ids, mask = left_pad(prompts, pad_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    caches = [_new_cache(model, ids.shape[1] + 4) for _ in range(2)]
    with torch.inference_mode():
        reference = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          **{cache_kwarg(model): caches[0]}).logits[:, -1]
        fast = FastDecoder(model).prefill(ids, mask, positions, caches[1].layers, copies)
    real = mask.bool().repeat_interleave(copies, 0)[:, None, :, None]  # padding columns are never attended
    tolerance = 1e-5 if model.dtype == torch.float32 else 2e-2
    for expected, got in zip(caches[0].layers, caches[1].layers):
        assert got.get_seq_length() == ids.shape[1] and got.keys.shape[0] == len(prompts) * copies
        for a, b in ((expected.keys, got.keys), (expected.values, got.values)):
            torch.testing.assert_close(b * real, a.repeat_interleave(copies, 0) * real, atol=tolerance,
                                       rtol=tolerance)
    return reference, fast


def test_prefill_gives_the_models_logits_and_fills_each_prompts_rows_of_the_cache(setup):
    policy, tokenizer, _, _, prompts = setup
    merged = MergedCopy(policy).refresh(policy)
    reference, fast = _prefill_against_forward(merged, prompts, tokenizer.pad_token_id, copies=3)
    torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-4)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64,
                                         rope_scaling={"rope_type": "linear", "factor": 2.0})).eval()
    reference, fast = _prefill_against_forward(llama, [[1, 2, 3, 4, 5], [6, 7]], pad_id=0, copies=1)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_supports_only_plain_llama_family_models(setup):
    policy = setup[0]
    assert not FastDecoder.supports(policy)  # PEFT-wrapped: the adapter ops are not in the fused weights
    assert not FastDecoder.supports(policy.get_base_model())  # its linear layers are still LoRA layers
    assert FastDecoder.supports(load_base_model(ModelConfig()))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=30))
    assert not FastDecoder.supports(gpt2)
    sliding = LlamaForCausalLM(LlamaConfig(vocab_size=30, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, layer_types=["sliding_attention"]))
    assert not FastDecoder.supports(sliding)


@pytest.mark.parametrize("prune_fraction", [0.0, 1.0])  # prune on every finish, never
def test_sampling_through_the_fast_step_draws_the_same(setup, monkeypatch, prune_fraction):
    policy, tokenizer, _, _, prompts = setup
    monkeypatch.setattr(sampler, "PRUNE_FRACTION", prune_fraction)
    merged = MergedCopy(policy, fast_decode=True)
    model = merged.refresh(policy)
    assert merged.decoder is not None
    args = (model, prompts, 4, 24, stop_token_ids(tokenizer), tokenizer.pad_token_id)
    slow = sample(*args, generator=torch.Generator().manual_seed(5))
    fast = sample(*args, generator=torch.Generator().manual_seed(5), decoder=merged.decoder)
    assert (slow.completion_mask.sum(-1) < slow.completion_ids.shape[1]).any()  # rows finish at different steps
    assert torch.equal(fast.completion_ids, slow.completion_ids)
    torch.testing.assert_close(fast.logprobs, slow.logprobs, atol=2e-5, rtol=1e-5)
    # and they are the policy's log-probs (what the update uses as pi_old)
    fresh, _ = token_logprobs(policy, fast.prompt_ids, fast.prompt_mask, fast.completion_ids, fast.completion_mask,
                              1.0)
    mask = fast.completion_mask.bool()
    torch.testing.assert_close(fast.logprobs[mask], fresh[mask], atol=1e-4, rtol=1e-4)


def test_backend_decoder_follows_adapter_updates(setup):
    policy, tokenizer, model_config, examples, _ = setup
    backend = HFBackend("on", fast_decode="auto")
    generate = lambda b: b.generate(policy, tokenizer, examples, SamplingSettings(3, 16, 1.0, 1.0),
                                    torch.Generator().manual_seed(0))
    generate(backend)
    assert backend.merged.decoder is not None
    randomise_lora(policy, seed=7, scale=0.05, which="lora_")  # an optimizer step changed the adapter
    try:
        fast, plain = generate(backend), generate(HFBackend("on", fast_decode="off"))
        assert fast.completions == plain.completions
        torch.testing.assert_close(fast.old_logprobs, plain.old_logprobs, atol=2e-5, rtol=1e-5)
    finally:
        randomise_lora(policy, seed=0, scale=0.05, which="lora_")


def test_stacked_weights_follow_in_place_updates_and_restack_after_replacement(setup):
    policy = setup[0]
    merged = MergedCopy(policy, fast_decode=True)
    model = merged.refresh(policy)
    decoder, attention = merged.decoder, model.model.layers[0].self_attn
    stacked = decoder.layers[0].qkv
    with torch.no_grad():
        attention.k_proj.weight.add_(1.0)  # in place (what refresh does): the stack sees it
    rows = attention.q_proj.weight.shape[0]
    assert torch.equal(stacked[rows:rows + attention.k_proj.weight.shape[0]], attention.k_proj.weight)
    decoder.refresh()
    assert decoder.layers[0].qkv is stacked  # nothing to re-stack
    attention.k_proj.weight = torch.nn.Parameter(torch.zeros_like(attention.k_proj.weight), requires_grad=False)
    decoder.refresh()  # a replaced tensor: stacked again, and the projection is a view of the new stack
    assert decoder.layers[0].qkv is not stacked and (decoder.layers[0].qkv[rows:rows + 64] == 0).all()
    merged.refresh(policy)  # the merged copy writes the adapter's weights back into the new stack
    assert decoder.layers[0].qkv[rows:rows + 64].abs().sum() > 0


def test_step_follows_the_models_recipe_in_bfloat16():
    """In low precision RMSNorm normalises in float32 and scales in the model's dtype, as transformers does."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    reference, fast = _step_against_forward(model, [[1, 2, 3, 4, 5], [6, 7]], pad_id=0)
    assert fast.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), reference.float(), atol=3e-2, rtol=3e-2)
