"""LoRA adapters over HTTP with the scripted engine: choosing one per request on every route family, the
`model` rule, SageMaker's header, registering and unregistering (SageMaker's and vLLM's routes, their statuses),
the listings, the metric, the access log and the API key."""

from __future__ import annotations

import json
import logging

import pytest
from api_helpers import FakeEngineClient, make_config, sse_events

from serving.api.app import create_app
from serving.api.metrics import Metrics
from serving.api.protocol.adapter import base_model_names, by_model
from serving.messages import AdapterSpec, AdapterStatus

BASE = "test-org/tiny-model"  # the scripted engine's model id
CHAT = {"messages": [{"role": "user", "content": "a b"}], "max_tokens": 2}
GENERATE = {"inputs": "a b", "parameters": {"max_new_tokens": 2, "adapter_id": "sql"}}


@pytest.fixture
def with_sql(engine: FakeEngineClient) -> FakeEngineClient:
    """The scripted engine with the adapter `sql` registered."""
    engine.register_adapter(AdapterSpec(name="sql", source="/adapters/sql"))
    engine.adapter_calls.clear()
    return engine


def last_request(engine: FakeEngineClient):
    """The last engine request the app sent."""
    return engine.requests[-1]


@pytest.mark.parametrize("path", ["/generate", "/", "/invocations"])
def test_adapter_id_chooses_the_adapter_strictly(http, with_sql, path):
    response = http.post(path, json=GENERATE)
    assert response.status_code == 200, response.data
    request = last_request(with_sql)
    assert (request.adapter, request.adapter_optional) == ("sql", False)


def test_adapter_id_on_the_stream(http, with_sql):
    events = sse_events(http.post("/generate_stream", json=GENERATE).data)
    assert events[-1]["generated_text"] == "a b"
    assert last_request(with_sql).adapter == "sql"


@pytest.mark.parametrize("parameters", [{}, {"adapter_id": None}, {"adapter_id": ""}])
def test_no_adapter_id_is_the_base_model(http, engine, parameters):
    assert http.post("/generate", json={"inputs": "a", "parameters": parameters}).status_code == 200
    assert last_request(engine).adapter is None


@pytest.mark.parametrize("path", ["/generate", "/"])
def test_an_unknown_adapter_id_is_tgis_422_naming_it(http, engine, path):
    response = http.post(path, json={**GENERATE, "parameters": {"adapter_id": "nope"}})
    assert response.status_code == 422
    assert response.json["error_type"] == "validation" and "`nope`" in response.json["error"]


def test_an_unknown_adapter_id_on_the_stream_is_its_error_event(http, engine):
    events = sse_events(http.post("/generate_stream", json={**GENERATE, "parameters": {"adapter_id": "x"}}).data)
    assert events == [{"error": "The model `x` does not exist.", "error_type": "validation"}]


@pytest.mark.parametrize("model", [None, "tgi", BASE])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_base_model_names_mean_the_base(http, with_sql, model, path):
    body = dict(CHAT) if path.endswith("chat/completions") else {"prompt": "a b", "max_tokens": 2}
    if model is not None:
        body["model"] = model
    assert http.post(path, json=body).status_code == 200
    assert last_request(with_sql).adapter is None


def test_a_directorys_last_name_means_the_base_too():
    assert base_model_names("/opt/ml/model/llama") == {"tgi", "/opt/ml/model/llama", "llama"}
    assert by_model("llama", "/opt/ml/model/llama").name is None
    assert by_model("llama", "org/other").optional


def test_any_model_means_the_base_while_no_adapter_is_registered(http, engine):
    response = http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
    assert response.status_code == 200 and response.json["model"] == "gpt-4o"
    request = last_request(engine)
    assert (request.adapter, request.adapter_optional) == ("gpt-4o", True)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_model_chooses_a_registered_adapter(http, with_sql, path):
    body = {**CHAT, "model": "sql"} if path.endswith("chat/completions") else {"prompt": "a", "model": "sql"}
    assert http.post(path, json=body).status_code == 200
    assert last_request(with_sql).adapter == "sql"


@pytest.mark.parametrize("stream", [False, True])
def test_an_unknown_model_with_adapters_is_openais_404(http, with_sql, stream):
    response = http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o", "stream": stream})
    assert response.status_code == 404
    error = response.json["error"]
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    assert "`gpt-4o`" in error["message"]


