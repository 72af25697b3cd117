"""LoRA in the batched forward: every resident adapter's matrices in slot tensors, and each step's rows by adapter.

A step's rows (tokens) carry their sequence's adapter slot; a targeted projection `y = W x` of a row on an adapter
becomes `y + B (A x)` (the scale folded into B). Per projection and step this is one segmented matmul over all
the adapters of the step, however many: the rows of each slot are gathered into one padded batch
`[slots, width, in]` (`LoraStep`), multiplied by the slots' A^T `[slots, in, R]` and B `[slots, R, out]` with two
`bmm`s, and the real rows' deltas are added back with one `index_add_`: five ops, where a loop over adapters costs
four per adapter. Rows on the base model are not gathered; a step without adapter rows has no `LoraStep` and runs
exactly the base forward. Only the slots from the lowest to the highest one the step uses are read.

`LoraStacks` holds, per layer, A^T and B for every projection (`q_proj` ... `down_proj`), and for the fused
siblings that `packed_linear` packs together (`qkv_proj`, `gate_up_proj`) views of one tensor each whose ranks sit
side by side and whose B is block-diagonal, so that the lean forward adds one delta to the fused output. Ranks are
padded to MAX_LORA_RANK with zeros, stored rank-major, and a step computes only the ranks below the largest rank
of its adapters (a step of rank-8 adapters costs rank 8, whatever MAX_LORA_RANK is). Memory: layers x slots x (the projections' inputs + outputs) x MAX_LORA_RANK values, plus as much
again for the block-diagonal B's zeros of the fused groups.

transformers' own forward (LEAN_FORWARD=false) gets the same deltas from forward hooks on its projections
(`install_hooks`), which read the step being run from `ACTIVE`.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from serving.engine.adapter_files import PROJECTIONS, AdapterWeights, ProjectionShapes

GROUPS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "o_proj": ("o_proj",), "gate_up_proj": ("gate_proj", "up_proj"),
          "down_proj": ("down_proj",)}


def projection_shapes(model: Any) -> ProjectionShapes:
    """The decoder's projections' (in_features, out_features), read from its first layer."""
    layers = model.model.layers
    first = layers[0]
    return ProjectionShapes(layers=len(layers), modules={
        name: (module.in_features, module.out_features)
        for name, module in ((n, getattr(getattr(first, parent), n)) for n, parent in PROJECTIONS.items())})


@dataclass(frozen=True)
class _View:
    """A projection's place in its group's tensors: A^T [slots, in, R * members] and B [slots, R * members, out],
    rank-major (column `rank * members + index` is rank `rank` of member `index`), so that the first `r * members`
    columns hold every member's ranks below r; `index` None is the whole group (the fused projection)."""

    a: Tensor
    b: Tensor
    members: int
    index: int | None
    columns: slice  # of the group's output

    def matrices(self, low: int, high: int, rank: int) -> tuple[Tensor, Tensor]:
        """A^T [slots, in, r] and B [slots, r, out] of slots [low, high), ranks below `rank` (r: of all members
        for the whole group)."""
        if self.index is None:
            span = slice(0, rank * self.members)
        else:
            span = slice(self.index, rank * self.members, self.members)
        return self.a[low:high, :, span], self.b[low:high, span, self.columns]


