"""The engine process keeps the memory a CPU step frees: the next step's activations do not fault their pages again."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Twenty "steps", each allocating and writing ~136 MB of activations of mixed sizes, then freeing them; prints the
# page faults the steps after the first took.
STEPS = """
import resource, sys, torch
from serving.engine.host_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step():
    held = [torch.ones(n) for n in (6_000_000, 300_000, 4_000_000, 1_000_000) * 3]
    del held
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc thresholds")
def test_freed_activations_stay_mapped_for_the_next_step() -> None:
    # glibc as it comes maps every step's memory again in most runs (360,000-810,000 faults), but in some the heap's
    # layout spares it (34,000-90,000); with the thresholds set no run takes more than about 20,000. The most of
    # four runs each, so that the comparison does not hang on one layout.
    plain = max(_faults("plain") for _ in range(4))
    kept = max(_faults("keep") for _ in range(4))
    assert plain > 100_000
    assert kept < plain // 10


def test_the_loader_keeps_freed_memory_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from serving.config import from_env
    from serving.engine import loader

    calls = []

    def stop(config: object) -> str:
        raise RuntimeError("stop here")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU path, on any machine
    monkeypatch.setattr(loader, "keep_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.setattr(loader, "download_model", stop)

    with pytest.raises(RuntimeError, match="stop here"):
        loader.load_model(from_env({"HF_MODEL_ID": "unused"}).engine)
    assert calls == [True]
