"""The GPU memory probes that size the KV cache: what the GPUs hold, what is allocated, the peak of a forward.

On GPUs the KV cache takes `CUDA_MEMORY_FRACTION` of their memory less what is allocated (the weights) and the
activation peak of a profiled forward of a full prefill budget (`ModelRunner.activation_peak`), which runs before
the pool is allocated. `DeviceMemory` is the seam: `CudaMemory` reads torch's allocator, tests pass a fake that
checks the arithmetic and the order of the calls without a GPU. On the CPU none of this applies (see `limits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch


class DeviceMemory(Protocol):
    """The memory of the GPUs a model lives on, summed over them."""

    def capacity(self) -> int:
        """Total bytes."""
        ...

    def allocated(self) -> int:
        """Bytes held by tensors now."""
        ...

    def reset_peak(self) -> None:
        """Start measuring the peak of allocated bytes afresh."""
        ...

    def peak(self) -> int:
        """The most bytes held by tensors since the last `reset_peak`."""
        ...

    def release(self) -> None:
        """Give the allocator's cached, unused memory back to the driver."""
        ...


@dataclass(frozen=True)
class CudaMemory:
    """`DeviceMemory` of CUDA devices, from torch's caching allocator."""

    devices: tuple[int, ...]

    def capacity(self) -> int:
        """Total bytes of the devices."""
        return sum(torch.cuda.mem_get_info(i)[1] for i in self.devices)

    def allocated(self) -> int:
        """Bytes held by tensors on the devices."""
        return sum(torch.cuda.memory_allocated(i) for i in self.devices)

    def reset_peak(self) -> None:
        """Reset the devices' peak statistics."""
        for index in self.devices:
            torch.cuda.reset_peak_memory_stats(index)

    def peak(self) -> int:
        """The devices' peaks of allocated bytes since the reset, summed."""
        return sum(torch.cuda.max_memory_allocated(i) for i in self.devices)

    def release(self) -> None:
        """Empty torch's cache of freed blocks."""
        torch.cuda.empty_cache()


def gpu_memory(devices: set[torch.device]) -> CudaMemory | None:
    """The probes of the CUDA devices among `devices`, or None when there are none."""
    cuda = tuple(sorted({d.index or 0 for d in devices if d.type == "cuda"}))
    return CudaMemory(cuda) if cuda else None


def activation_peak(memory: DeviceMemory, forward: Callable[[], object]) -> int:
    """The bytes `forward` held at its peak beyond what was allocated when it started; freed memory is then
    given back, so that the pool sized next can take it."""
    memory.reset_peak()
    before = memory.allocated()
    forward()
    peak = max(0, memory.peak() - before)
    memory.release()
    return peak


def kv_budget(memory: DeviceMemory, fraction: float, activations: int) -> int:
    """The bytes the KV cache may take: `fraction` of the memory less what is allocated and `activations`."""
    return max(0, int(memory.capacity() * fraction) - memory.allocated() - activations)
