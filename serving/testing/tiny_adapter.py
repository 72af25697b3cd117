"""Build a PEFT LoRA adapter for a tiny model of `tiny_model`, saved like any hub adapter, and peft's merged model.

Tests compare the engine's batched LoRA forward with peft's own arithmetic: `build_tiny_adapter` writes
`adapter_config.json` and `adapter_model.safetensors` with `save_pretrained`, every LoRA matrix drawn from a seeded
normal distribution (peft's default initialisation zeroes B, which would make an adapter change nothing), and
`merged_model` loads the base model with the adapter merged into its weights by peft (`merge_and_unload`), the
reference for logits and `generate`. `python -m serving.testing.tiny_adapter BASE_DIR OUT_DIR` builds one by hand.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TinyAdapterSpec:
    """The adapter to build: its rank, scaling, targets and seed; the defaults change a tiny model's greedy output.

    `weight_std` is the spread of every A and B entry; `rank_pattern` and `alpha_pattern` are peft's per-module
    overrides (module name pattern -> rank or alpha)."""

    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] | str = ("q_proj", "v_proj")  # names, or one regex over full module names
    seed: int = 0
    weight_std: float = 0.2
    use_rslora: bool = False
    layers_to_transform: tuple[int, ...] | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    bias: str = "none"
    modules_to_save: tuple[str, ...] | None = None


def lora_config(spec: TinyAdapterSpec) -> Any:
    """peft's `LoraConfig` for `spec` (no dropout: inference)."""
    from peft import LoraConfig

    targets = spec.target_modules if isinstance(spec.target_modules, str) else list(spec.target_modules)
    return LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, target_modules=targets, lora_dropout=0.0, bias=spec.bias,
        use_rslora=spec.use_rslora, init_lora_weights=False,
        layers_to_transform=list(spec.layers_to_transform) if spec.layers_to_transform is not None else None,
        rank_pattern=dict(spec.rank_pattern), alpha_pattern=dict(spec.alpha_pattern),
        modules_to_save=list(spec.modules_to_save) if spec.modules_to_save else None,
        task_type="CAUSAL_LM")


def build_tiny_adapter(base_dir: str | Path, out_dir: str | Path, spec: TinyAdapterSpec | None = None) -> Path:
    """Write a LoRA adapter for the model in `base_dir` to `out_dir` with `save_pretrained`; returns `out_dir`."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    spec = spec or TinyAdapterSpec()
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(base, lora_config(spec))
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.normal_(0.0, spec.weight_std, generator=generator)
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    return out


def merged_model(base_dir: str | Path, adapter_dir: str | Path) -> Any:
    """The base model with the adapter merged into its weights by peft, float32, in eval mode."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().eval()


def main() -> None:
    """Command line: build an adapter for a tiny model."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--rank", type=int, default=TinyAdapterSpec.rank)
    parser.add_argument("--alpha", type=float, default=TinyAdapterSpec.alpha)
    parser.add_argument("--targets", default=",".join(TinyAdapterSpec.target_modules),
                        help="comma-separated module names")
    parser.add_argument("--seed", type=int, default=TinyAdapterSpec.seed)
    args = parser.parse_args()
    spec = TinyAdapterSpec(rank=args.rank, alpha=args.alpha, seed=args.seed,
                           target_modules=tuple(name.strip() for name in args.targets.split(",") if name.strip()))
    print(build_tiny_adapter(args.base_dir, args.out_dir, spec))


if __name__ == "__main__":
    main()
