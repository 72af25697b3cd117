"""The naive baseline server: one `model.generate` at a time under a lock, streamed as OpenAI completions.

What a first attempt at serving looks like (a web server around `generate`), kept only as a benchmark peer:
`python -m serving.bench.naive_server --model-dir DIR --port P` serves `POST /v1/completions` (streaming only,
greedy, `max_tokens`, `ignore_eos`/`min_tokens`) and `GET /health` on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    lock = threading.Lock()

    class Streamer:
        """`generate`'s streamer: writes one SSE chunk per generated token (the first `put` is the prompt)."""

        def __init__(self, write) -> None:
            self.write, self.prompt_seen, self.count = write, False, 0

        def put(self, ids) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            for token in ids.reshape(-1).tolist():
                self.count += 1
                self.write({"object": "text_completion", "created": int(time.time()), "model": "naive",
                            "choices": [{"index": 0, "text": tokenizer.decode([token]), "finish_reason": None}]})

        def end(self) -> None:
            pass

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            body = b'{"status":"ok"}'
            self.send_response(200 if self.path in ("/health", "/v1/models") else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            max_tokens = int(request.get("max_tokens") or 16)
            min_tokens = max_tokens if request.get("ignore_eos") else int(request.get("min_tokens") or 0)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()

            def write(chunk) -> None:
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()

            streamer = Streamer(write)
            inputs = tokenizer(request["prompt"], return_tensors="pt")
            with lock, torch.inference_mode():
                model.generate(**inputs, max_new_tokens=max_tokens, min_new_tokens=min_tokens, do_sample=False,
                               streamer=streamer, pad_token_id=tokenizer.pad_token_id)
            write({"object": "text_completion", "choices": [], "usage": {
                "prompt_tokens": int(inputs["input_ids"].shape[1]), "completion_tokens": streamer.count}})
            self.wfile.write(b"data: [DONE]\n\n")

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
