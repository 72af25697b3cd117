"""The real huggingface_hub download path against a stand-in hub on 127.0.0.1 (HF_ENDPOINT): the listing, the
files chosen (safetensors, not the pickles or ONNX beside them), the revision and token, the cache layout, then
the same model with HF_HUB_OFFLINE=1 from the cache. The real hub is never contacted."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from servers import REPO_ROOT

COMMIT = "c0ffee" + "0" * 34


def hub_app(root: Path, seen: list[tuple[str, str, str | None]]) -> Flask:
    """The three hub routes snapshot_download uses: model info, the file tree, and resolve (HEAD and GET)."""
    app = Flask("stand-in-hub")

    def files() -> list[str]:
        return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())

    @app.get("/api/models/<org>/<name>/revision/<revision>")
    def model_info(org: str, name: str, revision: str):
        seen.append(("info", revision, request.headers.get("Authorization")))
        return jsonify({"id": f"{org}/{name}", "sha": COMMIT,
                        "siblings": [{"rfilename": f, "size": (root / f).stat().st_size} for f in files()]})

    @app.get("/api/models/<org>/<name>/tree/<revision>")
    def tree(org: str, name: str, revision: str):
        return jsonify([{"type": "file", "path": f, "size": (root / f).stat().st_size, "oid": "0" * 40}
                        for f in files()])

    @app.route("/<org>/<name>/resolve/<revision>/<path:filename>", methods=["GET", "HEAD"])
    def resolve(org: str, name: str, revision: str, filename: str):
        path = root / filename
        if not path.is_file():
            return Response("not found", 404)
        seen.append((request.method, filename, request.headers.get("Authorization")))
        data = path.read_bytes()
        etag = '"' + hashlib.sha1(data).hexdigest() + '"'
        headers = {"X-Repo-Commit": COMMIT, "ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(len(data))}
        return Response(b"" if request.method == "HEAD" else data, 200, headers=headers)

    @app.route("/<path:anything>", methods=["GET", "HEAD", "POST"])
    def other(anything: str):
        return Response("not found", 404)

    return app


@pytest.fixture
def stand_in_hub(tiny_model_dir, tmp_path):
    """A repository holding the tiny model plus files serving must not fetch."""
    root = tmp_path / "repo"
    shutil.copytree(tiny_model_dir, root)
    (root / "pytorch_model.bin").write_bytes(b"pickle" * 10)
    (root / "onnx").mkdir()
    (root / "onnx" / "model.onnx").write_bytes(b"onnx" * 10)
    seen: list[tuple[str, str, str | None]] = []
    server = make_server("127.0.0.1", 0, hub_app(root, seen), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        thread.join(5)


def download(env: dict[str, str]) -> dict:
    """`download_model` for org/tiny in a fresh interpreter (huggingface_hub reads its settings at import)."""
    code = ("import json, logging, sys\n"
            "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
            "from serving.config import from_env\n"
            "from serving.engine.loader import download_model\n"
            "print(json.dumps({'path': download_model(from_env().engine)}))\n")
    base = {name: value for name, value in os.environ.items() if not name.startswith(("HF_", "HUGGING"))}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={**base, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "log": result.stderr}


def test_download_then_offline_from_the_cache(stand_in_hub, tmp_path):
    endpoint, seen = stand_in_hub
    cache = tmp_path / "cache"
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(cache), "HF_MODEL_ID": "org/tiny",
           "HF_MODEL_REVISION": "main", "HF_TOKEN": "hf_stand_in_token", "HF_HUB_DISABLE_TELEMETRY": "1"}
    online = download(env)
    snapshot = Path(online["path"])
    assert snapshot == cache / "models--org--tiny" / "snapshots" / COMMIT
    assert sorted(path.name for path in snapshot.iterdir()) == sorted(
        path.name for path in Path(tmp_path / "repo").iterdir() if path.suffix in (".json", ".safetensors", ".jinja"))
    fetched = {name for method, name, _ in seen if method == "GET"}
    assert "model.safetensors" in fetched and "pytorch_model.bin" not in fetched and "onnx/model.onnx" not in fetched
    assert {auth for _, _, auth in seen} == {"Bearer hf_stand_in_token"}
    assert ("info", "main", "Bearer hf_stand_in_token") in seen
    assert f"downloading org/tiny@main (commit {COMMIT})" in online["log"]
    assert "hf_stand_in_token" not in online["log"]

    seen.clear()
    offline = download({**env, "HF_HUB_OFFLINE": "1"})
    assert offline["path"] == online["path"] and seen == []
    assert "using the cached snapshot" in offline["log"]
