"""The floor under ccproxy's added latency: the same server stack doing less.

`app(kind, upstream)` is a Starlette app that reads the client's JSON body
and then, by `kind`:

- bare: answers a canned Anthropic message (the server stack alone);
- forward: sends the benchmark's direct request for the case (the request
  ccproxy would send upstream) through ccproxy's upstream client (httpx's
  interface over aiohttp's pool) and relays the upstream's bytes, whole or
  streamed: a proxy with no conversion, no routing and no bookkeeping;
- forward-aiohttp: the same with aiohttp's client called directly.

The case comes from the path (/v1/messages: a, /v1/chat/completions: b,
/v1/responses: c), or is fixed by `case`.

`python bench/relay.py PORT UPSTREAM [KIND]` serves it as `ccproxy serve`
serves ccproxy (uvicorn, no access log, no proxy headers); run.py measures
the forward relay beside ccproxy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as bench  # noqa: E402

CASE_BY_PATH = {"/v1/messages": "a", "/v1/chat/completions": "b", "/v1/responses": "c"}
CANNED = json.dumps(
    {
        "id": "msg_x",
        "type": "message",
        "role": "assistant",
        "model": "claude-bench",
        "content": [{"type": "text", "text": "Hello from the fake upstream."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 12, "output_tokens": 7},
    }
).encode()


def app(kind: str, upstream: str, case: str | None = None):
    from ccproxy.upstream import UpstreamClient, timeout
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    http = UpstreamClient()
    session = None
    jobs: dict[tuple[str, bool], bench.load.Job] = {}  # built once: the floor does no work it could skip

    async def health(request):
        return PlainTextResponse("ok")

    async def handle(request):
        nonlocal session
        body = json.loads(await request.body())
        if kind == "bare":
            return Response(CANNED, media_type="application/json")
        stream = bool(body.get("stream"))
        name = case or CASE_BY_PATH[request.url.path]
        target = jobs.get((name, stream))
        if target is None:
            target = jobs[name, stream] = bench.job(name, "direct", upstream, stream)
        if kind == "forward-aiohttp":
            import aiohttp

            if session is None:
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512), auto_decompress=False)
            answer = await session.post(target.url, data=target.body, headers={"content-type": "application/json"})
            if not stream:
                content = await answer.read()
                answer.release()
                return Response(content, media_type="application/json")

            async def relay_aiohttp():
                try:
                    async for chunk in answer.content.iter_any():
                        yield chunk
                finally:
                    answer.release()

            return StreamingResponse(relay_aiohttp(), media_type="text/event-stream")
        response = await http.send(
            "POST",
            target.url,
            timeout(600),
            target.body,
            {"content-type": "application/json", "accept-encoding": "identity"},
        )
        if not stream:
            content = await response.aread()
            await response.aclose()
            return Response(content, media_type="application/json")

        async def relay():
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return StreamingResponse(relay(), media_type="text/event-stream")

    return Starlette(
        routes=[Route("/health", health, methods=["GET"]), Route("/{path:path}", handle, methods=["POST"])]
    )


def main() -> None:
    import uvicorn

    port, upstream = int(sys.argv[1]), sys.argv[2]
    kind = sys.argv[3] if len(sys.argv) > 3 else "forward"
    uvicorn.run(
        app(kind, upstream), host="127.0.0.1", port=port, log_level="warning", access_log=False, proxy_headers=False
    )


if __name__ == "__main__":
    main()
