"""The engine's CPU kernels (`cpu_kernels.cpp`): built once per machine with the system's C++ compiler, cached, and
loaded as the torch ops `torch.ops.serving.paged_decode` (decode attention over the paged cache; `paged_decode_lse`
also returns each row's log-sum-exps, for a cascade's merge), `torch.ops.serving.paged_prefill` (prompt chunks'
attention over the paged cache), `torch.ops.serving.rms_norm`, `rotary_` and `silu_mul` (the lean forward's
RMSNorm, rotary embedding and SiLU product in one op each) and `torch.ops.serving.refuse_tokens` (a grammar's
bitmask applied to the logits).

Building needs g++ (or $CXX) and torch's C++ headers; it takes about half a minute and is done at most once per
source, torch version and CPU architecture (the library is cached under `cache_dir()`, keyed by all three). Where
it cannot be built (no compiler, headers stripped from a slim image) `load` returns None with the reason, and the
engine attends with the torch-only `GatheredSdpa`, normalizes, rotates and activates in torch ops and applies
grammar masks with numpy instead; the server runs either way. The container builds it when the image is built
(`python -m serving.engine.cpu_kernels`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
# Vectorized float reductions without giving up IEEE infinities and NaNs (no -ffast-math).
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-fno-math-errno", "-fassociative-math",
         "-fno-signed-zeros", "-fno-trapping-math")
PREFILL_MIN_LANES = 8  # the vector width from which `paged_prefill` beats SDPA's flash kernel
_lock = threading.Lock()
_loaded: dict[str, str | None] = {}  # library path -> None when loaded, else why it failed


def cache_dir() -> Path:
    """Where built libraries are kept: $XDG_CACHE_HOME/serving/kernels (~/.cache by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "serving" / "kernels"


def library_path() -> Path:
    """The cached library for this source, torch build and machine architecture."""
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(f"{torch.__version__}|{platform.machine()}|{' '.join(FLAGS)}".encode())
    return cache_dir() / f"serving-kernels-{key.hexdigest()[:16]}.so"


def _compile(target: Path) -> None:
    """Compile the source into `target` (raises with the compiler's message)."""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++) on this machine")
    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    libraries = [f"-L{path}" for path in cpp_extension.library_paths()]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        command = [compiler, *FLAGS, abi, *includes, str(SOURCE), "-o", str(built), *libraries,
                   "-lc10", "-ltorch_cpu"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed: {result.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: a concurrent builder never loads a half-written library


def load() -> str | None:
    """Load the kernels (building them first when they are not cached); None when the `torch.ops.serving` ops are
    ready, else why they are not."""
    with _lock:
        target = library_path()
        key = str(target)
        if key not in _loaded:
            try:
                if not target.exists():
                    _compile(target)
                torch.ops.load_library(key)
                _loaded[key] = None
            except (OSError, RuntimeError) as error:
                _loaded[key] = str(error).splitlines()[0] if str(error) else type(error).__name__
        return _loaded[key]


def loaded() -> bool:
    """Whether the ops are loaded in this process (by an earlier `load`); never builds, so it is cheap enough to ask
    every step."""
    return None in _loaded.values()


def fast_prefill() -> bool:
    """Whether the prompt-attention kernel runs faster than SDPA here: with AVX2 and FMA, or AVX-512 (8 or 16 float
    lanes; at 4 it is slower). False where the kernels are not loaded."""
    return loaded() and int(torch.ops.serving.prefill_lanes()) >= PREFILL_MIN_LANES


def main() -> int:
    """Build and load the kernels; print where they are or why they could not be built."""
    reason = load()
    print(f"CPU kernels: {library_path()}" if reason is None else f"CPU kernels unavailable: {reason}")
    return 0 if reason is None else 1


if __name__ == "__main__":
    sys.exit(main())
