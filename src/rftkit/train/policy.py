"""The policy a run trains: a LoRA adapter on the base (default), or every weight (`lora: null`); PPO's critic adapter.

LoRA: the base weights are frozen and loaded once; the reference of a KL or DPO term is the same
model with the adapter disabled, so it costs no memory.

Full-weight (`lora: null`): every parameter trains, and checkpoints are whole models in
transformers' format (`save_pretrained`; `AutoModelForCausalLM.from_pretrained(step_dir)` loads
one). The policy has no adapter to disable, so an algorithm whose targets read the reference
(`AlgorithmSpec.uses_reference`: grpo-family `grpo.beta > 0`, ppo `kl_coef > 0`, online_dpo always)
keeps a frozen deep copy of the base. Memory in float32, in units of the model's weights: policy 1,
gradients 1, AdamW's two moments 2, the reference 1 when kept: 4-5x, against about 1x (plus the
small adapter and its optimizer state) for LoRA. The fused kernels and the sampler's merged copy are
LoRA paths; full-weight runs use the model's own forward and sample from the policy itself.

`ppo.value_model: separate`: the critic is a second LoRA adapter (VALUE_ADAPTER, the `lora:`
settings) on the same base weights, beside the policy's, with the value head on its last hidden
state (Tülu 3 trains a separate value model; here it shares the frozen base, not the adapter).
PeftModel.save_pretrained writes it to `step-N/value/`, from where resume loads it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from rftkit.algorithms.registry import ALGORITHMS
from rftkit.config import RFTConfig
from rftkit.models.loading import attach_lora, load_base_model, lora_parameters
from rftkit.rollout.sampler import unwrap_peft

VALUE_ADAPTER = "value"  # the separate critic's adapter name (the policy's is PEFT's "default")


@dataclass
class TrainablePolicy:
    model: torch.nn.Module  # a PeftModel (LoRA) or the transformers model itself (full-weight)
    params: list[torch.nn.Parameter]  # the policy's trained parameters: the adapter's, or every weight
    reference: torch.nn.Module | None = None  # full-weight runs that read the reference: the frozen base
    critic_params: list[torch.nn.Parameter] | None = None  # the separate critic adapter's (None: none)
    value_adapter: str | None = None  # its adapter name

    @property
    def hidden_size(self) -> int:
        return unwrap_peft(self.model).config.hidden_size


def trainable_policy(config: RFTConfig, device: torch.device, checkpoint: Path | None) -> TrainablePolicy:
    """The policy on `device`, from `checkpoint` when resuming (adapter, or whole weights when lora: null)."""
    base = load_base_model(config.model, device)
    if config.lora is None:
        return _full_weight(config, base, device, checkpoint)
    policy = attach_lora(base, config.lora, adapter_dir=checkpoint)
    trained = TrainablePolicy(policy, lora_parameters(policy))
    if ALGORITHMS[config.algorithm].value_head and config.ppo.value_model == "separate":
        trained.critic_params, trained.value_adapter = _critic_adapter(config, policy, checkpoint), VALUE_ADAPTER
    return trained


def _full_weight(config: RFTConfig, base, device: torch.device, checkpoint: Path | None) -> TrainablePolicy:
    reference = base if ALGORITHMS[config.algorithm].uses_reference(config) else None
    if checkpoint is not None:  # the saved weights; `base` stays the untouched reference
        policy = load_base_model(config.model.model_copy(update={"name": str(checkpoint)}), device)
    else:
        policy = copy.deepcopy(base) if reference is not None else base
    for param in policy.parameters():
        param.requires_grad_(True)
    return TrainablePolicy(policy, list(policy.parameters()), reference)


def _critic_adapter(config: RFTConfig, policy, checkpoint: Path | None) -> list[torch.nn.Parameter]:
    """Add (or, resuming, load from step-N/value/) the critic's adapter; the policy's stays the active one."""
    from peft import LoraConfig as PeftLoraConfig

    saved = checkpoint / VALUE_ADAPTER if checkpoint is not None else None
    if saved is not None and saved.is_dir():
        policy.load_adapter(str(saved), adapter_name=VALUE_ADAPTER, is_trainable=True)
    else:
        lora = config.lora
        policy.add_adapter(VALUE_ADAPTER, PeftLoraConfig(r=lora.r, lora_alpha=lora.lora_alpha,
                                                         lora_dropout=lora.lora_dropout,
                                                         target_modules=lora.target_modules, task_type="CAUSAL_LM",
                                                         bias="none"))
    # PEFT leaves an adapter that is not the active one frozen; the critic's trains alongside the policy's.
    params = [p for name, p in policy.named_parameters() if f".{VALUE_ADAPTER}." in name]
    for param in params:
        param.requires_grad_(True)
    return params
