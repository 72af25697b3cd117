"""Linear layers whose weights are prepacked for oneDNN, for CPU inference.

torch's CPU `nn.Linear` calls MKL's sgemm on the plain row-major weight. On this project's machines (AMD EPYC,
AVX-512) that reached 45-75 GFLOP/s for a decode step's shapes (16-64 rows times 768-8192 columns), where oneDNN
with the weight reordered once into its blocked layout reached 95-110 (`docs/performance.md`). vLLM's CPU build
runs its linear layers the same way. `pack_linears` swaps every plain `nn.Linear` of a CPU model for a
`PackedLinear` holding only the packed copy, so a model's own forward, whatever its architecture, runs on it.
The results equal `nn.Linear`'s up to float rounding.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)


class PackedLinear(nn.Module):
    """`y = x W^T + b` with `W` in oneDNN's packed layout; inference only (no autograd)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # [out_features, in_features] reordered for any row count; not a Parameter: nothing trains it
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None),
                             persistent=False)
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """[..., in_features] -> [..., out_features]."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def packable(module: nn.Module) -> bool:
    """Whether `module` is a plain `nn.Linear` (not a subclass: quantized layers are) on the CPU, in a dtype
    oneDNN packs, with no accelerate hook (an offloaded layer's weight moves at run time)."""
    if type(module) is not nn.Linear or hasattr(module, "_hf_hook"):
        return False
    weight = module.weight
    if weight.device.type != "cpu" or weight.dtype not in PACKABLE_DTYPES:
        return False
    return weight.dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def pack_linears(model: nn.Module) -> int:
    """Replace every packable linear layer of `model` in place; how many were replaced (0 where torch has no
    oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return 0
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if packable(child):
                setattr(parent, name, PackedLinear(child))
                replaced += 1
    logger.info("%d linear layers packed for oneDNN", replaced)
    return replaced
