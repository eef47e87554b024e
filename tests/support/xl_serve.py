"""Run llama.cpp's own HTTP server in-process via xllamacpp, as a stand-alone process.

The test tier runs this in a subprocess (see ``tests.support.llama``) so it can be stopped
with a signal like the real ``llama-server`` binary, whose flags it mirrors. The API key comes
from the ``LLAMA_API_KEY`` environment variable, as with the binary, so it never shows in
``ps``. Prints ``LISTENING <url>`` once the model is loaded and the port is open; stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Sequence

import xllamacpp as xlc

API_KEY_ENV = "LLAMA_API_KEY"


def main(argv: Sequence[str] | None = None) -> None:
    """Parse llama-server-like flags, start the server, and block until told to stop."""
    parser = argparse.ArgumentParser(description="llama.cpp server via xllamacpp")
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--alias")
    parser.add_argument("--embeddings", action="store_true", help="also sets mean pooling")
    parser.add_argument("--no-cache-prompt", action="store_true")
    parser.add_argument("--metrics", action="store_true")
    parser.add_argument("-np", "--parallel", type=int, default=4)
    parser.add_argument("-n", "--n-predict", type=int, default=-1)
    parser.add_argument("-t", "--threads", type=int, default=-1)
    parser.add_argument("-tb", "--threads-batch", type=int, default=-1)
    parser.add_argument("--poll", type=int, default=50)
    args = parser.parse_args(argv)

    params = xlc.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    api_key = os.environ.get(API_KEY_ENV)
    params.api_keys = [api_key] if api_key else []
    params.n_parallel = args.parallel
    # The binary's default (4 auto slots) shares one KV cache, so each slot sees the full
    # context; xllamacpp defaults to split caches, which would cut each slot to n_ctx / 4.
    params.kv_unified = True
    params.n_predict = args.n_predict
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads_batch
    params.cpuparams.poll = args.poll
    params.cpuparams_batch.poll = args.poll
    params.cache_prompt = not args.no_cache_prompt
    params.endpoint_metrics = args.metrics
    if args.alias:
        params.model_alias = {args.alias}
    if args.embeddings:
        params.embedding = True
        params.pooling_type = xlc.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN

    # Block the stop signals before the server's threads start, so they all inherit the mask
    # and the signal is delivered to sigwait below instead of killing a server thread.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = xlc.Server(params)  # returns once the model is loaded and the port listens
    print("LISTENING", server.listening_address, flush=True)
    signal.sigwait(stop_signals)
    del server


if __name__ == "__main__":
    main()
