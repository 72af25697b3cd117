"""API_KEY, CORS_ALLOW_ORIGIN and PROMETHEUS_MULTIPROC_DIR read into the server configuration."""

from __future__ import annotations

from serving.config import from_env

BASE = {"HF_MODEL_ID": "/models/tiny"}


def test_defaults_are_open_any_origin_and_single_process_metrics():
    server = from_env(BASE).server
    assert server.api_key is None
    assert server.cors_allow_origins == ()
    assert server.metrics_dir is None


def test_api_key_is_read_and_never_shown():
    server = from_env({**BASE, "API_KEY": "s3cret"}).server
    assert server.api_key == "s3cret"
    assert "s3cret" not in repr(server)


def test_cors_origins_are_a_comma_separated_list():
    server = from_env({**BASE, "CORS_ALLOW_ORIGIN": "https://a.example, https://b.example,"}).server
    assert server.cors_allow_origins == ("https://a.example", "https://b.example")


def test_the_metrics_directory_is_the_one_prometheus_client_reads():
    assert from_env({**BASE, "PROMETHEUS_MULTIPROC_DIR": "/tmp/m"}).server.metrics_dir == "/tmp/m"
