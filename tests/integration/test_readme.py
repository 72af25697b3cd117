"""The README's examples against the embedded default model: every curl and Python example that talks to
localhost:8080 runs against a real server, and every reply is printable text of several words that ends by itself."""

from __future__ import annotations

import contextlib
import io
import json
import re
from typing import Iterator

import pytest
import requests

from servers import REPO_ROOT, ServerProcess, running_server

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

README = (REPO_ROOT / "README.md").read_text()
DEFAULT_MODEL = REPO_ROOT / "serving" / "default_model"
CURL = re.compile(r"curl -sN? localhost:8080(\S+) -H 'Content-Type: application/json' \\\s*\n\s*-d '([^']*)'")


def code_blocks(language: str) -> list[str]:
    """The README's fenced blocks of one language."""
    return re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)


CURLS = [(path, json.loads(body)) for block in code_blocks("bash") for path, body in CURL.findall(block)]
PYTHON = [block for block in code_blocks("python") if "localhost:8080" in block]


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on the embedded default model, as a first run gets it."""
    with running_server(DEFAULT_MODEL, tmp_path_factory.mktemp("readme-server")) as proc:
        yield proc


def assert_an_answer(text: str) -> None:
    """Printable text of several words."""
    assert text.strip().isprintable() and len(text.split()) >= 5, repr(text)


def reply_of(path: str, answer: requests.Response) -> tuple[str, str | None]:
    """The generated text of an answer (streamed or not) and why it ended."""
    if answer.headers["content-type"].startswith("text/event-stream"):
        events = [json.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data:{")]
        text = "".join(event["token"]["text"] for event in events if not event["token"]["special"])
        return text, events[-1]["details"] and events[-1]["details"]["finish_reason"]
    body = answer.json()
    if isinstance(body, list):
        return body[0]["generated_text"], None
    if "generated_text" in body:
        return body["generated_text"], None
    choice = body["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"], choice["finish_reason"]


def test_the_readme_has_examples_of_every_route_family():
    assert {path for path, _ in CURLS} >= {"/v1/chat/completions", "/generate", "/generate_stream", "/invocations"}
    assert len(PYTHON) >= 2


@pytest.mark.parametrize("path, body", CURLS, ids=[f"{path}-{i}" for i, (path, _) in enumerate(CURLS)])
def test_curl_example(default_server, path, body):
    answer = requests.post(default_server.url + path, json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    text, reason = reply_of(path, answer)
    assert_an_answer(text)
    assert reason in (None, "stop", "eos_token")  # enough tokens: the answer ended by itself
    if path == "/generate":
        details = requests.post(default_server.url + path, timeout=120, json={
            **body, "parameters": {**body.get("parameters", {}), "details": True}}).json()["details"]
        assert details["finish_reason"] == "eos_token"


@pytest.mark.parametrize("block", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_example(default_server, block):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block.replace("http://localhost:8080", default_server.url), "README.md", "exec"), {})
    assert_an_answer(out.getvalue().replace("\n", " "))
