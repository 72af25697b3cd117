"""The paged KV cache: per layer, one tensor of slots for keys and one for values, and the `BlockManager` that
hands out their blocks. The `ModelRunner` owns it; the `Scheduler` allocates and frees through its block manager.

Each layer's keys are `[num_blocks * block_size, kv_heads * head_dim]` (a slot per row, the layout a gather by
slot reads in one copy), on the device of that layer (a model split over several GPUs keeps each layer's cache
next to it). Block 0 is the null block: zeros that padding reads. The tensors are allocated empty: on the CPU
their pages are touched only as tokens are written.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor

from serving.engine import batch as forward_batch
from serving.engine.attention import GatheredSdpa, PagedAttention
from serving.engine.batch import Chunk, ForwardBatch
from serving.engine.block_manager import BlockManager


def layer_devices(model: Any) -> list[torch.device]:
    """The device of each decoder layer's attention, in layer order."""
    devices: dict[int, torch.device] = {}
    for module in model.modules():
        index = getattr(module, "layer_idx", None)
        weight = next(itertools.chain(module.parameters(), module.buffers()), None)
        if isinstance(index, int) and index not in devices and weight is not None:
            devices[index] = weight.device
    layers = model.config.get_text_config().num_hidden_layers
    if sorted(devices) != list(range(layers)):
        raise ValueError("its attention layers do not carry their layer index")
    return [devices[i] for i in range(layers)]


class PagedKVCache:
    """The slots of every layer and the block bookkeeping over them."""

    def __init__(self, devices: list[torch.device], kv_heads: int, head_dim: int, dtype: torch.dtype,
                 blocks: BlockManager, attention: PagedAttention | None = None) -> None:
        self.blocks = blocks
        self.block_size = blocks.block_size
        self.dtype = dtype
        self.device = devices[0]
        self.attention: PagedAttention = attention or GatheredSdpa()
        slots = blocks.num_blocks * blocks.block_size
        self.key_cache: list[Tensor] = []  # per layer: [slots, kv_heads * head_dim]
        self.value_cache: list[Tensor] = []
        for device in devices:
            for store in (self.key_cache, self.value_cache):
                tensor = torch.empty(slots, kv_heads * head_dim, dtype=dtype, device=device)
                tensor[:self.block_size].zero_()  # the null block
                store.append(tensor)
        self._moved: tuple[int, dict[torch.device, ForwardBatch]] = (0, {})

    def prepare(self, chunks: list[Chunk]) -> ForwardBatch:
        """The forward inputs of a step (every chunk's blocks allocated). The slots of the blocks handed out since
        the last step that the step does not write are zeroed, so that attention, which reads them under the mask
        until tokens fill them, sees finite values (a freed block keeps whatever its last sequence wrote, NaN
        included). Only those: zeroing whole blocks before the step writes most of them cost 2% of a step of the
        benchmark's long prompts."""
        batch = forward_batch.build(chunks, self.block_size, self.blocks.num_blocks, self.dtype, self.device,
                                    self.attention.in_place, self.attention.prefill_in_place)
        fresh = self.blocks.take_fresh()
        if fresh:
            offsets = torch.arange(self.block_size, device=self.device)
            slots = (torch.tensor(fresh, device=self.device)[:, None] * self.block_size + offsets).flatten()
            unwritten = slots[~torch.isin(slots, batch.slots)]
            for store in (*self.key_cache, *self.value_cache):
                store.index_fill_(0, unwritten.to(store.device), 0)
        return batch

    def write(self, layer: int, batch: ForwardBatch, keys: Tensor, values: Tensor) -> None:
        """Store the step's keys and values [tokens, kv_heads, head_dim] of a layer in their slots."""
        slots = self.on_device(batch, keys.device).slots
        self.key_cache[layer].index_copy_(0, slots, keys.reshape(keys.shape[0], -1))
        self.value_cache[layer].index_copy_(0, slots, values.reshape(values.shape[0], -1))

    def on_device(self, batch: ForwardBatch, device: torch.device) -> ForwardBatch:
        """The batch with its index tensors on `device` (moved once per step and device)."""
        if device == self.device:
            return batch
        key, moved = self._moved
        if key != id(batch):
            moved = {}
            self._moved = (id(batch), moved)
        if device not in moved:
            moved[device] = forward_batch.to_device(batch, device)
        return moved[device]
