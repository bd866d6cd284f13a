"""A hand-written one-token decode step for plain Llama-family models (Qwen2, Llama), used by the sampler.

Decoding runs the whole model once per generated token on a [rows, 1] input, where the cost of a
step is the number of operations, not arithmetic: transformers' layers spend most of it in
projections computed one by one, mask plumbing, reshapes and cache bookkeeping. This step does the
same arithmetic in fewer operations: q, k and v come from one fused matmul, gate and up from
another, RMSNorm is one `rms_norm` call, rotary embedding is applied to q and k together, and the
additive mask is built once per step for all layers. Rotary cos/sin come from the model's own
`rotary_emb` module, so every RoPE variant transformers implements gives the same angles.

The prefill (`prefill`) is written the same way, and writes each prompt's keys and values straight
into its G rows of the sampler's cache. Only used on a plain model (the merged copy): a PEFT-wrapped
model, sliding-window or other architectures fall back to the model's own forward
(`FastDecoder.supports`). tests/models/test_fast_decode.py checks the prefill's and the step's
logits and cache against the model's forward, and that sampling gives the same tokens and log-probs
either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("qwen2", "llama")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Qwen2/Llama RMSNorm in one op for float32; in lower precision its exact recipe
    (normalise in float32, cast back, then scale by the weight in the model's dtype)."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return weight * F.rms_norm(x.float(), (x.shape[-1],), None, eps).to(x.dtype)


def llama_family(config) -> bool:
    """A Qwen2 or Llama config with full attention in every layer and SiLU MLPs without bias: what the
    hand-written decode step (here) and training forward (rftkit.models.kernels.fused_forward) compute."""
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES or config.hidden_act != "silu":
        return False
    if getattr(config, "use_sliding_window", False) or getattr(config, "mlp_bias", False):
        return False
    return all(kind == "full_attention" for kind in getattr(config, "layer_types", None) or ())


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class _LayerWeights:
    input_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [(H + 2 K) * D, hidden]: q, k and v projections stacked
    qkv_bias: torch.Tensor | None  # [(H + 2 K) * D]
    out: torch.Tensor  # [hidden, H * D]
    post_norm: torch.Tensor  # [hidden]
    gate_up: torch.Tensor  # [2 * I, hidden]: gate and up projections stacked
    down: torch.Tensor  # [hidden, I]


def _stack_as_views(weights: list[torch.nn.Parameter]) -> torch.Tensor:
    """One tensor holding `weights` row-stacked; each parameter's data becomes a view of its rows."""
    stacked = torch.cat([w.detach() for w in weights])
    start = 0
    for weight in weights:
        weight.data = stacked[start:start + weight.shape[0]]
        start += weight.shape[0]
    return stacked


def stacked_bias(*linears) -> torch.Tensor | None:
    """The biases of `linears` row-stacked (zeros for those without one); None when none has a bias."""
    if all(linear.bias is None for linear in linears):
        return None
    return torch.cat([linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)
                      for linear in linears])


