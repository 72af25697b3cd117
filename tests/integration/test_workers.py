"""Several gunicorn workers share one engine: one copy of the model, requests from every worker batched together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from servers import start_server

pytestmark = pytest.mark.integration


def test_two_workers_serve_concurrent_requests_from_one_engine(tiny_model_dir, tmp_path):
    proc = start_server(tiny_model_dir, tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="2")
    try:
        proc.wait_ready()

        def generate(i: int) -> tuple[int, str]:
            response = requests.post(proc.url + "/generate", json={
                "inputs": f"Request {i % 12}", "parameters": {"max_new_tokens": 8}}, timeout=60)
            return response.status_code, response.json().get("generated_text", "")

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(generate, range(24)))
        assert all(status == 200 for status, _ in results)
        assert [text for _, text in results[:12]] == [text for _, text in results[12:]]
        log = proc.log()
        assert log.count("Booting worker") == 2
        assert log.count("engine ready") == 1
    finally:
        assert proc.stop() == 0