class LoraStacks:
    """Every slot's A^T and B per layer and projection (fused groups included), on the model's device."""

    def __init__(self, shapes: ProjectionShapes, slots: int, rank: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.views: list[dict[str, _View]] = []  # per layer: projection or fused group name -> its view
        for _ in range(shapes.layers):
            views: dict[str, _View] = {}
            for group, members in GROUPS.items():
                fan_in = shapes.modules[members[0]][0]
                fan_out = sum(shapes.modules[m][1] for m in members)
                a = torch.zeros(slots, fan_in, rank * len(members), dtype=dtype, device=device)
                b = torch.zeros(slots, rank * len(members), fan_out, dtype=dtype, device=device)
                views[group] = _View(a, b, len(members), None, slice(None))
                start = 0
                for index, member in enumerate(members):
                    stop = start + shapes.modules[member][1]
                    views[member] = _View(a, b, len(members), index, slice(start, stop))
                    start = stop
            self.views.append(views)

    @classmethod
    def for_model(cls, model: Any, slots: int, rank: int) -> LoraStacks:
        """Zeroed slots for `model`'s projections, in its dtype on its device."""
        return cls(projection_shapes(model), slots, rank, model.dtype, model.get_input_embeddings().weight.device)

    def write(self, slot: int, weights: AdapterWeights) -> None:
        """Put an adapter's matrices in `slot` (zeros where it has none)."""
        for layer, views in enumerate(self.views):
            for group in GROUPS:
                views[group].a[slot].zero_()
                views[group].b[slot].zero_()
            for projection in PROJECTIONS:
                pair = weights.modules.get((layer, projection))
                if pair is None:
                    continue
                lora_a, lora_b = pair  # [r, in], [out, r] (scaled)
                a, b = views[projection].matrices(slot, slot + 1, lora_a.shape[0])
                a[0].copy_(lora_a.t())
                b[0].copy_(lora_b.t())


@dataclass(frozen=True)
class LoraStep:
    """One step's rows by adapter slot: slots [low, high) gathered into `[high - low, width]` padded rows; only
    ranks below the largest rank of the step's adapters are computed."""

    stacks: LoraStacks
    low: int
    high: int
    rank: int
    width: int
    gather: Tensor | None  # [(high - low) * width]: the step row of each padded position (None: all rows, in order)
    real: Tensor | None  # positions of [(high - low) * width] that are real rows (None: no padding)
    rows: Tensor  # [real rows]: the step row of each real position, in order

    @classmethod
    def build(cls, stacks: LoraStacks, spans: list[tuple[int | None, int, int]], rank: int, tokens: int,
              device: torch.device) -> LoraStep | None:
        """From each chunk's (slot or None, first row, rows) and the largest rank of their adapters; None when no
        row is on an adapter."""
        by_slot: dict[int, list[int]] = {}
        for slot, first, count in spans:
            if slot is not None:
                by_slot.setdefault(slot, []).extend(range(first, first + count))
        if not by_slot:
            return None
        low, high = min(by_slot), max(by_slot) + 1
        width = max(len(rows) for rows in by_slot.values())
        gather: list[int] = []
        real: list[int] = []
        rows: list[int] = []
        for slot in range(low, high):
            members = by_slot.get(slot, [])
            real.extend(range(len(gather), len(gather) + len(members)))
            rows.extend(members)
            gather.extend(members + [members[-1] if members else 0] * (width - len(members)))
        everything = high - low == 1 and rows == list(range(tokens))

        def tensor(values: list[int]) -> Tensor:
            return torch.tensor(values, dtype=torch.long, device=device)

        return cls(stacks=stacks, low=low, high=high, rank=rank, width=width, gather=None if everything else tensor(gather),
                   real=None if len(real) == len(gather) else tensor(real), rows=tensor(rows))

    def add(self, layer: int, name: str, x: Tensor, y: Tensor) -> None:
        """`y += B (A x)` in place for the rows on adapters: x [tokens, in] is the projection `name`'s input,
        y [tokens, out] its output (or the residual it was added to)."""
        a, b = self.stacks.views[layer][name].matrices(self.low, self.high, self.rank)  # [slots, in, r], [slots, r, out]
        if self.gather is None:
            y.add_(torch.bmm(torch.bmm(x[None], a), b)[0])
            return
        slots = self.high - self.low
        xs = x.index_select(0, self.gather).view(slots, self.width, x.shape[-1])
        delta = torch.bmm(torch.bmm(xs, a), b).view(slots * self.width, -1)  # [slots * width, out]
        if self.real is not None:
            delta = delta.index_select(0, self.real)
        y.index_add_(0, self.rows, delta)


ACTIVE: ContextVar[LoraStep | None] = ContextVar("serving_lora_step", default=None)


def install_hooks(model: Any) -> None:
    """Forward hooks that add the running step's deltas (`ACTIVE`) to the projections of transformers' own
    forward; once per model (the lean forward calls the projections' `forward` directly, past any hook)."""
    if getattr(model, "_serving_lora_hooks", False):
        return
    for index, layer in enumerate(model.model.layers):
        for name, parent in PROJECTIONS.items():
            getattr(getattr(layer, parent), name).register_forward_hook(_hook(index, name))
    model._serving_lora_hooks = True


def _hook(layer: int, name: str) -> Any:
    """The hook of one projection: its output plus the step's delta, when a step with adapter rows runs."""

    def hook(module: Any, args: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        step = ACTIVE.get()
        if step is None:
            return None
        flat = output.reshape(-1, output.shape[-1])
        step.add(layer, name, args[0].reshape(-1, args[0].shape[-1]), flat)
        return flat.view(output.shape)

    return hook
