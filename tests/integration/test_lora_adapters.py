"""LoRA adapters end to end: a real server on the tiny model with adapters built locally by peft, its greedy output
held to peft's merged model, alone and mixed in one batch; real clients choosing adapters (openai, huggingface_hub,
boto3 through the local SageMaker runtime); registering and unregistering over HTTP while other requests stream;
the errors; and two engine replicas."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import requests

from servers import ServerProcess, running_server

pytestmark = pytest.mark.integration

PROMPT = "the quick brown fox"
NEW_TOKENS = 8
MAX_RANK = 16
# name -> (rank, target modules, seed): every adapter changes the tiny model's greedy output
ADAPTERS = {
    "sql": (8, ("q_proj", "v_proj"), 1),
    "chat": (16, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), 2),
    "poet": (4, ("o_proj", "down_proj"), 3),
}


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The adapters of ADAPTERS, and `wide` with a rank over MAX_RANK, built by peft for the tiny model."""
    from serving.testing.tiny_adapter import TinyAdapterSpec, build_tiny_adapter

    root = tmp_path_factory.mktemp("adapters")
    dirs = {name: build_tiny_adapter(tiny_model_dir, root / name, TinyAdapterSpec(rank=rank, target_modules=targets,
                                                                                   seed=seed))
            for name, (rank, targets, seed) in ADAPTERS.items()}
    dirs["wide"] = build_tiny_adapter(tiny_model_dir, root / "wide", TinyAdapterSpec(rank=2 * MAX_RANK, seed=4))
    return dirs


@pytest.fixture(scope="module")
def expected(tiny_model_dir: Path, adapter_dirs: dict[str, Path]) -> dict[str | None, list[int]]:
    """The greedy token ids of PROMPT for the base model (None) and each adapter, by peft's merged model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serving.testing.tiny_adapter import merged_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    input_ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    models = {None: AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()}
    models.update((name, merged_model(tiny_model_dir, adapter_dirs[name])) for name in ADAPTERS)
    ids = {}
    with torch.no_grad():
        for name, model in models.items():
            output = model.generate(input_ids, max_new_tokens=NEW_TOKENS, do_sample=False)
            ids[name] = output[0, input_ids.shape[1]:].tolist()
    assert len({tuple(value) for value in ids.values()}) == len(ids), "every adapter changes the greedy output"
    return ids


@pytest.fixture(scope="module")
def lora_server(tiny_model_dir: Path, adapter_dirs: dict[str, Path],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with `sql` and `chat` declared in LORA_ADAPTERS (`poet` is registered by the tests)."""
    declared = ",".join(f"{name}={adapter_dirs[name]}" for name in ("sql", "chat"))
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("lora-server"), LORA_ADAPTERS=declared,
                        MAX_LORA_RANK=str(MAX_RANK), MAX_TOTAL_TOKENS="256") as proc:
        yield proc


def generate_ids(url: str, adapter: str | None, new_tokens: int = NEW_TOKENS) -> list[int]:
    """The greedy token ids of PROMPT through `/generate`, on `adapter`."""
    parameters = {"max_new_tokens": new_tokens, "details": True, "adapter_id": adapter}
    response = requests.post(url + "/generate", json={"inputs": PROMPT, "parameters": parameters}, timeout=120)
    assert response.status_code == 200, response.text
    return [token["id"] for token in response.json()["details"]["tokens"]]


def register(url: str, name: str, source: Path | str, **fields: object) -> requests.Response:
    """SageMaker's `POST /adapters`."""
    return requests.post(url + "/adapters", json={"name": name, "src": str(source), **fields}, timeout=300)


def stream_tokens(url: str, adapter: str | None, new_tokens: int, started: threading.Event) -> list[dict]:
    """The events of a `/generate_stream` on `adapter`; `started` is set at its first token."""
    parameters = {"max_new_tokens": new_tokens, "adapter_id": adapter}
    events = []
    with requests.post(url + "/generate_stream", json={"inputs": PROMPT, "parameters": parameters}, stream=True,
                       timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith(b"data:"):
                events.append(json.loads(line[len(b"data:"):]))
                started.set()
    return events


def test_each_adapter_alone_matches_peft(lora_server, expected):
    for name in (None, "sql", "chat"):
        assert generate_ids(lora_server.url, name) == expected[name], name


def test_adapters_and_the_base_in_one_batch_match_peft(lora_server, expected):
    names = [None, "sql", "chat"] * 4
    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda name: generate_ids(lora_server.url, name), names))
    assert results == [expected[name] for name in names]


def test_openai_sdk_chooses_the_adapter_by_model(lora_server, expected):
    import openai

    client = openai.OpenAI(base_url=lora_server.url + "/v1", api_key="-")
    by_generate = requests.post(lora_server.url + "/generate", timeout=120, json={
        "inputs": PROMPT, "parameters": {"max_new_tokens": NEW_TOKENS, "adapter_id": "sql"}}).json()
    completion = client.completions.create(model="sql", prompt=PROMPT, max_tokens=NEW_TOKENS, temperature=0)
    assert completion.choices[0].text == by_generate["generated_text"]
    assert {"sql", "chat"} <= {model.id for model in client.models.list()}
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="gpt-4o", prompt=PROMPT, max_tokens=2)
    assert caught.value.code == "model_not_found" and "gpt-4o" in caught.value.message


