"""The embedded default model: a tiny Qwen2-architecture causal LM with an offline BPE tokenizer.

It exists so that rftkit runs on a laptop CPU with no hub access. `rft base build`
(`rftkit.models.pretrain`) trains it from scratch on synthetic Countdown solutions; the result
ships inside the package (`models/embedded/`) and loads through the standard
`AutoModelForCausalLM` / `AutoTokenizer` path like any hub model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

EMBEDDED_DIR = Path(__file__).parent / "embedded"

PAD, BOS, IM_START, IM_END = "<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, IM_START, IM_END]

# Qwen's ChatML layout; the assistant turn ends with <|im_end|>, which is also EOS.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Architecture of the shipped model (about 0.83 M parameters; float16 on disk).
ARCHITECTURE = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512):
    """Byte-level BPE with single-digit number tokens (so arithmetic sees digits) and ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=IM_END, pad_token=PAD,
                                   additional_special_tokens=[IM_START], clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def new_model(tokenizer, seed: int = 0):
    """A freshly initialised Qwen2 model sized by ARCHITECTURE, its vocabulary matched to the tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tokenizer), tie_word_embeddings=True, rope_theta=10000.0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **ARCHITECTURE)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)
