"""The embedded model ships loadable through the standard transformers path, and its recipe rebuilds it."""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rftkit.models.embedded import EMBEDDED_DIR
from rftkit.models.pretrain import PretrainRecipe, build


def test_shipped_model_loads_with_auto_classes_and_chat_template():
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_DIR)
    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_DIR)
    assert model.config.model_type == "qwen2"
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 5e6
    assert (EMBEDDED_DIR / "model.safetensors").stat().st_size < 8 * 2**20
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    # digits are single tokens, so 123 and 124 share their first two tokens
    assert tokenizer.tokenize("123")[:2] == tokenizer.tokenize("124")[:2] and len(tokenizer.tokenize("123")) == 3
    assert tokenizer.decode(tokenizer.encode("<answer>(3+5)*2</answer>")) == "<answer>(3+5)*2</answer>"
    # the chat roles are one token each (they were 3 and 9 before the tokenizer learned from them)
    assert [tokenizer.tokenize(text) for text in text.split("\n")[:1]] == [["<|im_start|>", "user"]]
    assert tokenizer.tokenize("<|im_start|>assistant\n") == ["<|im_start|>", "assistant", "Ċ"]


def test_recipe_builds_a_loadable_model(tmp_path):
    report = build(tmp_path / "m", PretrainRecipe(puzzles=300, steps=3, batch_size=8, warmup_steps=1,
                                                  exclude_size=50), log=lambda *_: None)
    assert report["recipe"]["steps"] == 3
    assert json.loads((tmp_path / "m" / "recipe.json").read_text())["parameters"] == report["parameters"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Using the numbers [1, 2], make 3."}],
                                        tokenize=True, add_generation_prompt=True, return_dict=False)
    logits = model(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tokenizer)) and torch.isfinite(logits).all()


def test_encode_puts_completion_tokens_after_the_chat_prompt_and_masks_only_them():
    from rftkit.models.pretrain import _encode

    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_DIR)
    pairs = [("Using the numbers [1, 2], make 3.", "<answer>1+2</answer><|im_end|>"),
             ("Using the numbers [10, 20, 3], make 90.", "<answer>(10+20)*3</answer><|im_end|>")]
    ids, mask = _encode(tokenizer, pairs)
    for row, (prompt, completion) in enumerate(pairs):
        prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                                   add_generation_prompt=True, return_dict=False)
        completion_ids = tokenizer.encode(completion, add_special_tokens=False)
        length = len(prompt_ids) + len(completion_ids)
        assert ids[row, :length].tolist() == list(prompt_ids) + completion_ids
        assert (ids[row, length:] == tokenizer.pad_token_id).all()
        assert mask[row].tolist() == [0] * len(prompt_ids) + [1] * len(completion_ids) + [0] * (ids.shape[1] - length)
    assert ids.shape[1] == max(len(tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=True,
                                                                 add_generation_prompt=True, return_dict=False))
                               + len(tokenizer.encode(c, add_special_tokens=False)) for p, c in pairs)


def test_recipe_loss_reads_completion_positions_only():
    """The recipe's loss (LM head on completion positions only) equals the full-logits masked mean."""
    from rftkit.models.pretrain import completion_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_DIR, dtype=torch.float32)
    x = torch.randint(4, 300, (3, 12))
    m = torch.zeros(3, 12, dtype=torch.long)
    m[0, 8:12], m[1, 5:9], m[2, 10:12] = 1, 1, 1
    logits = model(input_ids=x).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                            reduction="none").view(3, 11)
    expected = (nll * m[:, 1:]).sum() / m[:, 1:].sum()
    torch.testing.assert_close(completion_loss(model, x, m), expected, atol=1e-5, rtol=1e-5)


def test_bf16_recipe_trains_and_leaves_the_saved_attention_setting_alone(tmp_path):
    assert PretrainRecipe().bf16  # the shipped model is the bf16 build
    report = build(tmp_path / "m", PretrainRecipe(puzzles=300, steps=3, batch_size=8, warmup_steps=1,
                                                  exclude_size=50, bf16=True), log=lambda *_: None)
    assert report["recipe"]["bf16"] is True
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert model.config._attn_implementation != "eager"  # eager was for training only
