"""LoRA adapters through the engine: logits and outputs equal peft's merged models, alone and in mixed batches, in
the lean forward and transformers' own; the prefix cache keyed by adapter; registration, errors, eviction, pins,
removal while running, and LORA_ADAPTERS at start-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import msgspec
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from engine_helpers import drain, engine_config, finished, request, token_ids
from servers import start_server
from serving.engine.engine import LLMEngine
from serving.engine.loader import LoadedModel, ModelLoadError, load_model
from serving.messages import AdapterResult, AdapterSpec, AdapterStatus, ErrorKind, Failed, GenerateRequest
from serving.testing.tiny_adapter import TinyAdapterSpec, build_tiny_adapter, merged_model
from serving.testing.tiny_model import TinyModelSpec, build_tiny_model

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SPECS = {
    "a": TinyAdapterSpec(rank=8, seed=1, rank_pattern={"v_proj": 4}),
    "b": TinyAdapterSpec(rank=16, target_modules=ALL, use_rslora=True, seed=2),
    # a regex over full names (the second layer only), per-module alpha
    "c": TinyAdapterSpec(rank=4, target_modules=r"model\.layers\.1\.(self_attn\.o_proj|mlp\.\w+_proj)", seed=3,
                         alpha_pattern={"down_proj": 32.0}),
}
PROMPTS = ("Hello world the model", "Deep neural network data token server request stream batch engine",
           "the a an of to")
LONG = " ".join(["the model was learning deep neural network data"] * 6)  # several KV cache blocks
LEAN = pytest.mark.parametrize("lean", [True, False], ids=["lean", "transformers"])


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> LoadedModel:
    """This module's own copy of the tiny model (it overrides the session's): transformers' forward installs the
    paged attention and the LoRA hooks on the model it serves, which other modules' `generate` references must not
    meet."""
    return load_model(engine_config(model_dir))


@pytest.fixture(scope="module")
def adapter_dirs(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three adapters of SPECS, and `a2`: adapter a's targets with other weights, on the first layer only."""
    root = tmp_path_factory.mktemp("adapters")
    dirs = {name: build_tiny_adapter(model_dir, root / name, spec) for name, spec in SPECS.items()}
    dirs["a2"] = build_tiny_adapter(model_dir, root / "a2", TinyAdapterSpec(rank=8, seed=11, layers_to_transform=(0,)))
    return dirs


@pytest.fixture(scope="module")
def references(model_dir: Path, adapter_dirs: dict[str, Path]) -> dict[str | None, Any]:
    """peft's merged model per adapter; None: the base model."""
    models: dict[str | None, Any] = {name: merged_model(model_dir, path) for name, path in adapter_dirs.items()}
    models[None] = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return models


def on(req: GenerateRequest, adapter: str | None, optional: bool = False) -> GenerateRequest:
    """The request on an adapter."""
    return msgspec.structs.replace(req, adapter=adapter, adapter_optional=optional)


def register(engine: LLMEngine, name: str, source: Path | str, **options: Any) -> AdapterResult:
    """Register an adapter as the worker does, stepping until its result comes."""
    result = engine.register_adapter(f"register-{name}", AdapterSpec(name, str(source), **options))
    for _ in range(2000):
        if result is not None:
            return result
        engine.step()
        result = next(iter(engine.adapter_results()), None)
    raise AssertionError("no AdapterResult")


@pytest.fixture
def lora_engine(make_engine: Callable[..., LLMEngine], adapter_dirs: dict[str, Path]) -> Callable[..., LLMEngine]:
    """An engine with adapters a, b and c registered (and loaded)."""

    def make(**overrides: object) -> LLMEngine:
        engine = make_engine(**overrides)
        for name in SPECS:
            assert register(engine, name, adapter_dirs[name]).status is AdapterStatus.OK
        return engine

    return make


def reference_greedy(model: Any, ids: list[int], new_tokens: int) -> list[int]:
    """`generate`'s greedy tokens."""
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens)
    return out[0, len(ids):].tolist()


def prompt_ids(engine: LLMEngine, prompt: str) -> list[int]:
    """The prompt's token ids as the engine makes them."""
    return list(engine.validator.prompt(request("ids", prompt)).ids)