def test_sagemakers_header_overrides_the_body_strictly(http, with_sql):
    headers = {"X-Amzn-SageMaker-Adapter-Identifier": "sql"}
    assert http.post("/invocations", json={**CHAT, "model": "tgi"}, headers=headers).status_code == 200
    assert (last_request(with_sql).adapter, last_request(with_sql).adapter_optional) == ("sql", False)
    body = {"inputs": "a", "parameters": {"adapter_id": "other"}}
    assert http.post("/invocations", json=body, headers=headers).status_code == 200
    assert last_request(with_sql).adapter == "sql"


def test_an_unknown_adapter_header_is_refused_even_without_adapters(http, engine):
    headers = {"X-Amzn-SageMaker-Adapter-Identifier": "gone"}
    response = http.post("/invocations", json={"inputs": "a"}, headers=headers)
    assert response.status_code == 422 and "`gone`" in response.json["error"]
    response = http.post("/invocations", json=CHAT, headers=headers)
    assert response.status_code == 404 and response.json["error"]["code"] == "model_not_found"


def test_register_with_json(http, engine):
    response = http.post("/adapters", json={"name": "sql", "src": "/opt/ml/adapters/sql", "pin": True})
    assert response.status_code == 200 and response.content_type == "text/plain; charset=utf-8"
    assert response.get_data(as_text=True) == "Adapter sql registered"
    assert engine.adapter_calls == [AdapterSpec(name="sql", source="/opt/ml/adapters/sql", preload=True,
                                                pinned=True)]


def test_register_with_query_parameters_and_an_alias(http, engine):
    response = http.post("/adapters?name=sql&src=/d/sql&preload=false", data=b"",
                         headers={"X-Amzn-SageMaker-Adapter-Alias": "SQL writer"})
    assert response.status_code == 200 and response.get_data(as_text=True) == "Adapter SQL writer registered"
    assert engine.adapter_calls == [AdapterSpec(name="sql", source="/d/sql", preload=False, pinned=False)]


@pytest.mark.parametrize("request_kwargs", [
    {"json": {"name": "sql"}},
    {"json": {"src": "/d"}},
    {"json": ["sql", "/d"]},
    {"json": {"name": " ", "src": "/d"}},
    {"json": {"name": "tgi", "src": "/d"}},
    {"json": {"name": BASE, "src": "/d"}},
    {"json": {"name": "sql", "src": "/d", "pin": "maybe"}},
    {"data": b"", "query_string": {"name": "sql"}},
    {"data": b"", "query_string": {"name": "sql", "src": "/d", "pin": "maybe"}},
])
def test_a_bad_registration_is_400(http, engine, request_kwargs):
    response = http.post("/adapters", **request_kwargs)
    assert response.status_code == 400, response.data
    assert engine.adapter_calls == []


@pytest.mark.parametrize(("status", "code"), [(AdapterStatus.BAD_REQUEST, 400), (AdapterStatus.NOT_FOUND, 404),
                                              (AdapterStatus.LOAD_FAILED, 424), (AdapterStatus.NO_ROOM, 507)])
def test_the_engines_refusal_has_sagemakers_status(http, engine, status, code):
    engine.adapter_status = status
    response = http.post("/adapters", json={"name": "sql", "src": "/d"})
    assert response.status_code == code
    assert response.json["error"] == f"scripted {status.value}"
    assert http.get("/adapters").json == []


def test_unregister(http, with_sql):
    response = http.delete("/adapters/sql", headers={"X-Amzn-SageMaker-Adapter-Alias": "SQL writer"})
    assert response.status_code == 200 and response.get_data(as_text=True) == "Adapter SQL writer unregistered"
    assert with_sql.adapters == {}
    response = http.delete("/adapters/sql")
    assert response.status_code == 404 and "sql" in response.json["error"]


def test_listings_show_the_current_adapters(http, engine):
    assert http.get("/adapters").json == []
    assert http.post("/adapters", json={"name": "sql", "src": "/d/sql"}).status_code == 200
    [listed] = http.get("/adapters").json
    assert listed == {"name": "sql", "src": "/d/sql", "rank": 8, "target_modules": ["q_proj", "v_proj"],
                      "pinned": False, "resident": True}
    info = http.get("/info").json
    assert info["lora_adapters"] == [listed] and info["max_lora_adapters"] == 4 and info["max_lora_rank"] == 64
    models = http.get("/v1/models").json["data"]
    assert [model["id"] for model in models] == [BASE, "sql"]
    assert models[1] == {"id": "sql", "object": "model", "created": 0, "owned_by": BASE, "root": "/d/sql",
                         "parent": BASE}
    assert http.get("/v1/models/sql").json == models[1]
    assert http.get("/v1/models/other").status_code == 404
    assert engine.info_refreshes >= 4, "every listing asks the engine for the current set"


