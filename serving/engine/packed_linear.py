"""Linear layers whose weights are prepacked for oneDNN, for CPU inference.

torch's CPU `nn.Linear` calls MKL's sgemm on the plain row-major weight. On this project's machines (AMD EPYC,
AVX-512) that reached 45-75 GFLOP/s for a decode step's shapes (16-64 rows times 768-8192 columns), where oneDNN
with the weight reordered once into its blocked layout reached 95-110 (`docs/performance.md`). vLLM's CPU build
runs its linear layers the same way. `pack_linears` swaps every plain `nn.Linear` of a CPU model for a
`PackedLinear` holding only the packed copy, so a model's own forward, whatever its architecture, runs on it.
Sibling projections that read the same input (`q_proj`/`k_proj`/`v_proj`, `gate_proj`/`up_proj`) are packed
together as one wider layer (`qkv_proj`, `gate_up_proj` on their parent), since one GEMM call costs 50-100 us
before it computes on these CPUs and a wider one runs closer to peak: a decode step of 16 rows on the tiny
benchmark model spent 1.5x less in them. Each sibling becomes a `PackedSlice`, its columns of the fused output,
so the model's own forward still works (computing the fused product once per sibling); `engine/lean_forward.py`
calls the fused layer once. The results equal `nn.Linear`'s up to float rounding.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


class PackedLinear(nn.Module):
    """`y = x W^T + b` with `W` in oneDNN's packed layout; inference only (no autograd)."""

    def __init__(self, *linears: nn.Linear) -> None:
        """Pack one linear layer, or several that read the same input as one (outputs side by side)."""
        super().__init__()
        self.in_features, self.out_features = linears[0].in_features, sum(x.out_features for x in linears)
        weight = torch.cat([x.weight.detach() for x in linears]) if len(linears) > 1 else linears[0].weight.detach()
        # [out_features, in_features] reordered for any row count; not a Parameter: nothing trains it
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, None),
                             persistent=False)
        biases = [x.bias.detach() if x.bias is not None else x.weight.new_zeros(x.out_features) for x in linears]
        bias = None if all(x.bias is None for x in linears) else torch.cat(biases)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """[..., in_features] -> [..., out_features]."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def add_to(self, residual: Tensor, x: Tensor) -> Tensor:
        """`residual + self(x)` in one call, oneDNN adding the residual as the GEMM's post-op (a decoder's residual
        stream after o_proj and down_proj): one op fewer, and the output written once. `residual`, of the output's
        shape, is only read."""
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed_weight, self.bias, "add")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class PackedSlice(nn.Module):
    """Output columns [start, stop) of a fused `PackedLinear`: one projection that was packed with its siblings."""

    def __init__(self, fused: PackedLinear, start: int, stop: int) -> None:
        super().__init__()
        object.__setattr__(self, "fused", fused)  # not a submodule: it is registered once, on the parent
        self.start, self.stop = start, stop
        self.in_features, self.out_features = fused.in_features, stop - start

    def forward(self, x: Tensor) -> Tensor:
        """[..., in_features] -> [..., out_features] (computes the whole fused product)."""
        return self.fused(x)[..., self.start:self.stop]

    def extra_repr(self) -> str:
        return f"columns {self.start}:{self.stop} of a fused layer"


def packable(module: nn.Module) -> bool:
    """Whether `module` is a plain `nn.Linear` (not a subclass: quantized layers are) on the CPU, in a dtype
    oneDNN packs, with no accelerate hook (an offloaded layer's weight moves at run time)."""
    if type(module) is not nn.Linear or hasattr(module, "_hf_hook"):
        return False
    weight = module.weight
    if weight.device.type != "cpu" or weight.dtype not in PACKABLE_DTYPES:
        return False
    return weight.dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _fusable(siblings: list[nn.Module | None]) -> bool:
    """Whether these layers can be packed as one: all packable, with the same input size and dtype."""
    linears = [s for s in siblings if isinstance(s, nn.Module) and packable(s)]
    return len(linears) == len(siblings) and len({(x.in_features, x.weight.dtype) for x in linears}) == 1


def pack_linears(model: nn.Module) -> int:
    """Replace every packable linear layer of `model` in place; how many were replaced (0 where torch has no
    oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return 0
    replaced = 0
    for parent in list(model.modules()):
        for fused_name, names in FUSED.items():
            siblings = [getattr(parent, name, None) for name in names]
            if _fusable(siblings) and not hasattr(parent, fused_name):
                fused = PackedLinear(*siblings)
                parent.add_module(fused_name, fused)
                start = 0
                for name, sibling in zip(names, siblings):
                    setattr(parent, name, PackedSlice(fused, start, start + sibling.out_features))
                    start += sibling.out_features
                replaced += len(siblings)
        for name, child in list(parent.named_children()):
            if packable(child):
                setattr(parent, name, PackedLinear(child))
                replaced += 1
    logger.info("%d linear layers packed for oneDNN", replaced)
    return replaced
