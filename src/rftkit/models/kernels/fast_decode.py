"""A hand-written prefill and one-token decode step for plain Llama-family models (Qwen2, Llama), used by the sampler.

Decoding runs the whole model once per generated token on a [rows, 1] input, where the cost of a
step is the number of operations, not arithmetic: transformers' layers spend most of it in
projections computed one by one, mask plumbing, reshapes and cache bookkeeping. Both passes run
the shared `llama.decoder_layer` (q, k and v from one matmul, gate and up from another, rotary on
q and k together) on the merged weights, with RMSNorm as one `rms_norm` call: the prefill through
SDPA, writing each prompt's keys and values straight into its G rows of the sampler's cache; the
step through two matmuls against the cache, with the additive mask built once per step for all
layers. Every bias the architectures have (Qwen2's q/k/v; Llama's `attention_bias` q/k/v/o_proj
and `mlp_bias` gate/up/down) is applied.

Only used on a plain model (the merged copy): a PEFT-wrapped model, sliding-window or other
architectures fall back to the model's own forward (`FastDecoder.supports`).
tests/models/test_fast_decode.py checks the prefill's and the step's logits and cache against the
model's forward, and that sampling gives the same tokens and log-probs either way;
test_llama_variants.py does so for every bias and head layout the architectures allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from rftkit.models.kernels.llama import (Heads, LayerOps, decoder_layer, llama_family, rms_norm, rotary,
                                         rotary_angles, sdpa, stacked_bias)


@dataclass
class _LayerWeights:
    input_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [(H + 2 K) * D, hidden]: q, k and v projections stacked
    qkv_bias: torch.Tensor | None  # [(H + 2 K) * D]
    out: torch.Tensor  # [hidden, H * D]
    out_bias: torch.Tensor | None  # [hidden]
    post_norm: torch.Tensor  # [hidden]
    gate_up: torch.Tensor  # [2 * I, hidden]: gate and up projections stacked
    gate_up_bias: torch.Tensor | None  # [2 * I]
    down: torch.Tensor  # [hidden, I]
    down_bias: torch.Tensor | None  # [hidden]

    def ops(self, heads: Heads, eps: float) -> LayerOps:
        """`decoder_layer`'s operations on these plain weights."""
        return LayerOps(heads, input_norm=partial(rms_norm, weight=self.input_norm, eps=eps),
                        qkv=partial(F.linear, weight=self.qkv, bias=self.qkv_bias), rotary=rotary,
                        out=partial(F.linear, weight=self.out, bias=self.out_bias),
                        post_norm=partial(rms_norm, weight=self.post_norm, eps=eps),
                        gate_up=partial(F.linear, weight=self.gate_up, bias=self.gate_up_bias),
                        down=partial(F.linear, weight=self.down, bias=self.down_bias))


def _stack_as_views(weights: list[torch.nn.Parameter]) -> torch.Tensor:
    """One tensor holding `weights` row-stacked; each parameter's data becomes a view of its rows."""
    stacked = torch.cat([w.detach() for w in weights])
    start = 0
    for weight in weights:
        weight.data = stacked[start:start + weight.shape[0]]
        start += weight.shape[0]
    return stacked


