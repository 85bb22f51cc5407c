"""ccproxy's own per-request work, step by step, without the network.

Times (median of repeats, microseconds per call) each step that
Proxy.generate and the Starlette handler do for one whole request of case
(a), an Anthropic client on an OpenAI upstream, on the benchmark's config
with the SQLite state store. Complements profile_server.py, which measures
the server stack and the upstream HTTP client around these steps.

Run: .venv/bin/python bench/breakdown.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as bench  # noqa: E402


def per_call(function, repeat: int = 7, number: int = 2000) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            function()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples) * 1e6


def main() -> None:
    from ccproxy import routing
    from ccproxy.app import presented_key, split_prefix
    from ccproxy.config import load as load_config
    from ccproxy.ids import new_call_id
    from ccproxy.keys import KeyRing
    from ccproxy.protocols import CODECS
    from ccproxy.protocols.base import ClientContext
    from ccproxy.rotation import Rotation
    from ccproxy.stores.secrets import secret_store_from_env
    from ccproxy.stores.state import SqliteStateStore
    from starlette.responses import JSONResponse

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config_path, _ = bench.write_configs(tmp, "http://127.0.0.1:9")
        config = load_config(config_path)
        secrets = secret_store_from_env(config_path)
        keys = KeyRing(config, secrets)
        state = SqliteStateStore(tmp / "state.db")
        rotation = Rotation(keys, state)
        claude, openai = CODECS["claude"], CODECS["openai"]
        raw = bench.job("a", "ccproxy", "http://x", False).body
        body = json.loads(raw)
        ctx = ClientContext()
        request = claude.decode_request(body, ctx)
        resolution = routing.resolve(config, "default", request.model)
        entries = rotation.entries(resolution.targets, [t.weight for t in resolution.targets])
        entry = entries[0]
        upstream_body = openai.encode_request(request, "gpt-bench")
        upstream_answer = json.loads(
            json.dumps(
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": "gpt-bench",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "Hello from the fake upstream."},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
                }
            )
        )
        upstream_raw = json.dumps(upstream_answer).encode()
        decoded = openai.decode_response(upstream_answer)
        names = sorted({entry.name, f"{entry.name}#{entry.target.model}"})
        answer = claude.encode_response(decoded, request)
        headers = {"authorization": f"Bearer {bench.ACCESS_KEY}", "content-type": "application/json"}

        class FakeRequest:
            def __init__(self) -> None:
                self.headers = headers
                self.query_params: dict[str, str] = {}

        steps = [
            ("split_prefix (group/compat prefix)", lambda: split_prefix("/v1/messages", "default")),
            (
                "access key check (KeyRing.check_access: secrets file stat + hmac)",
                lambda: keys.check_access(presented_key(FakeRequest()), open_when_empty=False),
            ),
            ("json.loads(client body)", lambda: json.loads(raw)),
            ("ClaudeCodec.decode_request (pydantic validate + unified)", lambda: claude.decode_request(body, ctx)),
            ("routing.resolve", lambda: routing.resolve(config, "default", request.model)),
            (
                "Rotation.entries (provider keys: secrets file stat)",
                lambda: rotation.entries(resolution.targets, [t.weight for t in resolution.targets]),
            ),
            (
                "Rotation.plan's SQLite cooling SELECT (SqliteStateStore.cooling)",
                lambda: state.cooling(names, time.time()),
            ),
            ("OpenAICodec.encode_request", lambda: openai.encode_request(request, "gpt-bench")),
            ("json.dumps(upstream body).encode()", lambda: json.dumps(upstream_body, ensure_ascii=False).encode()),
            ("json.loads(upstream answer)", lambda: json.loads(upstream_raw)),
            ("OpenAICodec.decode_response", lambda: openai.decode_response(upstream_answer)),
            ("ClaudeCodec.encode_response (new message id)", lambda: claude.encode_response(decoded, request)),
            ("  of which new_call_id (24 × secrets.choice)", lambda: new_call_id("")),
            ("JSONResponse(answer) render", lambda: JSONResponse(answer)),
            (
                "Rotation.used's SQLite add_usage (BEGIN IMMEDIATE, upsert, COMMIT)",
                lambda: state.add_usage(entry.name, "2026-01-01", 1, 12, 7),
            ),
        ]
        total = 0.0
        print("| step | µs per request |\n|---|---:|")
        for name, function in steps:
            micros = per_call(function, number=500 if "SQLite" in name else 2000)
            if not name.startswith("  "):
                total += micros
            print(f"| {name} | {micros:.1f} |")
        print(f"| total of the steps | {total:.1f} |")
        state.close()
        os.environ.pop("CCPROXY_STATE", None)


if __name__ == "__main__":
    main()