@LEAN
@pytest.mark.parametrize("name", list(SPECS))
def test_prompt_logprobs_match_peft_merged_model(lora_engine, references, name, lean):
    engine = lora_engine(lean_forward=lean)
    prompt = PROMPTS[1]
    engine.add_request(on(request("r", prompt, 2, prefill_logprobs=True), name))
    prefill = finished(drain(engine)["r"]).prefill
    ids = [token.id for token in prefill]
    with torch.no_grad():
        logprobs = torch.log_softmax(references[name](torch.tensor([ids])).logits[0].float(), dim=-1)
    expected = logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    got = torch.tensor([token.logprob for token in prefill[1:]])
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)


def test_each_adapter_changes_the_greedy_output(references, model_dir):
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(model_dir)(PROMPTS[0]).input_ids
    base = reference_greedy(references[None], ids, 12)
    for name in SPECS:
        assert reference_greedy(references[name], ids, 12) != base, name


@pytest.fixture(scope="module")
def unpacked(model_dir: Path) -> LoadedModel:
    """The tiny model with plain linear layers: the lean forward calls q, k, v and gate, up one by one (as on GPUs)."""
    return load_model(engine_config(model_dir, packed_linear=False))


@pytest.mark.parametrize("forward", ["lean", "transformers", "lean-unpacked"])
def test_greedy_outputs_equal_merged_generate_alone_and_in_one_mixed_batch(lora_engine, references, unpacked,
                                                                          model_dir, adapter_dirs, forward):
    if forward == "lean-unpacked":
        engine = LLMEngine(unpacked, engine_config(model_dir))
        assert engine.runner.lean is not None and engine.runner.lean.layers[0].qkv is None
        for name in SPECS:
            assert register(engine, name, adapter_dirs[name]).status is AdapterStatus.OK
    else:
        engine = lora_engine(lean_forward=forward == "lean")
    cases = [(name, prompt) for name in (None, *SPECS) for prompt in PROMPTS]
    expected = {f"{name}-{i}": reference_greedy(references[name], prompt_ids(engine, prompt), 10)
                for name, prompt in cases for i in [PROMPTS.index(prompt)]}
    for name, prompt in cases[::3]:  # alone
        key = f"{name}-{PROMPTS.index(prompt)}"
        engine.add_request(on(request(key, prompt, 10, ignore_eos=True), name))
        assert token_ids(drain(engine)[key]) == expected[key], key
    for name, prompt in cases:  # every adapter, the base model and every prompt in one batch
        key = f"{name}-{PROMPTS.index(prompt)}"
        engine.add_request(on(request(key, prompt, 10, ignore_eos=True), name))
    events = drain(engine)
    assert {key: token_ids(events[key]) for key in expected} == expected


@LEAN
def test_seeded_sampling_is_the_same_alone_and_mixed(lora_engine, lean):
    engine = lora_engine(lean_forward=lean)
    sampled = dict(do_sample=True, temperature=0.9, top_k=50, seed=1234)
    alone = {}
    for name in ("a", "b"):
        engine.add_request(on(request(name, PROMPTS[0], 10, ignore_eos=True, **sampled), name))
        alone[name] = token_ids(drain(engine)[name])
    for name in (None, "a", "c", "b"):
        engine.add_request(on(request(str(name), PROMPTS[0], 10, ignore_eos=True, **sampled), name))
    mixed = drain(engine)
    assert token_ids(mixed["a"]) == alone["a"] and token_ids(mixed["b"]) == alone["b"]
    assert alone["a"] != alone["b"]


def _hits(engine: LLMEngine, req: GenerateRequest) -> tuple[int, list[int]]:
    """Run one request alone: the prefix-cache hit tokens it added and its tokens."""
    before = engine.health("h").prefix_hit_tokens
    engine.add_request(req)
    tokens = token_ids(drain(engine)[req.request_id])
    return engine.health("h").prefix_hit_tokens - before, tokens


