"""A lean forward pass for Llama-family decoders: the same arithmetic as transformers' with a fraction of the ops.

On this project's CPUs each torch op costs 5-15 us of Python and dispatch before it computes anything, and
transformers' Llama forward spends well over a hundred of them per layer on generality (mask factories, attention
interfaces, kwargs plumbing, output dataclasses, `rotate_half` by slicing and concatenation). For a small model that
overhead is most of a decode step: the tiny benchmark model took 16 ms per single-row step, of which its arithmetic
is about 2 ms. `LeanForward` walks the same modules with the same weights (packed or not) over the step's tokens
flattened to `[tokens, hidden]` (decode rows and prefill chunks together, no padding) and the paged `PagedKVCache`,
in about 30 ops a layer: RMSNorm in few ops, one call for q/k/v and one for gate/up where `packed_linear` packed the
siblings together, rotary embedding of queries and keys at once as `x*cos + roll(x)*sin'` with rotate_half's sign
folded into `sin'`, and the cache's `PagedAttention` over the groups and masks that `batch.build` made once for
every layer (SDPA with grouped-query heads). On the CPU in float32, where an op costs tens of microseconds inside a
decode step (its code and data evicted by the GEMMs' weight streams), RMSNorm, the rotary embedding and the SiLU
product run as one op each of the CPU kernels (`use_kernels`: RMSNorm 16 against 28 us a call inside a 16-row
decode step of the tiny benchmark model), or where they are not built in five, three and two ops (`F.rms_norm` takes
ten), and the residual adds after `o_proj` and `down_proj` ride on their oneDNN GEMMs as post-ops
(`PackedLinear.add_to`): 4-6% of a decode step of 8-32 rows on the tiny benchmark model.

`LeanForward.build` accepts only models it reproduces exactly: transformers' own Llama, Mistral (without a
sliding window) and Qwen2 (without sliding-window layers) classes on a single device with no accelerate hooks,
and SiLU MLPs. Anything else returns None and runs transformers' forward over the same cache (`model_runner`).
The logits equal transformers' up to float rounding (tests compare both, and greedy outputs token for token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from serving.engine.batch import ForwardBatch
from serving.engine.kv_cache import PagedKVCache
from serving.engine.lora import LoraStep
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
    """The forward of a supported decoder over the paged KV cache, in few ops."""

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
        self._cpu_float32 = self.final_norm.device.type == "cpu" and self.final_norm.dtype == torch.float32
        self.norm: Callable[[Tensor, Tensor], Tensor] = (
            _few_op_rms_norm(self.eps) if self._cpu_float32
            else lambda x, w: F.rms_norm(x, (self.hidden,), w, self.eps))
        self.lm_head = model.lm_head.forward
        self.layers = [LeanLayer.of(layer) for layer in decoder.layers]
        self.rotate: Callable[[Tensor, Tensor, Tensor], Tensor] = _rotate
        self.activate: Callable[[Tensor, Tensor], Tensor] = _silu_mul
        self.kernels = False  # whether `norm`, `rotate` and `activate` are the CPU kernels' ops (`use_kernels`)

    def use_kernels(self) -> None:
        """RMSNorm, the rotary embedding and the MLP's SiLU product as the CPU kernels' ops
        (`torch.ops.serving.rms_norm`, `rotary_` and `silu_mul`, which `cpu_kernels.load` loaded) where the model
        is float32 on the CPU: one op each instead of five, three and two (RMSNorm alone, 16 rows of the tiny
        benchmark model: 2.9 against 8.5 us)."""
        if self._cpu_float32:
            eps = self.eps
            self.norm = lambda x, weight: torch.ops.serving.rms_norm(x.contiguous(), weight, eps)
            self.rotate = _rotate_in_place
            self.activate = torch.ops.serving.silu_mul
            self.kernels = True

    @classmethod
    def build(cls, model: Any) -> LeanForward | None:
        """The lean forward of `model`, or None when it is not a model this reproduces exactly."""
        return cls(model) if _supported(model) else None

    def __call__(self, batch: ForwardBatch, cache: PagedKVCache) -> Tensor:
        """Feed the step's tokens (flattened, each at its position) over the paged cache, writing their keys and
        values to their slots; the logits [logit rows, vocab] of `batch.logits_index`."""
        tokens = batch.tokens
        x = self.embed(batch.input_ids)  # [tokens, hidden]
        cos, sin = self.rotary(x[None], batch.positions[None])  # [1, tokens, head_dim] each, scaling included
        half = self.head_dim // 2
        cos = cos[0]  # [tokens, head_dim]
        sin = torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)  # rotate_half's sign folded in
        lora = batch.lora
        for index, layer in enumerate(self.layers):
            q, k, v = self._qkv(index, layer, self.norm(x, layer.input_norm), cos, sin, lora)
            cache.write(index, batch, k, v)
            attended = cache.attention(q, cache.key_cache[index], cache.value_cache[index], batch)
            attended = attended.reshape(tokens, self.heads * self.head_dim)
            x = layer.o(x, attended)
            if lora is not None:
                lora.add(index, "o_proj", attended, x)
            h = self.norm(x, layer.post_norm)
            if layer.gate_up is not None:
                gate_up = layer.gate_up(h)
                if lora is not None:
                    lora.add(index, "gate_up_proj", h, gate_up)
                gate, up = gate_up.chunk(2, dim=-1)
            else:
                gate, up = layer.gate(h), layer.up(h)
                if lora is not None:
                    lora.add(index, "gate_proj", h, gate)
                    lora.add(index, "up_proj", h, up)
            act = self.activate(gate, up)
            x = layer.down(x, act)
            if lora is not None:
                lora.add(index, "down_proj", act, x)
        if batch.logits_index.shape[0] != tokens:
            x = x.index_select(0, batch.logits_index)
        return self.lm_head(self.norm(x, self.final_norm))

    def _qkv(self, index: int, layer: LeanLayer, h: Tensor, cos: Tensor, sin: Tensor,
             lora: LoraStep | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries [tokens, heads, head_dim] and keys, values [tokens, kv_heads, head_dim], rotated; with the
        step's LoRA deltas added before the rotation."""
        tokens = h.shape[0]
        if layer.qkv is not None:  # one call; queries and keys rotated together
            fused = layer.qkv(h)
            if lora is not None:
                lora.add(index, "qkv_proj", h, fused)
            qkv = fused.view(tokens, self.heads + 2 * self.kv_heads, self.head_dim)
            qk = self.rotate(qkv[:, :self.heads + self.kv_heads], cos, sin)
            return qk[:, :self.heads], qk[:, self.heads:], qkv[:, self.heads + self.kv_heads:]
        q, k, v = layer.q(h), layer.k(h), layer.v(h)
        if lora is not None:
            for name, y in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                lora.add(index, name, h, y)
        q = self.rotate(q.view(tokens, self.heads, self.head_dim), cos, sin)
        k = self.rotate(k.view(tokens, self.kv_heads, self.head_dim), cos, sin)
        return q, k, v.view(tokens, self.kv_heads, self.head_dim)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding of x [tokens, heads, head_dim] by cos and sin [tokens, head_dim]: `x*cos +
    rotate_half(x)*sin`, where rotate_half is a roll by half the head (its sign is in `sin`)."""
    return torch.addcmul(x * cos[:, None], torch.roll(x, x.shape[-1] // 2, dims=-1), sin[:, None])


def _rotate_in_place(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """`_rotate` in one op of the CPU kernels, in place (x's heads one after another, each contiguous); x."""
    torch.ops.serving.rotary_(x, cos, sin)
    return x


def _silu_mul(gate: Tensor, up: Tensor) -> Tensor:
    """The MLP's silu(gate) * up in torch ops, the product in place: 394 against 683 us for 1,700 tokens of the tiny
    model."""
    return F.silu(gate).mul_(up)


def _few_op_rms_norm(eps: float) -> Callable[[Tensor, Tensor], Tensor]:
    """RMSNorm of float32 `x` [..., hidden] times `weight` in five ops (`F.rms_norm` runs about ten on the CPU:
    `pow`, `mean`, casts, ...): `x * rsqrt(|x|^2 / hidden + eps) * weight`."""
    epsilon = torch.tensor(eps, dtype=torch.float32)

    def norm(x: Tensor, weight: Tensor) -> Tensor:
        length = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x * torch.rsqrt(torch.addcmul(epsilon, length, length, value=1 / x.shape[-1])) * weight

    return norm
