"""LoRA in the batched forward: every resident adapter's matrices in slot tensors, and each step's rows by adapter.

A step's rows (tokens) carry their sequence's adapter slot; a targeted projection `y = W x` of a row on an adapter
becomes `y + B (A x)` (the scale folded into B). `ModelRunner.prepare` orders a step's chunks by adapter (decoding
rows first, then prompt rows, as before), so the rows of each adapter are at most two segments of consecutive
rows: each projection then loops over the segments (`LoraStep`), two GEMMs on views each (`x[seg] @ A^T`, then
`addmm_` into `y[seg]`), with no gather, no padding and no scatter. Rows on the base model are in no segment; a
step without adapter rows has no `LoraStep` and runs exactly the base forward. A padded one-`bmm`-for-all-adapters
variant was measured slower on the CPU (`docs/performance.md`): prompts of different lengths pad to the longest
and the gathers copy every row.

`LoraStacks` holds, per layer, each group of sibling projections that `packed_linear` fuses (`qkv_proj`,
`gate_up_proj`; `o_proj` and `down_proj` alone) as one A `[slots, R x members, in]`, rank-major (row
`rank x members + member`), and each member's B `[slots, R, out]`: the first `r x members` rows of A hold every
member's ranks below r, so a segment computes its adapter's own rank r, not MAX_LORA_RANK (R), and the fused
q/k/v (gate/up) input meets A once for all members; each member's ranks then meet its own B into its own output
columns. Memory: layers x slots x R x (the projections' inputs + outputs) values in the model's dtype (Llama-7B,
8 slots, R = 64, bfloat16: 2.6 GB; the small benchmark model, R = 16: 0.1 GB), allocated with the first adapter.

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
    """A projection's place in its group's tensors: one A [slots, R x members, in], rank-major (row
    `rank x members + member` is that member's rank), so that the first `r x members` rows hold every member's
    ranks below r; and each member's B [slots, R, out]. `index` None is the whole group (the fused projection),
    whose output holds the members' outputs side by side (`columns`)."""

    a: Tensor
    b: tuple[Tensor, ...]  # each member's B (index None), or this member's alone
    members: int
    index: int | None
    columns: tuple[slice, ...]  # each member's output columns in the fused output (index None)

    def rows(self, rank: int) -> slice:
        """The rows of A holding ranks below `rank` (every member's for a group, this member's otherwise)."""
        return slice(0, rank * self.members) if self.index is None else slice(self.index, rank * self.members,
                                                                                self.members)

    def add(self, slot: int, rank: int, x: Tensor, y: Tensor) -> None:
        """`y += B (A x)` for rows x [rows, in] and y [rows, out] on the slot's adapter of rank `rank`."""
        xa = x @ self.a[slot, self.rows(rank)].t()  # [rows, r x members]: a fused group's members in one GEMM
        if self.index is None and self.members > 1:
            for member, (b, columns) in enumerate(zip(self.b, self.columns)):
                y[:, columns].addmm_(xa[:, member::self.members], b[slot, :rank])
        else:
            y.addmm_(xa, self.b[0][slot, :rank])


class LoraStacks:
    """Every slot's A and B per layer and projection (fused groups included), on the model's device."""

    def __init__(self, shapes: ProjectionShapes, slots: int, rank: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.views: list[dict[str, _View]] = []  # per layer: projection or fused group name -> its view
        for _ in range(shapes.layers):
            views: dict[str, _View] = {}
            for group, members in GROUPS.items():
                a = torch.zeros(slots, rank * len(members), shapes.modules[members[0]][0], dtype=dtype,
                                device=device)
                bs = tuple(torch.zeros(slots, rank, shapes.modules[m][1], dtype=dtype, device=device)
                           for m in members)
                bounds = [0]
                for member in members:
                    bounds.append(bounds[-1] + shapes.modules[member][1])
                columns = tuple(slice(low, high) for low, high in zip(bounds, bounds[1:]))
                views[group] = _View(a, bs, len(members), None, columns)
                for index, member in enumerate(members):
                    views[member] = _View(a, (bs[index],), len(members), index, (columns[index],))
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
                for b in views[group].b:
                    b[slot].zero_()
            for projection in PROJECTIONS:
                pair = weights.modules.get((layer, projection))
                if pair is None:
                    continue
                lora_a, lora_b = pair  # [r, in], [out, r] (scaled)
                view, rank = views[projection], lora_a.shape[0]
                view.a[slot, view.rows(rank)].copy_(lora_a)
                view.b[0][slot, :rank].copy_(lora_b.t())


@dataclass(frozen=True)
class LoraStep:
    """One step's rows on adapters, as segments of consecutive rows on one adapter (`ModelRunner.prepare` orders
    a step's chunks by adapter, so that each adapter has at most a segment of decoding rows and one of prompt
    rows)."""

    stacks: LoraStacks
    segments: tuple[tuple[int, int, int, int], ...]  # (slot, first row, end row, rank)

    @classmethod
    def build(cls, stacks: LoraStacks, spans: list[tuple[int | None, int, int, int]]) -> LoraStep | None:
        """From each chunk's (slot or None, first row, rows, rank), in row order; None when no row is on an
        adapter."""
        segments: list[tuple[int, int, int, int]] = []
        for slot, first, count, rank in spans:
            if slot is None:
                continue
            if segments and segments[-1][0] == slot and segments[-1][2] == first:
                segments[-1] = (slot, segments[-1][1], first + count, rank)
            else:
                segments.append((slot, first, first + count, rank))
        return cls(stacks, tuple(segments)) if segments else None

    def add(self, layer: int, name: str, x: Tensor, y: Tensor) -> None:
        """`y += B (A x)` in place for the rows on adapters: x [tokens, in] is the projection `name`'s input,
        y [tokens, out] its output (or the residual it was added to)."""
        view = self.stacks.views[layer][name]
        for slot, first, end, rank in self.segments:
            view.add(slot, rank, x[first:end], y[first:end])


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
