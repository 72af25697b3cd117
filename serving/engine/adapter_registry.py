"""The engine's LoRA adapters: names registered, weights resident in slots, pins and in-use counts. Pure Python.

An adapter is registered under a name with a source and a registration id unique in the process (a name
registered again after its removal gets a new id, so that nothing cached for the old weights is reused). Its
weights live in one of `slots` resident slots while it is loaded; a request holds it (`acquire`) from the moment
it is queued until it ends, and a held, pinned or loading adapter is never evicted. When a slot is needed and none
is free, the least recently used resident adapter that is none of these gives up its slot and stays registered:
its next request loads it again. Unregistering removes the name at once; the weights stay until the last request
holding them has ended.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from serving.messages import AdapterInfo, AdapterSpec, AdapterStatus

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/@:]{0,255}")  # hub ids, aliases, paths' last parts


class AdapterError(Exception):
    """An adapter cannot be registered, loaded or removed; `message` is one line that names it."""

    def __init__(self, status: AdapterStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class Adapter:
    """One registration of an adapter; `slot` is its resident slot (its weights are there once `loading` ends)."""

    spec: AdapterSpec
    registration: int
    pinned: bool
    rank: int | None = None
    target_modules: tuple[str, ...] = ()
    slot: int | None = None
    loading: bool = False
    in_use: int = 0  # requests holding it, queued or running
    registered: bool = False  # its name resolves to it (False before its registration completes and after removal)
    last_used: int = 0

    @property
    def name(self) -> str:
        """The name requests use."""
        return self.spec.name

    @property
    def resident(self) -> bool:
        """Whether its weights are in its slot and usable."""
        return self.slot is not None and not self.loading

    @property
    def cache_root(self) -> int:
        """The seed of its prompts' block hash chain: its own per registration, never the base model's."""
        return hash(("lora", self.registration))

    def info(self) -> AdapterInfo:
        """As `/info` shows it."""
        return AdapterInfo(name=self.name, source=self.spec.source, rank=self.rank,
                           target_modules=self.target_modules, pinned=self.pinned, resident=self.resident)


@dataclass
class AdapterRegistry:
    """Registered adapters by name and the `slots` resident slots."""

    slots: int
    _by_name: dict[str, Adapter] = field(default_factory=dict)
    _occupants: list[Adapter | None] = field(init=False)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _clock: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self._occupants = [None] * self.slots

    def __len__(self) -> int:
        """Adapters registered now."""
        return len(self._by_name)

    def get(self, name: str) -> Adapter | None:
        """The adapter registered under `name`."""
        return self._by_name.get(name)

    def registered(self) -> list[Adapter]:
        """Every registered adapter, in registration order."""
        return list(self._by_name.values())

    def check(self, spec: AdapterSpec) -> Adapter | None:
        """Whether `spec` may be registered: the adapter already registered with that name and source (registering
        it again changes nothing), else None; raises BAD_REQUEST for a malformed name or one taken by another
        source."""
        if not NAME.fullmatch(spec.name):
            raise AdapterError(AdapterStatus.BAD_REQUEST, f"adapter name {spec.name!r} is not valid: it must start "
                               "with a letter or digit and hold only letters, digits and . _ - / @ :")
        if not spec.source.strip():
            raise AdapterError(AdapterStatus.BAD_REQUEST, f"adapter {spec.name!r} has an empty source")
        existing = self._by_name.get(spec.name)
        if existing is not None and existing.spec.source != spec.source:
            raise AdapterError(AdapterStatus.BAD_REQUEST, f"adapter name {spec.name!r} is already registered "
                               f"with the source {existing.spec.source!r}")
        return existing

    def new(self, spec: AdapterSpec) -> Adapter:
        """A registration not yet visible by name (its files are checked first); see `publish`."""
        return Adapter(spec=spec, registration=next(self._ids), pinned=spec.pinned)

    def publish(self, adapter: Adapter, rank: int, target_modules: tuple[str, ...]) -> None:
        """Make a checked registration visible under its name."""
        adapter.rank, adapter.target_modules, adapter.registered = rank, target_modules, True
        self._by_name[adapter.name] = adapter

    def remove(self, name: str) -> Adapter:
        """Unregister `name`: its slot is freed now when no request holds it, else when the last one ends."""
        adapter = self._by_name.pop(name, None)
        if adapter is None:
            raise AdapterError(AdapterStatus.NOT_FOUND, f"adapter {name!r} is not registered")
        adapter.registered = False
        if adapter.in_use == 0:
            self.free(adapter)
        return adapter

    def acquire(self, adapter: Adapter) -> None:
        """A request holds the adapter (it is not evicted until released)."""
        adapter.in_use += 1
        adapter.last_used = next(self._clock)

    def release(self, adapter: Adapter) -> None:
        """A request holding the adapter ended; an unregistered adapter's slot is freed with its last request."""
        adapter.in_use -= 1
        if adapter.in_use == 0 and not adapter.registered:
            self.free(adapter)

    def all_pinned(self) -> bool:
        """Whether every slot holds a pinned adapter (a request for another adapter can never run)."""
        return all(occupant is not None and occupant.pinned for occupant in self._occupants)

    def claim_slot(self, adapter: Adapter) -> Adapter | None:
        """Give `adapter` a slot to load into (`loading` until `loaded`): the lowest free one, else the least
        recently used evictable adapter's, which is returned (it stays registered, not resident). Raises NO_ROOM
        when every slot is pinned, held or loading."""
        if None in self._occupants:
            slot, evicted = self._occupants.index(None), None
        else:
            candidates = [a for a in self._occupants if a is not None and not a.pinned and not a.loading
                          and a.in_use == 0]
            if not candidates:
                raise AdapterError(AdapterStatus.NO_ROOM, f"no room to load adapter {adapter.name!r}: all "
                                   f"{self.slots} adapter slots (MAX_LORA_ADAPTERS) hold pinned adapters or "
                                   "adapters in use")
            evicted = min(candidates, key=lambda a: a.last_used)
            slot, evicted.slot = evicted.slot, None
        assert slot is not None
        self._occupants[slot] = adapter
        adapter.slot, adapter.loading = slot, True
        adapter.last_used = next(self._clock)
        return evicted

    def loaded(self, adapter: Adapter) -> None:
        """Its weights are in its slot."""
        adapter.loading = False

    def free(self, adapter: Adapter) -> None:
        """Give up the adapter's slot (a failed load, or an unregistered adapter nobody holds)."""
        if adapter.slot is not None:
            self._occupants[adapter.slot] = None
        adapter.slot, adapter.loading = None, False
