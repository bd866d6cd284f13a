"""Loading the policy: base weights (embedded, hub name or local path) + tokenizer + a LoRA adapter.

There is one copy of the base weights. The reference policy for the KL term is the same model
with the adapter disabled (`with policy.disable_adapter():`), never a second model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rftkit.config import LoraConfig, ModelConfig
from rftkit.models.embedded import EMBEDDED_DIR
from rftkit.models.errors import ModelLoadError  # noqa: F401  (re-exported: its home needs no torch)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(setting: str, local_rank: int | None = None) -> torch.device:
    """`model.device` as a torch.device: 'auto' is CUDA when available, else CPU. Under torchrun
    (`local_rank` given) 'auto' and 'cuda' pick the rank's own GPU."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelLoadError(f"model.device {setting!r}: this torch build sees no CUDA device "
                                 f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}); "
                                 "use model.device: cpu, or install a CUDA build of torch on a GPU host")
        if setting == "cuda" and local_rank is not None:
            setting = f"cuda:{local_rank}"
        device = torch.device(setting)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(f"model.device {setting!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return device
    if setting == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("model.device 'mps': the MPS backend is not available on this machine")
    return torch.device(setting)


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    """`model.dtype`: 'auto' is bfloat16 on CUDA devices that support it, float32 elsewhere."""
    if setting != "auto":
        return _DTYPES[setting]
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float32


def resolve_model_path(name: str) -> str:
    if name == "embedded":
        if not (EMBEDDED_DIR / "config.json").is_file():
            raise ModelLoadError(f"the embedded model is missing from {EMBEDDED_DIR}; rebuild it with `rft base build`")
        return str(EMBEDDED_DIR)
    return name


def load_tokenizer(config: ModelConfig):
    from transformers import AutoTokenizer

    path = resolve_model_path(config.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=not config.allow_download)
    except (OSError, ValueError) as exc:  # ValueError: a directory without a usable config.json
        raise ModelLoadError(_not_found_message(config, exc)) from None
    if tokenizer.pad_token_id is None:  # many hub tokenizers ship without one; EOS is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _not_found_message(config: ModelConfig, exc: Exception) -> str:
    hint = ("it is not a local directory and not in the Hugging Face cache; download it where you have access "
            "(`huggingface-cli download NAME`) or set model.allow_download: true")
    if Path(config.name).exists():
        hint = "the directory exists but lacks config.json or tokenizer files"
    return f"model.name {config.name!r}: could not load ({hint}). Cause: {exc}"


def load_base_model(config: ModelConfig, device: torch.device | None = None):
    """The frozen base model on `device` (default: `model.device` resolved), in `model.dtype`."""
    from transformers import AutoModelForCausalLM

    device = device if device is not None else resolve_device(config.device)
    path = resolve_model_path(config.name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(config.dtype, device),
                                                     local_files_only=not config.allow_download)
    except (OSError, ValueError) as exc:  # ValueError: a directory without a usable config.json
        raise ModelLoadError(_not_found_message(config, exc)) from None
    model.to(device)
    model.eval()  # no dropout anywhere: sampling-time and training-time log-probs must agree
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def attach_lora(model, config: LoraConfig, adapter_dir: str | Path | None = None):
    """Wrap with a fresh LoRA adapter, or load a saved one (trainable) from `adapter_dir`."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model

    if adapter_dir is not None:
        policy = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    else:
        peft_config = PeftLoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                     target_modules=config.target_modules, task_type="CAUSAL_LM", bias="none")
        policy = get_peft_model(model, peft_config)
    policy.eval()
    return policy


def enable_gradient_checkpointing(policy) -> None:
    """transformers' per-layer activation checkpointing (non-reentrant, so LoRA's gradients flow through
    frozen inputs); active in train mode only, which the update switches on around its backward."""
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    if hasattr(base, "activation_checkpointing_enable"):  # transformers 5's name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def lora_parameters(policy) -> list[torch.nn.Parameter]:
    params = [p for n, p in policy.named_parameters() if p.requires_grad]
    if not params or any("lora_" not in n for n, p in policy.named_parameters() if p.requires_grad):
        raise RuntimeError("expected only LoRA parameters to be trainable")
    return params


def encode_prompts(tokenizer, examples, chat_template: bool, system_prompt: str | None) -> list[list[int]]:
    """Token ids of each example's prompt, rendered through the tokenizer's chat template when
    `chat_template` (`model.chat_template`) is on and the tokenizer has one."""
    encoded = []
    for example in examples:
        if chat_template and tokenizer.chat_template:
            ids = tokenizer.apply_chat_template(example.chat(system_prompt), tokenize=True, add_generation_prompt=True,
                                                return_dict=False)
        else:
            ids = tokenizer.encode(example.prompt_text(), add_special_tokens=True)
        encoded.append(list(ids))
    return encoded


def stop_token_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return {i for i in ids if i is not None}


def lora_parts(linear):
    """(LoRA A [r, in], B [out, r], scale) of a PEFT LoRA layer's single active adapter; None for a plain
    nn.Linear or a disabled adapter; raises TypeError for what W + s B A does not describe (variants such as
    DoRA, several active adapters, an adapter merged into the weights, active dropout, a LoRA bias)."""
    if isinstance(linear, torch.nn.Linear) and not hasattr(linear, "base_layer"):
        return None
    if not hasattr(linear, "lora_A") or not isinstance(getattr(linear, "base_layer", None), torch.nn.Linear):
        raise TypeError(f"unsupported layer {type(linear).__name__}")
    if linear.disable_adapters:
        return None
    if linear.merged or getattr(linear, "fan_in_fan_out", False):
        raise TypeError("adapter merged into the weights, or fan_in_fan_out")
    adapters = [a for a in linear.active_adapters if a in linear.lora_A]
    if len(adapters) != 1:
        raise TypeError("only one active adapter is supported")
    adapter = adapters[0]
    dropout = linear.lora_dropout[adapter]
    active_dropout = dropout.training and not isinstance(dropout, torch.nn.Identity)
    if adapter in getattr(linear, "lora_variant", {}) or active_dropout:
        raise TypeError("LoRA variants (DoRA, ...) and active dropout are not supported")
    if getattr(linear, "lora_bias", {}).get(adapter, False):
        raise TypeError("LoRA bias is not supported")
    return linear.lora_A[adapter].weight, linear.lora_B[adapter].weight, linear.scaling[adapter]
