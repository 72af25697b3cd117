"""A lean forward pass for Llama-family decoders: the same arithmetic as transformers' with a fraction of the ops.

On this project's CPUs each torch op costs 5-15 us of Python and dispatch before it computes anything, and
transformers' Llama forward spends well over a hundred of them per layer on generality (mask factories, attention
interfaces, kwargs plumbing, output dataclasses, `rotate_half` by slicing and concatenation). For a small model
that overhead is most of a decode step: the tiny benchmark model took 16 ms per single-row step, of which its
arithmetic is about 2 ms. `LeanForward` walks the same modules with the same weights (packed or not) and the same
`GrowingCache`, in about 30 ops a layer: RMSNorm in few ops, one call for q/k/v and one for gate/up where
`packed_linear` packed the siblings together, rotary embedding of queries and keys at once as
`x*cos + roll(x)*sin'` with rotate_half's sign folded into `sin'`, one additive mask per forward (and its row
windows) shared by every layer, SDPA with grouped-query heads (`enable_gqa`, no repeated keys), and decode
attention in the row windows of `attention.row_windows`. On the CPU in float32, where an op costs tens of
microseconds inside a decode step (its code and data evicted by the GEMMs' weight streams), RMSNorm runs in five
ops instead of `F.rms_norm`'s ten, and the residual adds after `o_proj` and `down_proj` ride on their oneDNN GEMMs
as post-ops (`PackedLinear.add_to`): 4-6% of a decode step of 8-32 rows on the tiny benchmark model.

`LeanForward.build` accepts only models it reproduces exactly: transformers' own Llama, Mistral (without a
sliding window) and Qwen2 (without sliding-window layers) classes on a single device with no accelerate hooks,
and SiLU MLPs. Anything else returns None and runs transformers' forward. The logits equal transformers' up to
float rounding (tests compare both, and greedy outputs token for token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from serving.engine.attention import Windows, in_windows
from serving.engine.packed_linear import PackedLinear, PackedSlice

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
Linear = Callable[[Tensor], Tensor]
AddLinear = Callable[[Tensor, Tensor], Tensor]  # (residual, x) -> residual + linear(x)


@dataclass(frozen=True)
class LeanLayer:
    """One decoder layer's weights and projections (each projection is its module's bound `forward`); `qkv` and
    `gate_up` are the fused layers of `packed_linear` (one call each) when its siblings were packed together."""

    input_norm: Tensor
    q: Linear
    k: Linear
    v: Linear
    qkv: Linear | None
    o: AddLinear
    post_norm: Tensor
    gate: Linear
    up: Linear
    gate_up: Linear | None
    down: AddLinear

    @classmethod
    def of(cls, layer: Any) -> LeanLayer:
        """The projections of a transformers decoder layer."""
        attention, mlp = layer.self_attn, layer.mlp
        return cls(input_norm=layer.input_layernorm.weight, q=attention.q_proj.forward, k=attention.k_proj.forward,
                   v=attention.v_proj.forward, qkv=_fused(attention.q_proj, attention.k_proj, attention.v_proj),
                   o=_add_to(attention.o_proj), post_norm=layer.post_attention_layernorm.weight,
                   gate=mlp.gate_proj.forward, up=mlp.up_proj.forward, gate_up=_fused(mlp.gate_proj, mlp.up_proj),
                   down=_add_to(mlp.down_proj))


def _add_to(projection: Any) -> AddLinear:
    """`(residual, x) -> residual + projection(x)`, in one oneDNN call for a float32 `PackedLinear`."""
    if isinstance(projection, PackedLinear) and projection.packed_weight.dtype == torch.float32:
        return projection.add_to
    forward = projection.forward
    return lambda residual, x: residual + forward(x)


def _fused(*projections: Any) -> Linear | None:
    """The fused layer whose consecutive output columns these `PackedSlice`s are, in order; None otherwise."""
    if not all(isinstance(p, PackedSlice) and p.fused is projections[0].fused for p in projections):
        return None
    stops = [0] + [p.stop for p in projections]
    if any(p.start != stop for p, stop in zip(projections, stops)) or stops[-1] != projections[0].fused.out_features:
        return None
    return projections[0].fused.forward


def _supported(model: Any) -> bool:
    """Whether `model` is one the lean forward reproduces exactly (see the module docstring)."""
    config = getattr(model, "config", None)
    if type(model).__name__ not in SUPPORTED or config is None or getattr(config, "hidden_act", None) != "silu":
        return False
    if type(model).__module__.split(".")[:2] != ["transformers", "models"]:  # remote code may differ inside
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    if getattr(config, "pretraining_tp", 1) != 1:
        return False
    devices = {p.device for p in model.parameters()} | {b.device for b in model.buffers()}
    if len(devices) != 1 or any(hasattr(m, "_hf_hook") for m in model.modules()):
        return False
    layers = getattr(getattr(model, "model", None), "layers", None)
    return layers is not None and len(layers) == config.num_hidden_layers and all(
        hasattr(layer, "self_attn") and hasattr(layer, "mlp") and hasattr(layer.mlp, "gate_proj") for layer in layers)


class LeanForward:
    """`model(input_ids, attention_mask, position_ids, cache)` for a supported decoder, in few ops."""

    def __init__(self, model: Any) -> None:
        config = model.config
        decoder = model.model
        self.hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or self.hidden // self.heads
        self.eps = config.rms_norm_eps
        self.embed = decoder.embed_tokens.forward
        self.rotary = decoder.rotary_emb
        self.final_norm = decoder.norm.weight
        self.norm: Callable[[Tensor, Tensor], Tensor] = (
            _few_op_rms_norm(self.eps) if self.final_norm.device.type == "cpu"
            and self.final_norm.dtype == torch.float32 else lambda x, w: F.rms_norm(x, (self.hidden,), w, self.eps))
        self.lm_head = model.lm_head.forward
        self.layers = [LeanLayer.of(layer) for layer in decoder.layers]

    @classmethod
    def build(cls, model: Any) -> LeanForward | None:
        """The lean forward of `model`, or None when it is not a model this reproduces exactly."""
        return cls(model) if _supported(model) else None

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache: Any,
                 every_position: bool = False, row_windows: Windows | None = None) -> Tensor:
        """Feed `input_ids` [rows, new] after the cache's columns; `attention_mask` [rows, cached + new] is true on
        real tokens, `position_ids` [rows, new]. The logits [rows, new or 1, vocab] (every position, or the last)."""
        rows, new = input_ids.shape
        x = self.embed(input_ids)  # [rows, new, hidden]
        cos, sin = self.rotary(x, position_ids)  # [rows, new, head_dim] each, attention scaling included
        half = self.head_dim // 2
        cos = cos[:, :, None, :]
        sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)[:, :, None, :]  # rotate_half's sign
        attend = _Attention.of(attention_mask, new, x.dtype, row_windows)
        for index, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, self.norm(x, layer.input_norm), cos, sin, half)
            keys, values = cache.update(k, v, index)  # [rows, kv_heads, columns, head_dim]
            attended = attend(q, keys, values)  # [rows, heads, new, head_dim]
            x = layer.o(x, attended.transpose(1, 2).reshape(rows, new, self.heads * self.head_dim))
            h = self.norm(x, layer.post_norm)
            if layer.gate_up is not None:
                gate, up = layer.gate_up(h).chunk(2, dim=-1)
            else:
                gate, up = layer.gate(h), layer.up(h)
            x = layer.down(x, F.silu(gate) * up)
        if not every_position:
            x = x[:, -1:]
        return self.lm_head(self.norm(x, self.final_norm))

    def _qkv(self, layer: LeanLayer, h: Tensor, cos: Tensor, sin: Tensor, half: int
             ) -> tuple[Tensor, Tensor, Tensor]:
        """Queries [rows, heads, new, head_dim] and keys, values [rows, kv_heads, new, head_dim], rotated."""
        rows, new, _ = h.shape
        if layer.qkv is not None:  # one call; queries and keys rotated together
            qkv = layer.qkv(h).view(rows, new, self.heads + 2 * self.kv_heads, self.head_dim)
            qk = _rotate(qkv[:, :, :self.heads + self.kv_heads], cos, sin, half)
            q, k, v = qk[:, :, :self.heads], qk[:, :, self.heads:], qkv[:, :, self.heads + self.kv_heads:]
        else:
            q = _rotate(layer.q(h).view(rows, new, self.heads, self.head_dim), cos, sin, half)
            k = _rotate(layer.k(h).view(rows, new, self.kv_heads, self.head_dim), cos, sin, half)
            v = layer.v(h).view(rows, new, self.kv_heads, self.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, half: int) -> Tensor:
    """Rotary embedding of x [rows, new, heads, head_dim]: `x*cos + rotate_half(x)*sin`, where rotate_half is
    a roll by half the head (its sign is in `sin`)."""
    return torch.addcmul(x * cos, torch.roll(x, half, dims=-1), sin)


def _few_op_rms_norm(eps: float) -> Callable[[Tensor, Tensor], Tensor]:
    """RMSNorm of float32 `x` [..., hidden] times `weight` in five ops (`F.rms_norm` runs about ten on the CPU:
    `pow`, `mean`, casts, ...): `x * rsqrt(|x|^2 / hidden + eps) * weight`."""
    epsilon = torch.tensor(eps, dtype=torch.float32)

    def norm(x: Tensor, weight: Tensor) -> Tensor:
        length = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x * torch.rsqrt(torch.addcmul(epsilon, length, length, value=1 / x.shape[-1])) * weight

    return norm


@dataclass(frozen=True)
class _Attention:
    """How every layer of one forward attends: SDPA under the forward's additive mask (built once, not converted
    from booleans in every layer), for a decode step once per row window (`attention.in_windows`)."""

    mask: Tensor | None  # [rows, 1, new, columns]: 0 where a query may attend, -inf elsewhere
    causal: bool
    windows: Windows | None = None

    @classmethod
    def of(cls, attention_mask: Tensor, new: int, dtype: torch.dtype, row_windows: Windows | None) -> _Attention:
        """The attention of a forward of `new` columns after the cache; `attention_mask` [rows, cached + new] is
        true on real tokens. Every query also sees its own column, so a padding query never has an empty row."""
        columns = attention_mask.shape[1]
        if new == 1:
            visible = attention_mask[:, None, None, :]
        elif new == columns and bool(attention_mask.all()):
            return cls(None, True)
        else:
            positions = torch.arange(columns, device=attention_mask.device)
            own = positions[columns - new:, None]  # [new, 1]: each query's own column
            visible = (attention_mask[:, None, None, :] & (positions[None, :] <= own)) | (positions[None, :] == own)
        mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, float("-inf"))
        windowed = new == 1 and row_windows is not None and len(row_windows) > 1
        return cls(mask, False, row_windows if windowed else None)

    def __call__(self, q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """Attention of queries [rows, heads, new, head_dim] over the cache's keys and values."""
        if self.windows is None:
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=self.mask, is_causal=self.causal,
                                                  enable_gqa=True)
        return in_windows(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=True),
                          q, keys, values, self.mask, self.windows)
