"""The Llama-family decoder layer (Qwen2, Llama) that every fused path runs, and the pieces they share.

`decoder_layer` mirrors transformers' `LlamaDecoderLayer.forward` and `Qwen2DecoderLayer.forward`
(models/llama/modeling_llama.py, models/qwen2/modeling_qwen2.py):

    h   = x + o_proj(attention(rope(q_proj(n1(x))), rope(k_proj(n1(x))), v_proj(n1(x))))
    out = h + down_proj(silu(gate_proj(n2(h))) * up_proj(n2(h)))

with every bias those files can create (Qwen2's q/k/v, Llama's `attention_bias` q/k/v/o_proj and
`mlp_bias` gate/up/down). Three paths run it, each with its own `LayerOps` and `attend`:
the update's training forward (fused_forward.py: LoRA projections with their own backward, SDPA
over a packed block mask), the sampler's prefill and its one-token decode step (fast_decode.py:
merged weights; SDPA that also fills the KV cache, and a matmul attention over the cache). The
layer fixes the order of operations the three share (q/k/v and gate/up as one matmul each, rotary
on q and k at once), so that a path's output depends only on its callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("qwen2", "llama")

Op = Callable[[torch.Tensor], torch.Tensor]


def llama_family(config) -> bool:
    """A Qwen2 or Llama config with full attention in every layer and SiLU MLPs: what `decoder_layer`
    computes (biases included, wherever the config puts them)."""
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES or config.hidden_act != "silu":
        return False
    if getattr(config, "use_sliding_window", False):
        return False
    return all(kind == "full_attention" for kind in getattr(config, "layer_types", None) or ())


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Qwen2/Llama RMSNorm in one op for float32; in lower precision its exact recipe
    (normalise in float32, cast back, then scale by the weight in the model's dtype)."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return weight * F.rms_norm(x.float(), (x.shape[-1],), None, eps).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """transformers' `rotate_half`: [x1, x2] -> [-x2, x1] on the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' `apply_rotary_pos_emb` on one tensor: x cos + rotate_half(x) sin."""
    return x * cos + rotate_half(x) * sin


def rotary_angles(model, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [B, 1, S, D] (in hidden's dtype) at `positions` [B, S], from the model's own `rotary_emb`,
    so every RoPE variant transformers implements gives the same angles."""
    cos, sin = model.model.rotary_emb(hidden, positions)  # [B, S, D]
    return cos[:, None].to(hidden.dtype), sin[:, None].to(hidden.dtype)


def stacked_bias(*linears) -> torch.Tensor | None:
    """The biases of `linears` row-stacked (zeros for those without one); None when none has a bias."""
    if all(linear.bias is None for linear in linears):
        return None
    return torch.cat([linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)
                      for linear in linears])


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
         scale: float) -> torch.Tensor:
    """Attention through SDPA, as `decoder_layer`'s `attend`: query [B, H, S', D], key and value [B, K, S, D]
    -> [B, S', H D]. Grouped KV heads go in as they are (enable_gqa): no repeated copies of k and v to
    build in the forward and sum back in the backward."""
    rows, heads, _, dim = query.shape
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale,
                                             enable_gqa=key.shape[1] != heads)
    return context.transpose(1, 2).reshape(rows, -1, heads * dim)


@dataclass(frozen=True)
class Heads:
    """The attention's head layout, from the config as transformers' attention reads it."""

    queries: int  # H, attention heads
    kv: int  # K, key/value heads (H / K queries share each)
    dim: int  # D, head dimension

    @staticmethod
    def of(config) -> "Heads":
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return Heads(config.num_attention_heads, config.num_key_value_heads, dim)


@dataclass(frozen=True)
class LayerOps:
    """One layer's operations as one path computes them; projections include their biases."""

    heads: Heads
    input_norm: Op  # [.., hidden] -> [.., hidden]
    qkv: Op  # [.., hidden] -> [.., (H + 2K) D]: q, k and v projections stacked
    rotary: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, cos, sin) -> rotated x
    out: Op  # [.., H D] -> [.., hidden]: o_proj
    post_norm: Op  # [.., hidden] -> [.., hidden]
    gate_up: Op  # [.., hidden] -> [.., 2 I]: gate and up projections stacked
    down: Op  # [.., I] -> [.., hidden]


def decoder_layer(hidden: torch.Tensor, ops: LayerOps, cos: torch.Tensor, sin: torch.Tensor,
                  attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                  queries_from: int = 0) -> torch.Tensor:
    """One decoder layer on hidden [B, S, hidden] -> [B, S - queries_from, hidden].

    cos, sin: [B, 1, S, D]. `attend(query [B, H, S', D], key [B, K, S, D], value [B, K, S, D])` returns
    the attention output with its heads side by side, [B, S', H D] (o_proj's input; each path lays it
    out in as few ops as its attention allows), S' = S - queries_from: keys and values come from every
    column, queries, the attention output and the MLP only from `queries_from` on (a last layer whose
    earlier columns feed nothing but their own keys and values).
    """
    rows, width, _ = hidden.shape
    heads, kv_heads, dim = ops.heads.queries, ops.heads.kv, ops.heads.dim
    qkv = ops.qkv(ops.input_norm(hidden)).view(rows, width, heads + 2 * kv_heads, dim).transpose(1, 2)
    qk = ops.rotary(qkv[:, :heads + kv_heads], cos, sin)  # [B, H + K, S, D]: q and k at once
    query, key, value = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads:]
    if queries_from:
        query, hidden = query[:, :, queries_from:], hidden[:, queries_from:]
    hidden = hidden + ops.out(attend(query, key, value))
    gate, up = ops.gate_up(ops.post_norm(hidden)).chunk(2, dim=-1)
    return hidden + ops.down(F.silu(gate) * up)
