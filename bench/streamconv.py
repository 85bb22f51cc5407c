"""Stream conversion throughput, in process, on one core.

ccproxy.pipeline.convert_stream as the proxy runs it (upstream decoder,
checked at its boundary, client encoder, the usage accumulator as observer) over a large pre-built
upstream stream handed in one event per chunk, as a model's tokens arrive.
Prints one JSON object: events per second for each pair (median of runs).

Run: python streamconv.py [--cpu N] [--events N] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import AsyncIterator

from ccproxy.pipeline import CheckedDecoder, convert_stream
from ccproxy.protocols import CODECS
from ccproxy.protocols.base import ClientContext
from ccproxy.unified import Accumulator

MESSAGES = [{"role": "user", "content": "Say hello"}]


def openai_upstream(events: int) -> list[bytes]:
    def chunk(delta: dict, finish: str | None = None) -> bytes:
        data = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": f"w{i} "}) for i in range(events)]
    out.append(chunk({}, "stop"))
    out.append(b"data: [DONE]\n\n")
    return out


def gemini_upstream(events: int) -> list[bytes]:
    out = []
    for i in range(events):
        candidate: dict = {"content": {"role": "model", "parts": [{"text": f"w{i} "}]}, "index": 0}
        usage: dict = {"promptTokenCount": 12, "totalTokenCount": 12}
        if i == events - 1:
            candidate["finishReason"] = "STOP"
            usage = {"promptTokenCount": 12, "candidatesTokenCount": events, "totalTokenCount": 12 + events}
        data = {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": "gemini-bench",
            "responseId": "bench",
        }
        out.append(b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\r\n\r\n")
    return out


PAIRS = {
    # name: (upstream protocol, client protocol, client request body, upstream stream builder)
    "openai->claude": (
        "openai",
        "claude",
        {"model": "claude-bench", "max_tokens": 64, "stream": True, "messages": MESSAGES},
        openai_upstream,
    ),
    "gemini->openai": (
        "gemini",
        "openai",
        {"model": "gemini-bench", "stream": True, "messages": MESSAGES},
        gemini_upstream,
    ),
}


async def _chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _once(upstream: str, client: str, body: dict, chunks: list[bytes]) -> tuple[float, int]:
    client_codec = CODECS[client]
    request = client_codec.decode_request(body, ClientContext())
    accumulator = Accumulator()
    out = 0
    start = time.perf_counter()
    async for piece in convert_stream(
        _chunks(chunks),
        CheckedDecoder(CODECS[upstream].stream_decoder()),
        client_codec.stream_encoder(request),
        accumulator.add,
    ):
        out += len(piece)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    results = {}
    for name, (upstream, client, body, build) in PAIRS.items():
        chunks = build(args.events)
        asyncio.run(_once(upstream, client, body, chunks[:200]))  # warm up
        rates = []
        for _ in range(args.runs):
            elapsed, out = asyncio.run(_once(upstream, client, body, chunks))
            if out == 0:
                raise SystemExit(f"{name}: the conversion produced nothing")
            rates.append(args.events / elapsed)
        results[name] = statistics.median(rates)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
