"""The decode-attention benchmark runs and compares the kernel with the gathered SDPA on the same blocks."""

from __future__ import annotations

import torch

from serving.bench.decode_attention import lengths_of, main, measure


def test_shapes_alternate_their_key_counts():
    assert lengths_of("3x10") == [10, 10, 10]
    assert lengths_of("4x736+40") == [736, 40, 736, 40]


def test_both_paths_are_timed_and_agree(capsys):
    sdpa, kernel, difference = measure([40, 3, 17], repeats=2)
    assert sdpa > 0 and kernel > 0 and difference < 1e-4
    threads = torch.get_num_threads()
    try:
        assert main(["--shapes", "2x20", "--repeats", "2", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "2x20: gathered SDPA" in capsys.readouterr().out