def test_huggingface_hub_chooses_the_adapter_by_adapter_id(lora_server, expected):
    from huggingface_hub import InferenceClient

    client = InferenceClient(lora_server.url)
    output = client.text_generation(PROMPT, adapter_id="chat", max_new_tokens=NEW_TOKENS, details=True)
    assert [token.id for token in output.details.tokens] == expected["chat"]
    with pytest.raises(Exception, match="nope"):
        client.text_generation(PROMPT, adapter_id="nope", max_new_tokens=2)


def test_boto3_through_the_local_runtime_with_the_adapter_header(lora_server, expected, tmp_path, monkeypatch):
    import boto3

    from serving.sagemaker_local import RuntimeServer

    runtime = RuntimeServer(("127.0.0.1", 0), lora_server.url, {}, {"ic-sql": "sql"})
    thread = threading.Thread(target=runtime.serve_forever, daemon=True)
    thread.start()
    try:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{runtime.server_address[1]}")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
        client = boto3.client("sagemaker-runtime")
        body = {"inputs": PROMPT, "parameters": {"max_new_tokens": NEW_TOKENS, "details": True}}
        answers = {}
        for component in ("ic-sql", "ic-base"):
            response = client.invoke_endpoint(EndpointName="llm", InferenceComponentName=component,
                                              ContentType="application/json", Body=json.dumps(body))
            answers[component] = [token["id"] for token in json.loads(response["Body"].read())[0]["details"]["tokens"]]
    finally:
        runtime.shutdown()
        runtime.server_close()
        thread.join(5)
    assert answers == {"ic-sql": expected["sql"], "ic-base": expected[None]}


def test_register_invoke_unregister_while_others_stream(lora_server, adapter_dirs, expected):
    started = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        streams = [pool.submit(stream_tokens, lora_server.url, name, 200, started) for name in (None, "sql")]
        assert started.wait(60)
        response = register(lora_server.url, "poet", adapter_dirs["poet"])
        assert response.status_code == 200 and response.text == "Adapter poet registered"
        assert generate_ids(lora_server.url, "poet") == expected["poet"]
        assert any(card["id"] == "poet" and card["parent"] == requests.get(lora_server.url + "/info").json()[
            "model_id"] for card in requests.get(lora_server.url + "/v1/models").json()["data"])
        response = requests.delete(lora_server.url + "/adapters/poet", timeout=60)
        assert response.status_code == 200 and response.text == "Adapter poet unregistered"
        for stream in streams:
            events = stream.result(timeout=300)
            assert events[-1]["generated_text"] is not None and "error" not in events[-1]
    assert "poet" not in [adapter["name"] for adapter in requests.get(lora_server.url + "/adapters").json()]
    response = requests.post(lora_server.url + "/generate", json={"inputs": PROMPT, "parameters": {
        "adapter_id": "poet", "max_new_tokens": 2}}, timeout=60)
    assert response.status_code == 422 and "poet" in response.json()["error"]


def test_unloading_during_a_stream_lets_it_finish(lora_server, adapter_dirs):
    assert register(lora_server.url, "poet2", adapter_dirs["poet"]).status_code == 200
    started = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(stream_tokens, lora_server.url, "poet2", 120, started)
        assert started.wait(60)
        assert requests.delete(lora_server.url + "/adapters/poet2", timeout=300).status_code == 200
        events = stream.result(timeout=300)
    assert all("error" not in event for event in events) and events[-1]["generated_text"] is not None


@pytest.mark.parametrize(("source", "status"), [("/nowhere/adapter", 404), ("wide", 424)])
def test_a_bad_source_or_a_rank_over_the_limit(lora_server, adapter_dirs, source, status):
    response = register(lora_server.url, "bad", adapter_dirs.get(source, source))
    assert response.status_code == status and "bad" in response.json()["error"]
    assert "bad" not in [adapter["name"] for adapter in requests.get(lora_server.url + "/adapters").json()]


def test_unknown_adapters_on_both_families(lora_server):
    response = requests.post(lora_server.url + "/generate", json={"inputs": PROMPT, "parameters": {
        "adapter_id": "nope"}}, timeout=60)
    assert response.status_code == 422 and response.json()["error_type"] == "validation"
    assert "nope" in response.json()["error"]
    response = requests.post(lora_server.url + "/v1/chat/completions", json={
        "model": "nope", "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert requests.delete(lora_server.url + "/adapters/nope", timeout=60).status_code == 404


@pytest.fixture(scope="module")
def two_replicas(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two engine replicas with room for one resident adapter each."""
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("replicas"), ENGINE_REPLICAS="2",
                        MAX_LORA_ADAPTERS="1", MAX_LORA_RANK=str(MAX_RANK), MAX_TOTAL_TOKENS="256") as proc:
        yield proc


def test_a_registered_adapter_serves_on_both_replicas(two_replicas, adapter_dirs, expected):
    response = register(two_replicas.url, "sql", adapter_dirs["sql"], pin=True)
    assert response.status_code == 200, response.text
    names = ["sql", None] * 6
    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda name: generate_ids(two_replicas.url, name), names))
    assert results == [expected[name] for name in names]
    response = register(two_replicas.url, "chat", adapter_dirs["chat"], pin=True)
    assert response.status_code == 507, "the one slot is pinned"
    assert [adapter["name"] for adapter in requests.get(two_replicas.url + "/adapters").json()] == ["sql"]
