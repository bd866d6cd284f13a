"""A plain copy of the policy with its LoRA adapter merged in, for sampling.

Decoding runs the model once per token; through PEFT every adapted linear layer costs four more
small ops (dropout, A, B, scale-and-add), which on a small model is about 40% of the decode time.
Sampling from a copy whose weights are W + scale * B @ A removes them. The copy is refreshed
from the live adapter before every rollout (one small matmul per adapted layer), and the
trainable policy is never touched: its base weights stay bit-identical, unlike PEFT's
merge_adapter/unmerge_adapter round trip. The cost is one more copy of the adapted weights,
which is why `rollout.merge_lora: auto` turns it on only for models up to MERGE_AUTO_MAX_PARAMS.
"""

from __future__ import annotations

import copy

import torch

from rftkit.models.loading import lora_parts
from rftkit.models.kernels.fast_decode import FastDecoder

MERGE_AUTO_MAX_PARAMS = 1_000_000_000


def wants_merged_copy(setting: str, policy) -> bool:
    """`rollout.merge_lora` ('auto', 'on', 'off') for this policy; only a PEFT model has anything to merge."""
    if setting == "off" or not hasattr(policy, "get_base_model"):
        return False
    return setting == "on" or sum(p.numel() for p in policy.parameters()) <= MERGE_AUTO_MAX_PARAMS


def _adapted_layers(policy) -> dict[str, torch.nn.Module]:
    """LoRA-wrapped layers by their name inside the base model (the name they have in the merged copy)."""
    base = policy.get_base_model()
    return {name: module for name, module in base.named_modules()
            if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")}


class MergedCopy:
    """Holds the merged model; `refresh(policy)` brings it up to date and returns it.

    With `fast_decode`, `decoder` is a FastDecoder of the copy (None where the architecture has none).
    """

    def __init__(self, policy, fast_decode: bool = False):
        self.model = copy.deepcopy(policy).merge_and_unload()
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.targets = {name: self.model.get_submodule(name) for name in _adapted_layers(policy)}
        self.decoder = FastDecoder(self.model) if fast_decode and FastDecoder.supports(self.model) else None

    @torch.no_grad()
    def refresh(self, policy):
        for name, layer in _adapted_layers(policy).items():
            target = self.targets[name].weight
            try:
                parts = lora_parts(layer)
            except TypeError:  # a variant (DoRA, several adapters, ...): PEFT's own delta weights
                parts = False
            if parts:  # plain LoRA: W + s B A written in place by one addmm
                lora_a, lora_b, scale = parts
                torch.addmm(layer.base_layer.weight, lora_b, lora_a, alpha=scale, out=target)
                continue
            weight = layer.base_layer.weight
            if parts is False:
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A or adapter in getattr(layer, "lora_embedding_A", {}):
                        weight = weight + layer.get_delta_weight(adapter)
            target.copy_(weight)
        if self.decoder is not None:
            self.decoder.refresh()
        return self.model