@LEAN
def test_prefix_cache_hits_within_an_adapter_only(lora_engine, references, adapter_dirs, lean):
    engine = lora_engine(lean_forward=lean)
    ids = prompt_ids(engine, LONG)
    assert len(ids) > 40
    assert _hits(engine, on(request("a1", LONG, 6, ignore_eos=True), "a"))[0] == 0
    hits, tokens = _hits(engine, on(request("a2", LONG, 6, ignore_eos=True), "a"))
    assert hits >= 32 and tokens == reference_greedy(references["a"], ids, 6)
    assert _hits(engine, on(request("b1", LONG, 6, ignore_eos=True), "b"))[0] == 0
    assert _hits(engine, request("base1", LONG, 6, ignore_eos=True))[0] == 0
    assert _hits(engine, request("base2", LONG, 6, ignore_eos=True))[0] >= 32
    # the same name registered again with other weights never meets the old blocks
    assert engine.unregister_adapter("u", "a").status is AdapterStatus.OK
    assert register(engine, "a", adapter_dirs["a2"]).status is AdapterStatus.OK
    hits, tokens = _hits(engine, on(request("a3", LONG, 6, ignore_eos=True), "a"))
    assert hits == 0 and tokens == reference_greedy(references["a2"], ids, 6)


def test_unknown_adapter_fails_naming_it_and_optional_names_mean_the_base_model(make_engine, adapter_dirs,
                                                                                 references):
    engine = make_engine()
    ids = prompt_ids(engine, PROMPTS[0])
    events = engine.add_request(on(request("opt", PROMPTS[0], 8, ignore_eos=True), "gpt-4o", optional=True))
    assert not isinstance(events[0], Failed)
    assert token_ids(drain(engine)["opt"]) == reference_greedy(references[None], ids, 8)
    [failed] = engine.add_request(on(request("x", PROMPTS[0], 8), "nope"))
    assert isinstance(failed, Failed) and failed.kind is ErrorKind.ADAPTER_NOT_FOUND and "'nope'" in failed.message
    assert register(engine, "a", adapter_dirs["a"]).status is AdapterStatus.OK
    [failed] = engine.add_request(on(request("y", PROMPTS[0], 8), "gpt-4o", optional=True))
    assert isinstance(failed, Failed) and failed.kind is ErrorKind.ADAPTER_NOT_FOUND and "'gpt-4o'" in failed.message


def _edited(source: Path, out: Path, config: dict[str, Any] | None = None,
            weights: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> Path:
    """A copy of the adapter in `source` with config keys replaced and its tensors changed."""
    out.mkdir()
    original = json.loads((source / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**original, **(config or {})}))
    tensors = load_file(source / "adapter_model.safetensors")
    save_file(weights(tensors) if weights else tensors, out / "adapter_model.safetensors")
    return out


