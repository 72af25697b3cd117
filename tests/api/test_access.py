"""`API_KEY` bearer auth on exactly TGI's generation routes, and TGI's CORS headers."""

from __future__ import annotations

import pytest
from api_helpers import FakeEngineClient, make_config

from serving.api.app import create_app

PROTECTED = [
    ("/", {"inputs": "a"}),
    ("/generate", {"inputs": "a"}),
    ("/generate_stream", {"inputs": "a"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}]}),
    ("/v1/completions", {"prompt": "a"}),
    ("/invocations", {"inputs": "a"}),
    ("/tokenize", {"inputs": "a"}),
    ("/chat_tokenize", {"messages": [{"role": "user", "content": "a"}]}),
]


@pytest.fixture
def keyed():
    """An app with `API_KEY=s3cret`."""
    return create_app(make_config(api_key="s3cret"), FakeEngineClient()).test_client()


@pytest.mark.parametrize("path, body", PROTECTED)
def test_protected_routes_need_the_bearer_key(keyed, path, body):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = keyed.post(path, json=body, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.data == b"" and "Content-Type" not in response.headers
    response = keyed.post(path, json=body, headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200, (path, response.data)


def test_the_scheme_is_case_insensitive_and_the_key_exact(keyed):
    assert keyed.post("/generate", json={"inputs": "a"}, headers={"Authorization": "bEARER s3cret"}).status_code == 200
    for wrong in ("Bearer S3CRET", "Bearer s3cret ", "Bearer s3cre", "Bearer  s3cret", "Basic s3cret"):
        assert keyed.post("/generate", json={"inputs": "a"}, headers={"Authorization": wrong}).status_code == 401


def test_a_non_ascii_key_is_compared_as_utf8_bytes():
    keyed = create_app(make_config(api_key="clé"), FakeEngineClient()).test_client()
    header = "Bearer " + "clé".encode("utf-8").decode("latin-1")  # what a client sends, as WSGI hands it over
    assert keyed.post("/generate", json={"inputs": "a"}, headers={"Authorization": header}).status_code == 200


@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("GET", "/health"), ("GET", "/ping"), ("GET", "/info"), ("GET", "/metrics"),
    ("GET", "/v1/models"), ("GET", "/docs"), ("GET", "/api-doc/openapi.json"),
])
def test_open_routes_need_no_key(keyed, method, path):
    assert keyed.open(path, method=method).status_code == 200, path


def test_without_a_key_nothing_is_protected(http):
    assert http.post("/generate", json={"inputs": "a"}).status_code == 200


def test_cors_allows_any_origin_by_default(http):
    response = http.get("/info", headers={"Origin": "https://example.com"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "origin" in response.headers["Vary"]
    assert http.post("/generate", json={"inputs": "a"}).headers["Access-Control-Allow-Origin"] == "*"


def test_preflight_is_answered_before_auth(keyed):
    response = keyed.options("/generate", headers={
        "Origin": "https://example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "GET,POST"
    assert response.headers["Access-Control-Allow-Headers"] == "content-type"


def test_listed_origins_only(engine):
    http = create_app(make_config(cors_allow_origins=("https://a.example", "https://b.example")),
                      engine).test_client()
    allowed = http.get("/info", headers={"Origin": "https://b.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://b.example"
    other = http.get("/info", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