class FastDecoder:
    """Decode steps for one plain model; `refresh()` after its weights change (the merged copy does)."""

    def __init__(self, model):
        self.model = model
        config = model.config.get_text_config(decoder=True)
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.eps = config.rms_norm_eps
        self.intermediate = config.intermediate_size
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
                out=attention.o_proj.weight, gate_up=_stack_as_views([mlp.gate_proj.weight, mlp.up_proj.weight]),
                down=mlp.down_proj.weight))
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
        rows, width = prompt_ids.shape
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        hidden = F.embedding(prompt_ids, self.embed)  # [B, P, hidden]
        cos, sin = self.model.model.rotary_emb(hidden, positions)  # [B, P, D]
        cos, sin = cos[:, None].to(hidden.dtype), sin[:, None].to(hidden.dtype)
        # causal over the real tokens; a padding column sees itself only, so that no row of the mask is
        # empty (no real token ever attends to a padding column's key)
        causal = torch.ones((width, width), dtype=torch.bool, device=prompt_ids.device).tril()
        allowed = ((causal & prompt_mask.bool()[:, None, :])
                   | torch.eye(width, dtype=torch.bool, device=prompt_ids.device))[:, None]
        last = len(self.layers) - 1
        for index, (weights, cache) in enumerate(zip(self.layers, cache_layers)):
            x = rms_norm(hidden, weights.input_norm, self.eps)
            qkv = F.linear(x, weights.qkv, weights.qkv_bias).view(rows, width, heads + 2 * kv_heads, dim)
            qkv = qkv.transpose(1, 2)  # [B, H + 2K, P, D]
            qk = qkv[:, :heads + kv_heads] * cos + rotate_half(qkv[:, :heads + kv_heads]) * sin
            query, key, value = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads:]
            cache.fill(key, value, copies)
            if index == last:
                query, allowed, hidden = query[:, :, -1:], allowed[:, :, -1:], hidden[:, -1:]
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, scale=dim ** -0.5,
                                                     enable_gqa=kv_heads != heads)
            hidden = hidden + F.linear(context.transpose(1, 2).reshape(rows, -1, heads * dim), weights.out)
            x = rms_norm(hidden, weights.post_norm, self.eps)
            gate, up = F.linear(x, weights.gate_up).split(self.intermediate, dim=-1)
            hidden = hidden + F.linear(F.silu(gate) * up, weights.down)
        hidden = rms_norm(hidden[:, -1], self.final_norm, self.eps)
        return F.linear(hidden, self.lm_head, self.lm_head_bias)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache_layers, attention: torch.Tensor) -> torch.Tensor:
        """Logits [R, V] of the next token after `tokens` [R] at `positions` [R].

        `cache_layers` are the sampler's preallocated cache layers (this step appends one column to
        each); `attention` [R, L] is True for the columns each row may attend to, this token's included.
        """
        rows, heads, kv_heads, dim = tokens.shape[0], self.heads, self.kv_heads, self.head_dim
        hidden = F.embedding(tokens, self.embed)  # [R, hidden]
        cos, sin = self.model.model.rotary_emb(hidden[:, None], positions[:, None])  # [R, 1, D]
        cos, sin = cos.to(hidden.dtype), sin.to(hidden.dtype)
        mask = torch.zeros(attention.shape, dtype=hidden.dtype, device=hidden.device).masked_fill_(~attention, torch.finfo(hidden.dtype).min)
        mask = mask[:, None, None, :]  # [R, 1, 1, L], broadcast over kv heads and the heads sharing them
        scale = dim ** -0.5
        for weights, cache in zip(self.layers, cache_layers):
            x = rms_norm(hidden, weights.input_norm, self.eps)
            qkv = F.linear(x, weights.qkv, weights.qkv_bias)  # [R, (H + 2K) * D]
            qk = qkv[:, :(heads + kv_heads) * dim].view(rows, heads + kv_heads, dim)
            qk = qk * cos + rotate_half(qk) * sin  # rotary on q and k at once
            query = qk[:, :heads].reshape(rows, kv_heads, heads // kv_heads, dim)  # [R, K, H/K, D]
            key = qk[:, heads:, None, :]  # [R, K, 1, D]
            value = qkv[:, (heads + kv_heads) * dim:].view(rows, kv_heads, 1, dim)
            keys, values = cache.update(key, value)  # [R, K, L, D]
            scores = torch.matmul(query, keys.transpose(-1, -2)).mul_(scale).add_(mask)  # [R, K, H/K, L]
            context = torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype), values)
            hidden = hidden + F.linear(context.reshape(rows, heads * dim), weights.out)
            x = rms_norm(hidden, weights.post_norm, self.eps)
            gate, up = F.linear(x, weights.gate_up).split(self.intermediate, dim=-1)
            hidden = hidden + F.linear(F.silu(gate) * up, weights.down)
        hidden = rms_norm(hidden, self.final_norm, self.eps)
        return F.linear(hidden, self.lm_head, self.lm_head_bias)