class FastDecoder:
    """Decode steps for one plain model; `refresh()` after its weights change (the merged copy does)."""

    def __init__(self, model):
        self.model = model
        config = model.config.get_text_config(decoder=True)
        self.heads, self.eps = Heads.of(config), config.rms_norm_eps
        self.scale = self.heads.dim ** -0.5
        self.refresh()

    @staticmethod
    def supports(model) -> bool:
        """A plain (not PEFT-wrapped) Qwen2 or Llama model with full attention in every layer and SiLU MLPs."""
        if hasattr(model, "get_base_model") or not hasattr(model, "model") or not hasattr(model, "lm_head"):
            return False
        if not llama_family(model.config):
            return False
        layer = model.model.layers[0]
        return all(isinstance(m, torch.nn.Linear) for m in (layer.self_attn.q_proj, layer.self_attn.o_proj,
                                                              layer.mlp.gate_proj, layer.mlp.down_proj, model.lm_head))

    @torch.no_grad()
    def refresh(self) -> None:
        """Follow the model's current weights.

        The stacked q/k/v and gate/up weights are one tensor each, and the model's projections are
        made views of them, so weights updated in place (the merged copy's refresh) need nothing
        here; only a projection whose weight was replaced by another tensor makes it re-stack.
        """
        body = self.model.model
        if getattr(self, "layers", None) and all(self._still_views(layer, weights)
                                                 for layer, weights in zip(body.layers, self.layers)):
            return
        self.layers = []
        for layer in body.layers:
            attention, mlp = layer.self_attn, layer.mlp
            projections = (attention.q_proj, attention.k_proj, attention.v_proj)
            self.layers.append(_LayerWeights(
                input_norm=layer.input_layernorm.weight, post_norm=layer.post_attention_layernorm.weight,
                qkv=_stack_as_views([p.weight for p in projections]), qkv_bias=stacked_bias(*projections),
                out=attention.o_proj.weight, out_bias=attention.o_proj.bias,
                gate_up=_stack_as_views([mlp.gate_proj.weight, mlp.up_proj.weight]),
                gate_up_bias=stacked_bias(mlp.gate_proj, mlp.up_proj),
                down=mlp.down_proj.weight, down_bias=mlp.down_proj.bias))
        self.ops = [weights.ops(self.heads, self.eps) for weights in self.layers]
        self.embed, self.final_norm = body.embed_tokens.weight, body.norm.weight
        self.lm_head, self.lm_head_bias = self.model.lm_head.weight, self.model.lm_head.bias

    @staticmethod
    def _still_views(layer, weights: _LayerWeights) -> bool:
        attention, mlp = layer.self_attn, layer.mlp

        def shares(stack: torch.Tensor, linears) -> bool:
            storage = stack.untyped_storage().data_ptr()
            return all(linear.weight.untyped_storage().data_ptr() == storage for linear in linears)

        return (shares(weights.qkv, (attention.q_proj, attention.k_proj, attention.v_proj))
                and shares(weights.gate_up, (mlp.gate_proj, mlp.up_proj)))

    @torch.inference_mode()
    def prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, positions: torch.Tensor, cache_layers,
                copies: int) -> torch.Tensor:
        """Logits [B, V] of the token after each left-padded prompt ([B, P]); the prompts' keys and values
        go into the sampler's preallocated `cache_layers`, each row `copies` times (`PreallocatedLayer.fill`).

        The last layer computes its query, attention output and MLP for the last column only: no
        other column's output is read (the cache holds keys and values, which come before them).
        """
        width = prompt_ids.shape[1]
        hidden = F.embedding(prompt_ids, self.embed)  # [B, P, hidden]
        cos, sin = rotary_angles(self.model, hidden, positions)  # [B, 1, P, D]
        # causal over the real tokens; a padding column sees itself only, so that no row of the mask is
        # empty (no real token ever attends to a padding column's key)
        causal = torch.ones((width, width), dtype=torch.bool, device=prompt_ids.device).tril()
        allowed = ((causal & prompt_mask.bool()[:, None, :])
                   | torch.eye(width, dtype=torch.bool, device=prompt_ids.device))[:, None]
        last = len(self.ops) - 1
        for index, (ops, cache) in enumerate(zip(self.ops, cache_layers)):
            window = width - 1 if index == last else 0
            attend = partial(_attend_and_fill, cache=cache, copies=copies,
                             mask=allowed[:, :, window:] if window else allowed, scale=self.scale)
            hidden = decoder_layer(hidden, ops, cos, sin, attend, window)
        return self._logits(hidden[:, -1])

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache_layers,
             attention: torch.Tensor) -> torch.Tensor:
        """Logits [R, V] of the next token after `tokens` [R] at `positions` [R].

        `cache_layers` are the sampler's preallocated cache layers (this step appends one column to
        each); `attention` [R, L] is True for the columns each row may attend to, this token's included.
        """
        hidden = F.embedding(tokens[:, None], self.embed)  # [R, 1, hidden]
        cos, sin = rotary_angles(self.model, hidden, positions[:, None])  # [R, 1, 1, D]
        mask = torch.zeros(attention.shape, dtype=hidden.dtype, device=hidden.device)
        mask.masked_fill_(~attention, torch.finfo(hidden.dtype).min)
        mask = mask[:, None, None, :]  # [R, 1, 1, L], broadcast over kv heads and the heads sharing them
        for ops, cache in zip(self.ops, cache_layers):
            hidden = decoder_layer(hidden, ops, cos, sin, partial(_attend_cached, cache=cache, mask=mask,
                                                                  scale=self.scale))
        return self._logits(hidden[:, -1])

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[R, V] from the last layer's output [R, hidden]: the final norm, then the LM head."""
        return F.linear(rms_norm(hidden, self.final_norm, self.eps), self.lm_head, self.lm_head_bias)


def _attend_and_fill(query, key, value, cache, copies: int, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """The prefill's attention: SDPA over the prompt, its keys and values written into the cache first."""
    cache.fill(key, value, copies)
    return sdpa(query, key, value, mask, scale)


def _attend_cached(query, key, value, cache, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """One new column's attention over the cache: query [R, H, 1, D], key and value [R, K, 1, D] -> [R, 1, H D].

    Two batched matmuls and a float32 softmax, as transformers' eager attention computes them; the
    H / K query heads that share a KV head are one matrix against its cached keys, so the cache is
    never repeated per head (SDPA on one query row costs more than these few ops)."""
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    keys, values = cache.update(key, value)  # [R, K, L, D]
    query = query.reshape(rows, kv_heads, heads // kv_heads, dim)  # [R, K, H/K, D]
    scores = torch.matmul(query, keys.transpose(-1, -2)).mul_(scale).add_(mask)  # [R, K, H/K, L]
    context = torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype), values)
    return context.view(rows, 1, heads * dim)
