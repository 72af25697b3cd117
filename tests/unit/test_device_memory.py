"""The GPU memory probes' arithmetic and the order of their calls, with a fake in place of CUDA."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from serving.engine.device_memory import CudaMemory, activation_peak, gpu_memory, kv_budget

MIB = 2**20


@dataclass
class FakeMemory:
    """A GPU of `total` bytes whose allocation grows by `forward_peak` during a forward; calls are logged."""

    total: int = 1024 * MIB
    held: int = 100 * MIB
    forward_peak: int = 50 * MIB
    calls: list[str] = field(default_factory=list)
    _peak: int = 0

    def capacity(self) -> int:
        self.calls.append("capacity")
        return self.total

    def allocated(self) -> int:
        self.calls.append("allocated")
        return self.held

    def reset_peak(self) -> None:
        self.calls.append("reset_peak")
        self._peak = self.held

    def peak(self) -> int:
        self.calls.append("peak")
        return self._peak

    def release(self) -> None:
        self.calls.append("release")

    def forward(self) -> None:
        self.calls.append("forward")
        self._peak = max(self._peak, self.held + self.forward_peak)


def test_the_peak_is_measured_around_the_forward_and_freed_memory_given_back():
    memory = FakeMemory()
    assert activation_peak(memory, memory.forward) == 50 * MIB
    assert memory.calls == ["reset_peak", "allocated", "forward", "peak", "release"]


def test_an_earlier_peak_does_not_count():
    memory = FakeMemory(forward_peak=0)
    memory._peak = 900 * MIB  # an earlier, larger allocation: the reset forgets it
    assert activation_peak(memory, memory.forward) == 0


def test_the_budget_is_the_fraction_less_weights_and_activations():
    memory = FakeMemory()
    assert kv_budget(memory, 0.9, 50 * MIB) == int(1024 * MIB * 0.9) - 100 * MIB - 50 * MIB
    assert kv_budget(memory, 0.1, 50 * MIB) == 0  # never negative


def test_only_cuda_devices_have_probes():
    assert gpu_memory({torch.device("cpu")}) is None
    assert gpu_memory({torch.device("cuda", 1), torch.device("cuda", 0), torch.device("cpu")}) == CudaMemory((0, 1))
    assert gpu_memory({torch.device("cuda")}) == CudaMemory((0,))