def test_bad_adapters_are_refused_with_one_line_naming_them(make_engine, model_dir, adapter_dirs, tmp_path):
    engine = make_engine(max_lora_rank=8)
    a = adapter_dirs["a"]
    missing_weights, missing_config = tmp_path / "no-weights", tmp_path / "no-config"
    missing_weights.mkdir()
    missing_config.mkdir()
    (missing_weights / "adapter_config.json").write_text((a / "adapter_config.json").read_text())
    (missing_config / "adapter_model.safetensors").write_bytes((a / "adapter_model.safetensors").read_bytes())
    other_base = build_tiny_model(tmp_path / "wide", TinyModelSpec(hidden_size=96, num_attention_heads=4))
    cases = {
        "no-dir": (tmp_path / "nowhere", AdapterStatus.NOT_FOUND, "no such directory"),
        "no-config": (missing_config, AdapterStatus.LOAD_FAILED, "adapter_config.json is missing"),
        "no-weights": (missing_weights, AdapterStatus.LOAD_FAILED, "adapter_model.safetensors is missing"),
        "rank": (adapter_dirs["b"], AdapterStatus.LOAD_FAILED, "rank 16 of model.layers.0."),
        "shapes": (build_tiny_adapter(other_base, tmp_path / "wide-adapter"), AdapterStatus.LOAD_FAILED,
                   "do not fit the base model"),
        "lm-head": (build_tiny_adapter(model_dir, tmp_path / "lm",
                                       TinyAdapterSpec(target_modules=("q_proj", "lm_head"))),
                    AdapterStatus.LOAD_FAILED, "module lm_head is not supported"),
        "embed": (build_tiny_adapter(model_dir, tmp_path / "em", TinyAdapterSpec(target_modules=("embed_tokens",))),
                  AdapterStatus.LOAD_FAILED, "module model.embed_tokens is not supported"),
        "saved": (_edited(a, tmp_path / "ms", {"modules_to_save": ["lm_head"]}), AdapterStatus.LOAD_FAILED,
                  "modules_to_save"),
        "dora": (_edited(a, tmp_path / "dora", {"use_dora": True}), AdapterStatus.LOAD_FAILED, "DoRA"),
        "bias": (_edited(a, tmp_path / "bias", {"bias": "all"}), AdapterStatus.LOAD_FAILED, "bias='all'"),
        "half": (_edited(a, tmp_path / "half", weights=lambda t: {k: v for k, v in t.items() if "lora_B" not in k}),
                 AdapterStatus.LOAD_FAILED, "without its pair"),
        "bad-name!": (a, AdapterStatus.BAD_REQUEST, "is not valid"),
        "bad-hub-id": ("owner/not a repo", AdapterStatus.NOT_FOUND, "cannot download owner/not a repo from the hub"),
    }
    for name, (source, status, words) in cases.items():
        result = register(engine, name, source)
        assert result.status is status, (name, result)
        assert repr(name) in result.message and words in result.message and "\n" not in result.message, result
        if name == "rank":
            assert result.message.endswith("is over MAX_LORA_RANK=8")
    assert engine.info().adapters == ()
    assert register(engine, "a", a).status is AdapterStatus.OK
    taken = register(engine, "a", adapter_dirs["c"])
    assert taken.status is AdapterStatus.BAD_REQUEST and "already registered" in taken.message
    assert register(engine, "a", a).status is AdapterStatus.OK  # the same again: nothing changes
    assert engine.unregister_adapter("u", "nope").status is AdapterStatus.NOT_FOUND
    # fan_in_fan_out describes Conv1D base layers only: peft ignores it for linear ones, and so does the engine
    flipped = _edited(a, tmp_path / "fan", {"fan_in_fan_out": True})
    assert register(engine, "fan", flipped).status is AdapterStatus.OK


def test_info_lists_the_adapters(lora_engine):
    engine = lora_engine(max_lora_adapters=4, max_lora_rank=32)
    info = engine.info()
    assert (info.max_lora_adapters, info.max_lora_rank) == (4, 32)
    by_name = {adapter.name: adapter for adapter in info.adapters}
    assert list(by_name) == ["a", "b", "c"]
    assert (by_name["a"].rank, by_name["a"].target_modules) == (8, ("q_proj", "v_proj"))
    assert by_name["b"].target_modules == ALL and by_name["c"].target_modules == ("o_proj", "gate_proj", "up_proj",
                                                                                  "down_proj")
    assert all(adapter.resident and not adapter.pinned for adapter in info.adapters)


def test_eviction_reloads_on_the_next_request(make_engine, adapter_dirs, references):
    engine = make_engine(max_lora_adapters=1)
    ids = prompt_ids(engine, PROMPTS[0])
    assert register(engine, "a", adapter_dirs["a"]).status is AdapterStatus.OK
    assert register(engine, "b", adapter_dirs["b"]).status is AdapterStatus.OK  # evicts a
    assert {a.name: a.resident for a in engine.info().adapters} == {"a": False, "b": True}
    for name in ("a", "b", "a"):
        engine.add_request(on(request(name, PROMPTS[0], 8, ignore_eos=True), name))
        assert token_ids(drain(engine)[name]) == reference_greedy(references[name], ids, 8)
        assert {a.name: a.resident for a in engine.info().adapters}[name]
    # both at once with one slot: the second waits for the first to end, then loads
    engine.add_request(on(request("first", PROMPTS[0], 8, ignore_eos=True), "b"))
    engine.add_request(on(request("second", PROMPTS[0], 8, ignore_eos=True), "a"))
    events = drain(engine)
    assert token_ids(events["first"]) == reference_greedy(references["b"], ids, 8)
    assert token_ids(events["second"]) == reference_greedy(references["a"], ids, 8)