def test_vllms_load_and_unload(http, engine):
    response = http.post("/v1/load_lora_adapter", json={"lora_name": "sql", "lora_path": "/d/sql"})
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "Success: LoRA adapter 'sql' added successfully."
    assert engine.adapter_calls == [AdapterSpec(name="sql", source="/d/sql")]
    response = http.post("/v1/unload_lora_adapter", json={"lora_name": "sql"})
    assert response.get_data(as_text=True) == "Success: LoRA adapter 'sql' removed successfully."
    response = http.post("/v1/unload_lora_adapter", json={"lora_name": "sql"})
    assert response.status_code == 404 and response.json["error"]["type"] == "invalid_request_error"
    response = http.post("/v1/load_lora_adapter", json={"lora_name": "x"})
    assert response.status_code == 400 and "lora_path" in response.json["error"]["message"]


@pytest.fixture
def keyed():
    """An app with `API_KEY=s3cret`."""
    return create_app(make_config(api_key="s3cret"), FakeEngineClient()).test_client()


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/adapters", {"name": "a", "src": "/d"}), ("delete", "/adapters/a", None), ("get", "/adapters", None),
    ("post", "/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "/d"}),
    ("post", "/v1/unload_lora_adapter", {"lora_name": "a"}),
])
def test_the_adapter_routes_need_the_api_key(keyed, method, path, body):
    call = getattr(keyed, method)
    assert call(path, json=body).status_code == 401
    answered = call(path, json=body, headers={"Authorization": "Bearer s3cret"})
    assert answered.status_code in (200, 404)


def test_metrics_count_generations_per_adapter(http, with_sql):
    http.post("/generate", json=GENERATE)
    http.post("/generate", json={"inputs": "a"})
    http.post("/v1/chat/completions", json={**CHAT, "model": "sql"})
    text = http.get("/metrics").get_data(as_text=True)
    assert 'serving_adapter_requests{adapter="sql"} 2' in text
    assert 'serving_adapter_requests{adapter="base"} 1' in text


def test_a_model_name_that_is_no_adapter_counts_as_the_base(http, engine):
    http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
    text = http.get("/metrics").get_data(as_text=True)
    assert 'serving_adapter_requests{adapter="base"} 1' in text and "gpt-4o" not in text


def test_the_adapter_labels_are_bounded(monkeypatch):
    import serving.api.metrics as metrics_module

    monkeypatch.setattr(metrics_module, "MAX_ADAPTER_LABELS", 2)
    metrics = Metrics(None)
    for name in ("a", "b", "c", "d", "a"):
        metrics.adapter_request(name)
    samples = {sample.labels["adapter"]: sample.value for family in metrics._registry.collect()
               for sample in family.samples if sample.name.endswith("_total")}
    assert samples == {"a": 2, "b": 1, "other": 2}


def test_the_access_log_names_the_adapter(http, with_sql, caplog):
    caplog.set_level(logging.INFO, logger="serving.access")
    response = http.post("/generate", json=GENERATE)
    response.close()
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "serving.access"]
    assert line["adapter"] == "sql"


def test_the_document_names_the_registered_adapters(http, engine):
    schemas = http.get("/api-doc/openapi.json").json["components"]["schemas"]
    assert schemas["GenerateParameters"]["properties"]["adapter_id"]["anyOf"][0] == {"enum": [""]}
    assert schemas["ChatCompletionRequest"]["properties"]["model"]["anyOf"][0] == {"type": "string"}
    engine.register_adapter(AdapterSpec(name="sql", source="/d/sql"))
    schemas = http.get("/api-doc/openapi.json").json["components"]["schemas"]
    assert schemas["GenerateStreamParameters"]["properties"]["adapter_id"]["anyOf"][0] == {"enum": ["", "sql"]}
    assert schemas["CompletionRequest"]["properties"]["model"]["anyOf"][0] == {"enum": ["", BASE, "tgi", "sql"]}
    assert schemas["TokenizeParameters"]["properties"]["adapter_id"]["anyOf"][0] == {"type": "string"}
