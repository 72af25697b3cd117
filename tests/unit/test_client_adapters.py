"""The engine client's adapter calls over real ZeroMQ sockets: registration fans out to every replica, a refusal
rolls the others back, unregistration combines the answers, and the cached model facts follow the changes."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import msgspec.structs
import pytest
import zmq

from serving.client import EngineClient, EngineUnavailable
from serving.messages import (
    AdapterInfo,
    AdapterResult,
    AdapterSpec,
    AdapterStatus,
    EventBatch,
    InfoRequest,
    InfoResult,
    ModelInfo,
    RegisterAdapterRequest,
    UnregisterAdapterRequest,
    decode_client_message,
    encode,
)

INFO = ModelInfo(model_id="scripted", model_sha=None, model_pipeline_tag=None, max_input_tokens=7,
                 max_total_tokens=8, max_batch_total_tokens=64, max_concurrent_requests=4, dtype="float32",
                 device="cpu", device_map={"": "cpu"}, has_chat_template=False, num_parameters=0)
SPEC = AdapterSpec(name="sql", source="/adapters/sql")


@dataclass
class AdapterEngine:
    """An engine replica that only keeps a registry of adapter names: it answers info calls with them, and
    register calls with `refuse` when set (else OK), or not at all when `silent`."""

    address: str
    refuse: AdapterStatus | None = None
    silent: bool = False
    registered: dict[str, AdapterSpec] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    running: bool = True

    def serve(self) -> None:
        """Answer every call until `running` is cleared."""
        context = zmq.Context()
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.address)
        try:
            while self.running:
                if not sock.poll(50):
                    continue
                identity, payload = sock.recv_multipart()
                answer = self.answer(decode_client_message(payload))
                if answer is not None:
                    sock.send_multipart([identity, encode(EventBatch(events=(answer,)))])
        finally:
            sock.close()
            context.term()

    def answer(self, message):
        """The reply to one call (None: no reply)."""
        if isinstance(message, InfoRequest):
            adapters = tuple(AdapterInfo(name=spec.name, source=spec.source, rank=8, target_modules=("q_proj",),
                                         pinned=spec.pinned, resident=True) for spec in self.registered.values())
            return InfoResult(call_id=message.call_id, info=msgspec.structs.replace(INFO, adapters=adapters))
        if isinstance(message, RegisterAdapterRequest):
            self.calls.append(f"register {message.spec.name}")
            if self.silent:
                return None
            if self.refuse is not None:
                return AdapterResult(call_id=message.call_id, status=self.refuse,
                                     message=f"refused {message.spec.name}")
            self.registered[message.spec.name] = message.spec
            return AdapterResult(call_id=message.call_id, status=AdapterStatus.OK, message="ok")
        if isinstance(message, UnregisterAdapterRequest):
            self.calls.append(f"unregister {message.name}")
            if self.registered.pop(message.name, None) is None:
                return AdapterResult(call_id=message.call_id, status=AdapterStatus.NOT_FOUND,
                                     message=f"Adapter {message.name} not found")
            return AdapterResult(call_id=message.call_id, status=AdapterStatus.OK, message="ok")
        return None


@pytest.fixture
def replicas(tmp_path):
    """Two adapter engines and a client of both."""
    engines = [AdapterEngine(f"ipc://{tmp_path}/engine.sock"), AdapterEngine(f"ipc://{tmp_path}/engine.sock.1")]
    threads = [threading.Thread(target=engine.serve, daemon=True) for engine in engines]
    for thread in threads:
        thread.start()
    yield engines, EngineClient([engine.address for engine in engines])
    for engine, thread in zip(engines, threads):
        engine.running = False
        thread.join(5)


def test_registration_reaches_every_replica_and_the_cached_facts(replicas):
    engines, client = replicas
    assert client.info().adapters == ()
    result = client.register_adapter(SPEC)
    assert result.status is AdapterStatus.OK
    assert [list(engine.registered) for engine in engines] == [["sql"], ["sql"]]
    assert [adapter.name for adapter in client.info().adapters] == ["sql"], "refreshed after the change"
    assert client.unregister_adapter("sql").status is AdapterStatus.OK
    assert client.info().adapters == () and all(not engine.registered for engine in engines)


def test_a_refusal_rolls_the_other_replicas_back(replicas):
    engines, client = replicas
    engines[1].refuse = AdapterStatus.LOAD_FAILED
    result = client.register_adapter(SPEC)
    assert (result.status, result.message) == (AdapterStatus.LOAD_FAILED, "refused sql")
    assert engines[0].calls == ["register sql", "unregister sql"] and engines[1].calls == ["register sql"]
    assert all(not engine.registered for engine in engines)


def test_a_silent_replica_rolls_the_others_back_and_raises(replicas, monkeypatch):
    import serving.client as client_module

    engines, client = replicas
    monkeypatch.setattr(client_module, "ADAPTER_CALL_TIMEOUT", 0.5)
    engines[0].silent = True
    with pytest.raises(EngineUnavailable):
        client.register_adapter(SPEC)
    assert engines[1].calls == ["register sql", "unregister sql"] and not engines[1].registered


def test_unregistering_an_unknown_adapter_is_not_found(replicas):
    _, client = replicas
    result = client.unregister_adapter("nope")
    assert result.status is AdapterStatus.NOT_FOUND and "nope" in result.message


def test_info_refresh_sees_another_workers_registration(replicas):
    engines, client = replicas
    other = EngineClient([engine.address for engine in engines])
    assert client.info().adapters == ()
    assert other.register_adapter(SPEC).status is AdapterStatus.OK
    assert client.info().adapters == (), "cached: no round trip per generation"
    assert [adapter.name for adapter in client.info(refresh=True).adapters] == ["sql"]