def test_pins_and_requests_in_flight_leave_no_room(make_engine, adapter_dirs):
    engine = make_engine(max_lora_adapters=1)
    assert register(engine, "a", adapter_dirs["a"]).status is AdapterStatus.OK
    engine.add_request(on(request("r", PROMPTS[0], 20, ignore_eos=True), "a"))
    engine.step()
    busy = register(engine, "b", adapter_dirs["b"])
    assert busy.status is AdapterStatus.NO_ROOM and "'b'" in busy.message
    drain(engine)
    pinned = register(engine, "p", adapter_dirs["c"], pinned=True)  # evicts a, which is idle now
    assert pinned.status is AdapterStatus.OK
    assert register(engine, "b", adapter_dirs["b"]).status is AdapterStatus.NO_ROOM
    assert register(engine, "b", adapter_dirs["b"], preload=False).status is AdapterStatus.OK  # checked, not loaded
    [failed] = engine.add_request(on(request("x", PROMPTS[0], 4), "b"))
    assert isinstance(failed, Failed) and failed.kind is ErrorKind.OVERLOADED and "pinned" in failed.message
    assert {a.name: (a.resident, a.pinned) for a in engine.info().adapters} == {
        "a": (False, False), "p": (True, True), "b": (False, False)}


@LEAN
def test_unregister_while_running_finishes_then_frees(lora_engine, references, lean):
    engine = lora_engine(lean_forward=lean)
    ids = prompt_ids(engine, PROMPTS[0])
    adapter = engine.adapters.registry.get("a")
    engine.add_request(on(request("r", PROMPTS[0], 10, ignore_eos=True), "a"))
    early = [event for _ in range(3) for event in engine.step()]
    assert engine.unregister_adapter("u", "a").status is AdapterStatus.OK
    [failed] = engine.add_request(on(request("late", PROMPTS[0], 4), "a"))
    assert isinstance(failed, Failed) and failed.kind is ErrorKind.ADAPTER_NOT_FOUND
    assert [a.name for a in engine.info().adapters] == ["b", "c"]
    assert adapter is not None and adapter.slot is not None
    events = drain(engine)
    assert token_ids(early + events["r"]) == reference_greedy(references["a"], ids, 10)
    assert adapter.slot is None and adapter.in_use == 0


def test_a_request_waits_outside_the_queue_while_its_adapter_loads(make_engine, adapter_dirs, references):
    engine = make_engine()
    assert register(engine, "a", adapter_dirs["a"], preload=False).status is AdapterStatus.OK
    assert not engine.info().adapters[0].resident
    engine.add_request(on(request("r", PROMPTS[0], 6, ignore_eos=True), "a"))
    engine.add_request(request("base", PROMPTS[0], 6, ignore_eos=True))
    assert len(engine.scheduler.waiting) == 1 and engine.stats()[1] == 2
    events = drain(engine)
    ids = prompt_ids(engine, PROMPTS[0])
    assert token_ids(events["r"]) == reference_greedy(references["a"], ids, 6)
    assert token_ids(events["base"]) == reference_greedy(references[None], ids, 6)
    assert engine.info().adapters[0].resident


def test_lora_adapters_at_start(model_dir, adapter_dirs, references):
    config = engine_config(model_dir, lora_adapters=(AdapterSpec("a", str(adapter_dirs["a"])),
                                                     AdapterSpec("c", str(adapter_dirs["c"]))))
    engine = LLMEngine.from_config(config)
    assert [(a.name, a.resident) for a in engine.info().adapters] == [("a", True), ("c", True)]
    engine.add_request(on(request("r", PROMPTS[0], 6, ignore_eos=True), "c"))
    assert token_ids(drain(engine)["r"]) == reference_greedy(references["c"], prompt_ids(engine, PROMPTS[0]), 6)
    bad = engine_config(model_dir, lora_adapters=(AdapterSpec("a", str(adapter_dirs["a"])),
                                                  AdapterSpec("gone", "/nonexistent/adapter")))
    with pytest.raises(ModelLoadError,
                       match=r"^LORA_ADAPTERS: adapter 'gone': no such directory /nonexistent/adapter$"):
        LLMEngine.from_config(bad)


