"""The prompt-attention benchmark runs and compares the prefill kernel with SDPA on the same blocks."""

from __future__ import annotations

import torch

from serving.bench.prompt_attention import chunk_of, main, measure


def test_shapes_are_a_start_and_a_count():
    assert chunk_of("1900+16") == (1900, 16)
    assert chunk_of("0+700") == (0, 700)


def test_both_paths_are_timed_and_agree(capsys):
    for start, count in ((0, 40), (37, 9)):  # SDPA's causal path, then the gathered, masked one
        sdpa, kernel, difference = measure(start, count, repeats=2)
        assert sdpa > 0 and kernel > 0 and difference < 1e-4
    threads = torch.get_num_threads()
    try:
        assert main(["--shapes", "20+5", "--repeats", "2", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "20+5: SDPA" in capsys.readouterr().out
