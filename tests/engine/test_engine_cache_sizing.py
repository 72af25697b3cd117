"""On GPUs the KV pool is sized after a profiled forward of a full prefill step (a fake stands in for CUDA)."""

from __future__ import annotations

from typing import Any

import pytest

from engine_helpers import generate_alone, request, token_ids
from serving.engine import device_memory, model_runner
from serving.engine.engine import BLOCK_SIZE
from serving.engine.kv_cache import PagedKVCache
from serving.engine.limits import kv_bytes_per_token
from serving.engine.model_runner import ModelRunner

MIB = 2**20


class LoggedMemory:
    """A GPU of 64 MiB with 10 MiB of weights whose forward peaks 3 MiB higher; calls go to `log`."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def capacity(self) -> int:
        self.log.append("capacity")
        return 64 * MIB

    def allocated(self) -> int:
        self.log.append("allocated")
        return 10 * MIB

    def reset_peak(self) -> None:
        self.log.append("reset_peak")

    def peak(self) -> int:
        self.log.append("peak")
        return 13 * MIB

    def release(self) -> None:
        self.log.append("release")


@pytest.fixture
def log(monkeypatch) -> list[Any]:
    """Every probe call, cache allocation and forward, in order, while the engine believes it is on a GPU."""
    events: list[Any] = []
    monkeypatch.setattr(device_memory, "gpu_memory", lambda devices: LoggedMemory(events))

    class LoggedCache(PagedKVCache):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            events.append(("cache", self.blocks.num_blocks))

    run = ModelRunner.run
    monkeypatch.setattr(model_runner, "PagedKVCache", LoggedCache)
    monkeypatch.setattr(ModelRunner, "run", lambda self, batch: events.append(("forward", batch.tokens,
                                                                              len(batch.logits_index)))
                        or run(self, batch))
    return events


def test_the_pool_is_sized_after_a_profiled_prefill_step(make_engine, loaded, log):
    engine = make_engine(max_batch_prefill_tokens=100, max_input_tokens=40, max_total_tokens=64,
                         memory_fraction=0.5)
    per_token = kv_bytes_per_token(loaded.model.config, loaded.model.dtype)
    tokens = (32 * MIB - 10 * MIB - 3 * MIB) // per_token  # half the GPU, less the weights and the activations
    blocks = -(-tokens // BLOCK_SIZE) + 1
    probe = 100 // BLOCK_SIZE + 3 + 1  # 100 prompt tokens in prompts of 40, 40 and 20, and the null block
    assert log[0] == "capacity" and log[1] == "allocated"  # the estimate before the profile
    assert log[2:] == [("cache", probe), "reset_peak", "allocated", ("forward", 100, 100), "peak", "release",
                       "capacity", "allocated", ("cache", blocks)]
    assert engine.limits.max_batch_total_tokens == tokens
    assert engine.runner.cache.blocks is engine.scheduler.blocks
    assert engine.scheduler.blocks.num_blocks == blocks
    assert engine.runner.cache.key_cache[0].shape[0] == blocks * BLOCK_SIZE


def test_a_profiled_engine_generates_what_an_unprofiled_one_does(make_engine, log):
    prompt = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    profiled = token_ids(generate_alone(make_engine(max_batch_prefill_tokens=100), request("a", prompt)))
    assert ("forward", 100, 100) in log
    plain = token_ids(generate_alone(make_engine(max_batch_total_tokens=4096), request("a", prompt)))
    assert profiled == plain


def test_a_configured_pool_is_not_profiled(make_engine, log):
    engine = make_engine(max_batch_total_tokens=1000, max_total_tokens=64)
    assert log == [("cache", engine.scheduler.blocks.num_blocks)]
