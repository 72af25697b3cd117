"""`/api-doc/openapi.json` documents every route and body the app really has; `/docs` is a Swagger UI page."""

from __future__ import annotations

import re
from typing import Any, Iterator

from serving.api.protocol.chat import ChatCompletionRequest
from serving.api.protocol.completion import CompletionRequest
from serving.api.protocol.generate import GenerateParameters


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_the_document_is_openapi_3_with_every_route(app, http):
    response = http.get("/api-doc/openapi.json")
    assert response.status_code == 200 and response.content_type == "application/json"
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] and document["info"]["version"]
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert routes - {("/docs/", "get")} == documented


def test_every_reference_resolves(http):
    document = http.get("/api-doc/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


def test_request_schemas_come_from_the_request_models(http):
    schemas = http.get("/api-doc/openapi.json").get_json()["components"]["schemas"]
    assert set(schemas["GenerateParameters"]["properties"]) == set(GenerateParameters.model_fields)
    assert set(schemas["ChatCompletionRequest"]["properties"]) == set(ChatCompletionRequest.model_fields)
    assert set(schemas["CompletionRequest"]["properties"]) == set(CompletionRequest.model_fields)
    assert schemas["GenerateRequest"]["required"] == ["inputs"]


def test_generation_routes_declare_their_errors_and_optional_bearer_auth(http):
    document = http.get("/api-doc/openapi.json").get_json()
    generate = document["paths"]["/generate"]["post"]
    assert {"200", "401", "413", "415", "422", "424", "429", "500"} <= set(generate["responses"])
    assert generate["security"] == [{}, {"bearer": []}]
    chat_answers = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    for status in ("400", "413", "415"):
        assert chat_answers[status]["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIErrorResponse")
    assert "422" not in chat_answers
    assert set(generate["responses"]["422"]["content"]) == {"application/json", "text/plain"}
    assert set(generate["responses"]["415"]["content"]) == {"text/plain"}
    assert "security" not in document["paths"]["/info"]["get"]


def test_stream_error_events_are_documented(http):
    paths = http.get("/api-doc/openapi.json").get_json()["paths"]
    events = paths["/generate_stream"]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    data = events["properties"]["data"]
    assert data["contentMediaType"] == "application/json"
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in data["contentSchema"]["oneOf"]] == ["StreamResponse",
                                                                                        "ErrorResponse"]
    chunks = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    done, payload = chunks["properties"]["data"]["anyOf"]
    assert done == {"const": "[DONE]"}
    assert payload["contentSchema"]["oneOf"][1]["$ref"].endswith("/OpenAIErrorResponse")


def test_checked_schemas_carry_the_servers_rules_and_limits(http):
    schemas = http.get("/api-doc/openapi.json").get_json()["components"]["schemas"]
    parameters = schemas["GenerateParameters"]["properties"]
    assert parameters["temperature"]["anyOf"][0]["exclusiveMinimum"] == 0
    assert parameters["stop"]["maxItems"] == 4 and parameters["top_n_tokens"]["anyOf"][0]["maximum"] == 5
    assert parameters["truncate"]["anyOf"][0]["maximum"] == 100
    assert schemas["GenerateStreamParameters"]["properties"]["best_of"]["anyOf"][0]["maximum"] == 1
    assert schemas["GenerateRequest"]["properties"]["inputs"]["minLength"] == 1
    assert "minLength" not in schemas["TokenizeRequest"]["properties"]["inputs"]
    assert "exclusiveMinimum" not in schemas["TokenizeParameters"]["properties"]["temperature"]["anyOf"][0]
    chat = schemas["ChatCompletionRequest"]
    assert chat["properties"]["messages"]["minItems"] == 1
    assert chat["properties"]["tool_choice"]["anyOf"][0] == {"enum": ["none", "auto", "required"]}
    assert chat["properties"]["response_format"]["anyOf"][0]["anyOf"][0]["properties"]["type"] == {
        "enum": ["text", "json_object"]}
    assert parameters["grammar"]["anyOf"][0]["properties"]["type"]["enum"] == ["json", "json_object", "json_schema",
                                                                               "regex"]
    assert chat["properties"]["n"]["anyOf"][0]["maximum"] == 4
    prompt = schemas["CompletionRequest"]["properties"]["prompt"]["anyOf"]
    assert prompt[2]["items"]["maximum"] == 319 and prompt[1]["maxItems"] == 4


def test_swagger_ui_page_and_its_assets_come_from_this_server(http):
    for path in ("/docs", "/docs/"):
        response = http.get(path)
        assert response.status_code == 200 and response.content_type.startswith("text/html")
        page = response.get_data(as_text=True)
        assert "SwaggerUIBundle" in page and '"/api-doc/openapi.json"' in page
        assert "http" not in page  # nothing from a CDN
    assets = re.findall(r'(?:src|href)="(/docs/[^"]+)"', page)
    assert {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"} <= set(assets)
    for asset in assets:
        response = http.get(asset)
        assert response.status_code == 200 and len(response.data) > 0
    assert "SwaggerUIBundle" in http.get("/docs/swagger-ui-bundle.js").get_data(as_text=True)
    assert http.get("/docs/nope.js").status_code == 404