def test_a_bad_adapter_in_lora_adapters_stops_the_server_with_one_line(model_dir, adapter_dirs, tmp_path):
    proc = start_server(model_dir, tmp_path, LORA_ADAPTERS=f"good={adapter_dirs['a']},broken={tmp_path}")
    try:
        assert proc.process.wait(120) != 0
    finally:
        proc.stop()
    assert "LORA_ADAPTERS: adapter 'broken': adapter_config.json is missing in" in proc.log()


def test_an_adapter_whose_files_went_away_fails_its_requests_alone(make_engine, adapter_dirs, tmp_path):
    engine = make_engine()
    copy = _edited(adapter_dirs["a"], tmp_path / "copy")
    assert register(engine, "gone", copy, preload=False).status is AdapterStatus.OK
    (copy / "adapter_model.safetensors").unlink()
    engine.add_request(on(request("r", PROMPTS[0], 4), "gone"))
    engine.add_request(request("base", PROMPTS[0], 4))
    events = drain(engine)
    failed = events["r"][-1]
    assert isinstance(failed, Failed) and failed.kind is ErrorKind.GENERATION and "'gone'" in failed.message
    assert len(token_ids(events["base"])) == 4
    engine.add_request(on(request("again", PROMPTS[0], 4), "gone"))  # the engine still serves; it tries again
    assert isinstance(drain(engine)["again"][-1], Failed)


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
@pytest.mark.parametrize("lean", [True, False], ids=["lean", "transformers"])
def test_mistral_and_qwen2_layers(family, lean, tmp_path):
    from transformers import MistralConfig, Qwen2Config

    from serving.engine.adapters import AdapterManager
    from serving.engine.batch import Chunk
    from serving.engine.block_manager import BlockManager
    from serving.engine.model_runner import ModelRunner
    from serving.engine.packed_linear import pack_linears
    from serving.engine.sequence import Sequence
    from serving.engine.stopping import StopCriteria
    from serving.messages import SamplingParams

    sizes = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=300, max_position_embeddings=256)
    config = MistralConfig(**sizes, sliding_window=None) if family == "mistral" else \
        Qwen2Config(**sizes, use_sliding_window=False)  # Qwen2: q/k/v with biases
    torch.manual_seed(0)
    base_dir = tmp_path / family
    AutoModelForCausalLM.from_config(config).save_pretrained(base_dir)
    adapter = build_tiny_adapter(base_dir, tmp_path / "adapter", TinyAdapterSpec(rank=8, target_modules=ALL, seed=5))
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    pack_linears(model)
    runner = ModelRunner(model, pad_id=0, blocks=BlockManager(num_blocks=32, block_size=16), lean=lean)
    assert (runner.lean is not None) == lean
    manager = AdapterManager(engine_config(base_dir), runner)
    manager.register_now(AdapterSpec("x", str(adapter)))
    prompts = [list(range(3, 40)), list(range(50, 70))]
    stop = StopCriteria(max_new_tokens=4, eos_ids=frozenset())
    sequences = [Sequence.create(str(i), p, SamplingParams(), stop) for i, p in enumerate(prompts)]
    sequences[0].adapter = manager.registry.get("x")  # the second stays on the base model, in the same step
    chunks = [Chunk(s, 0, len(s.token_ids)) for s in sequences]
    for s in sequences:
        s.block_table, _ = runner.cache.blocks.allocate(s.token_ids, use_cache=False)
    with torch.inference_mode():
        batch = runner.prepare(chunks)
        logits = runner.run(batch)
        reference = AutoModelForCausalLM.from_pretrained(base_dir).eval()
        expected = {"0": merged_model(base_dir, adapter)(torch.tensor([prompts[0]])).logits[0, -1],
                    "1": reference(torch.tensor([prompts[1]])).logits[0, -1]}
        assert (expected["0"] - reference(torch.tensor([prompts[0]])).logits[0, -1]).abs().max() > 0.1
    for chunk, row in zip(batch.chunks, batch.sample_rows):
        torch.testing.assert_close(logits[row], expected[chunk.sequence.request_id], atol=1e-4, rtol=1e-4)
