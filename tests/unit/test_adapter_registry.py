"""`serving.engine.adapter_registry`: names, slots, eviction, pins, in-use counts and removal, without a model."""

from __future__ import annotations

import pytest

from serving.engine.adapter_registry import Adapter, AdapterError, AdapterRegistry
from serving.messages import AdapterSpec, AdapterStatus


def _registered(registry: AdapterRegistry, name: str, pinned: bool = False, load: bool = True) -> Adapter:
    """Register `name` (from /adapters/<name>) and, with `load`, give it a slot and finish its load."""
    adapter = registry.new(AdapterSpec(name, f"/adapters/{name}", pinned=pinned))
    if load:
        registry.claim_slot(adapter)
        registry.loaded(adapter)
    registry.publish(adapter, 8, ("q_proj",))
    return adapter


def test_names_are_checked() -> None:
    registry = AdapterRegistry(2)
    for name in ("", " a", "a b", "a,b", "-a", "x" * 300):
        with pytest.raises(AdapterError) as error:
            registry.check(AdapterSpec(name, "/adapters/x"))
        assert error.value.status is AdapterStatus.BAD_REQUEST
    for name in ("a", "owner/name", "owner/name@v1.0", "my_adapter-2"):
        assert registry.check(AdapterSpec(name, "/adapters/x")) is None


def test_same_name_same_source_is_the_same_registration_and_another_source_is_refused() -> None:
    registry = AdapterRegistry(2)
    adapter = _registered(registry, "a")
    assert registry.check(AdapterSpec("a", "/adapters/a")) is adapter
    with pytest.raises(AdapterError) as error:
        registry.check(AdapterSpec("a", "/adapters/other"))
    assert error.value.status is AdapterStatus.BAD_REQUEST and "/adapters/a" in error.value.message


def test_a_registration_is_invisible_until_published_and_ids_are_unique() -> None:
    registry = AdapterRegistry(2)
    pending = registry.new(AdapterSpec("a", "/adapters/a"))
    assert registry.get("a") is None and len(registry) == 0
    registry.publish(pending, 4, ("v_proj",))
    assert registry.get("a") is pending and pending.info().rank == 4
    registry.remove("a")
    again = _registered(registry, "a")
    assert again.registration != pending.registration and again.cache_root != pending.cache_root


def test_slots_are_taken_lowest_first_and_the_least_recently_used_idle_adapter_is_evicted() -> None:
    registry = AdapterRegistry(2)
    a, b = _registered(registry, "a"), _registered(registry, "b")
    assert (a.slot, b.slot) == (0, 1)
    registry.acquire(a)
    registry.release(a)  # a is now the most recently used
    c = registry.new(AdapterSpec("c", "/adapters/c"))
    assert registry.claim_slot(c) is b
    assert c.slot == 1 and c.loading and not c.resident
    assert b.slot is None and not b.resident and registry.get("b") is b  # evicted, still registered
    registry.loaded(c)
    assert c.resident


def test_pinned_held_and_loading_adapters_are_never_evicted() -> None:
    registry = AdapterRegistry(3)
    _registered(registry, "pinned", pinned=True)
    held = _registered(registry, "held")
    registry.acquire(held)
    loading = registry.new(AdapterSpec("loading", "/adapters/loading"))
    registry.claim_slot(loading)
    with pytest.raises(AdapterError) as error:
        registry.claim_slot(registry.new(AdapterSpec("d", "/adapters/d")))
    assert error.value.status is AdapterStatus.NO_ROOM and "'d'" in error.value.message
    assert not registry.all_pinned()
    registry.release(held)
    assert registry.claim_slot(registry.new(AdapterSpec("d", "/adapters/d"))) is held


def test_every_slot_pinned() -> None:
    registry = AdapterRegistry(1)
    assert not registry.all_pinned()
    _registered(registry, "p", pinned=True)
    assert registry.all_pinned()


def test_removal_frees_the_slot_after_the_last_request() -> None:
    registry = AdapterRegistry(1)
    a = _registered(registry, "a")
    registry.acquire(a)
    registry.acquire(a)
    registry.remove("a")
    assert registry.get("a") is None and a.slot == 0  # still serving its requests
    registry.release(a)
    assert a.slot == 0
    registry.release(a)
    assert a.slot is None
    b = registry.new(AdapterSpec("b", "/adapters/b"))
    assert registry.claim_slot(b) is None and b.slot == 0


def test_removing_an_unknown_adapter_is_not_found() -> None:
    with pytest.raises(AdapterError) as error:
        AdapterRegistry(1).remove("nope")
    assert error.value.status is AdapterStatus.NOT_FOUND and "'nope'" in error.value.message


def test_a_failed_load_gives_its_slot_back() -> None:
    registry = AdapterRegistry(1)
    a = registry.new(AdapterSpec("a", "/adapters/a"))
    registry.claim_slot(a)
    registry.free(a)
    assert a.slot is None and not a.loading
    assert registry.claim_slot(registry.new(AdapterSpec("b", "/adapters/b"))) is None
