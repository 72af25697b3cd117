"""The benchmark's statistics, event parsing, prompts and tables, without any server."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time

import pytest

from serving.bench import load, report
from serving.bench.load import LoadConfig, _request, event_text, make_prompts, next_turn, parse_event
from serving.bench.stats import RequestRecord, percentile, summarise


def test_percentile_interpolates_like_numpy():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_summary_counts_finished_failed_and_unfinished_requests():
    records = [
        RequestRecord(ok=True, output_tokens=4, prompt_tokens=10, ttft=0.1, itls=[0.01, 0.02, 0.03], latency=0.16),
        RequestRecord(ok=True, output_tokens=4, prompt_tokens=20, ttft=0.3, itls=[0.04, 0.05, 0.06], latency=0.45),
        RequestRecord(error="HTTP 500: boom", output_tokens=0),
        RequestRecord(output_tokens=2, ttft=0.2, itls=[0.5]),  # cut by the deadline
    ]
    summary = summarise(4, records, duration=2.0, peak_rss_mib=512.0)
    assert (summary.requests, summary.completed, summary.errors, summary.unfinished) == (4, 2, 1, 1)
    assert summary.output_tokens == 10  # the unfinished request's streamed tokens count, the failed one's not
    assert summary.output_throughput == pytest.approx(5.0)
    assert summary.request_throughput == pytest.approx(1.0)
    assert summary.ttft_p50 == pytest.approx(0.2)  # finished requests only
    assert summary.itl_p50 == pytest.approx(0.035)  # gaps pooled over finished requests
    assert summary.e2e_p95 == pytest.approx(0.16 + 0.95 * 0.29)
    assert summary.mean_prompt_tokens == pytest.approx(15.0)
    assert summary.mean_output_tokens == pytest.approx(4.0)
    assert summary.first_error == "HTTP 500: boom"
    assert json.loads(json.dumps(summary.to_dict()))["peak_rss_mib"] == 512.0


def test_summary_of_nothing_has_no_latencies():
    summary = summarise(1, [], duration=0.0)
    assert summary.output_throughput == 0.0
    assert summary.ttft_p50 is None and summary.itl_p95 is None and summary.e2e_p50 is None


def test_openai_events():
    chunk = {"choices": [{"index": 0, "text": "hi", "finish_reason": None}]}
    assert parse_event("openai", chunk) == (1, None, None, None)
    usage = {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 64}}
    assert parse_event("openai", usage) == (0, 64, 12, None)
    final = {"choices": [{"index": 0, "text": "", "finish_reason": "length"}],
             "usage": {"prompt_tokens": 12, "completion_tokens": 64}}
    assert parse_event("openai", final) == (1, 64, 12, None)
    error = {"error": {"message": "overloaded", "type": "overloaded"}}
    assert parse_event("openai", error)[3] == "overloaded"


def test_tgi_events():
    token = {"token": {"id": 5, "text": "a", "logprob": -1.0, "special": False}, "generated_text": None,
             "details": None}
    assert parse_event("tgi", token) == (1, None, None, None)
    last = {**token, "generated_text": "a", "details": {"finish_reason": "length", "generated_tokens": 3}}
    assert parse_event("tgi", last) == (1, 3, None, None)
    assert parse_event("tgi", {"error": "Request failed", "error_type": "generation"})[3] == "Request failed"


def test_event_text_is_the_generated_text_of_either_api():
    assert event_text("openai", {"choices": [{"index": 0, "text": " hi", "finish_reason": None}]}) == " hi"
    assert event_text("openai", {"choices": [], "usage": {"completion_tokens": 3}}) == ""
    assert event_text("tgi", {"token": {"id": 5, "text": "a", "special": False}}) == "a"
    assert event_text("tgi", {"token": {"id": 2, "text": "</s>", "special": True}}) == ""


def test_a_next_turn_resends_the_conversation_and_adds_a_message():
    turn = next_turn("opening\n", " the reply", 5, random.Random(1))
    assert turn.startswith("opening\n the reply\n") and turn.endswith("\n")
    assert len(turn[len("opening\n the reply\n"):].split()) == 5
    assert next_turn("opening\n", " the reply", 5, random.Random(1)) == turn  # deterministic per seed


def test_conversations_resend_each_prompt_and_reply_in_their_next_turn():
    """A level of `turns` 3 against a stand-in server that replies "xy" to everything: 2 clients hold 3
    conversations of 3 turns, the 9 requests each resend the last prompt and its reply."""
    from aiohttp import web

    prompts: list[str] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        prompts.append((await request.json())["prompt"])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for text in ("x", "y"):
            await response.write(f"data: {json.dumps({'choices': [{'index': 0, 'text': text}]})}\n\n".encode())
        usage = {"choices": [], "usage": {"prompt_tokens": len(prompts[-1].split()), "completion_tokens": 2}}
        await response.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        return response

    async def scenario() -> load.LevelSummary:
        import aiohttp

        app = web.Application()
        app.router.add_post("/v1/completions", completions)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        config = LoadConfig(url=f"http://127.0.0.1:{port}", requests=9, output_tokens=2, prompt_words=(6,),
                            turns=3, turn_words=4, progress=False)
        try:
            async with aiohttp.ClientSession() as session:
                return await load.run_level(session, config, 2)
        finally:
            await runner.cleanup()

    summary = asyncio.run(scenario())
    assert summary.requests == summary.completed == 9 and summary.output_tokens == 18
    openings = make_prompts(3, (6,), seed=2)
    assert sorted(p for p in prompts if p in openings) == sorted(openings)
    followers = [p for p in prompts if p not in openings]
    assert len(followers) == 6
    for prompt in followers:  # each later turn: an earlier prompt, its reply "xy", then a new message of 4 words
        last = max((p for p in prompts if prompt.startswith(p + "xy\n")), key=len)
        assert len(prompt[len(last) + 3:].split()) == 4
    assert summary.mean_prompt_tokens > len(openings[0].split())  # the conversations grew


def test_request_bodies_fix_the_output_length():
    route, body = _request(LoadConfig(url="u", output_tokens=32, model="m"), "hello")
    assert route == "/v1/completions"
    assert body["max_tokens"] == 32 and body["min_tokens"] == 32 and body["ignore_eos"] is True
    assert body["stream"] is True and body["temperature"] == 0.0 and body["model"] == "m"
    route, body = _request(LoadConfig(url="u", output_tokens=32, extra_body={}), "hello")
    assert "ignore_eos" not in body and "min_tokens" not in body and "model" not in body
    route, body = _request(LoadConfig(url="u", api="tgi", output_tokens=32), "hello")
    assert route == "/generate_stream" and body == {"inputs": "hello", "parameters": {"max_new_tokens": 32}}


def test_prompts_are_distinct_deterministic_and_mixed_in_length():
    prompts = make_prompts(8, (4, 16), seed=3)
    assert prompts == make_prompts(8, (4, 16), seed=3)
    assert len(set(prompts)) == 8
    assert len(set(make_prompts(8, (4, 16), seed=4)) & set(prompts)) == 0
    lengths = [len(p.split()) for p in prompts]
    assert lengths[0] < lengths[1] and lengths[0] == lengths[2]


def test_prompts_after_a_shared_prefix_start_alike_and_end_as_without_it():
    plain = make_prompts(4, (4, 16), seed=3)
    shared = make_prompts(4, (4, 16), seed=3, shared_prefix_words=100)
    prefix = shared[0].split("\n")[0]
    assert len(prefix.split()) == 100 and all(p.startswith(prefix + "\n") for p in shared)
    assert [p.split("\n", 1)[1] for p in shared] == plain
    assert make_prompts(2, (4,), seed=9, shared_prefix_words=100)[0].startswith(prefix)  # the same for every level


def test_tables_show_ratios_against_ours():
    ours = summarise(16, [RequestRecord(ok=True, output_tokens=64, ttft=0.5, latency=1.0)], duration=1.0)
    theirs = summarise(16, [RequestRecord(ok=True, output_tokens=32, ttft=1.0, latency=1.0)], duration=1.0)
    table = report.comparison_table({"ours": [ours], "peer": [theirs]}, "ours")
    peer_row = next(line for line in table.splitlines() if line.startswith("| peer"))
    assert "2.00×" in peer_row  # throughput: 64 / 32
    assert peer_row.rstrip(" |").endswith("2.00×")  # TTFT: 1.0 / 0.5
    assert "| ours" in report.sweep_table("ours", [ours])


def test_tables_name_another_reference_server():
    level = summarise(16, [RequestRecord(ok=True, output_tokens=64, ttft=0.5, latency=1.0)], duration=1.0)
    table = report.comparison_table({"ours-replicas": [level], "peer": [level]}, "ours-replicas")
    assert "ours-replicas ÷ this tok/s" in table and "this ÷ ours-replicas TTFT" in table


def test_bench_modules_do_not_import_torch():
    code = ("import sys, serving.bench.__main__, serving.bench.peers, serving.bench.load, serving.bench.report\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_tree_cpu_seconds_counts_descendants_alone_on_request():
    """A child that burned CPU shows in its parent's tree, and alone with `descendants_only`."""
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 0.5: pass\n"
                              "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while load.tree_cpu_seconds(os.getpid(), descendants_only=True) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.1)
        descendants = load.tree_cpu_seconds(os.getpid(), descendants_only=True)
        assert descendants >= 0.3
        assert load.tree_cpu_seconds(os.getpid()) >= descendants + time.process_time() - 0.05
    finally:
        child.kill()
        child.wait()
