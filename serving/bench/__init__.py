"""Serving benchmark: a load generator for any OpenAI-compatible or TGI endpoint, and side-by-side peer runs.

`python -m serving.bench run --url URL` sweeps concurrency levels against one server; `python -m serving.bench
peers --model-dir DIR` starts this project's server and its peers one after another on 127.0.0.1 with the same
model, benchmarks each and prints one table with ratios; `python -m serving.bench models OUT` builds the two
benchmark models. Nothing here imports torch except `raw.py` and `naive_server.py`, which run in their own
processes.
"""
