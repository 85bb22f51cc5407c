"""The Starlette app: every route (the README's table), under every prefix.

Handlers stay thin: find the route, check the access key, parse the body,
hand a Call to the Proxy and write its Answer back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, MutableMapping, Sequence

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from . import accesslog, telemetry
from .access import REVOCATION_VIEW_SECONDS
from .config import Config, LogSettings
from .errors import ProxyError
from .exchange import Exchange, Recording
from .jsonutil import TooDeep, dumpb, loads
from .keys import AccessKey, KeyRing, identify, scrub
from .live import ConfigSource, LiveConfig
from .observe import NOBODY, Observer, observing
from .pipeline import LastPiece
from .protocols import client_codecs
from .protocols.base import ClientCodec, ClientContext, Route
from .proxy import Answer, Call, Proxy
from .responses import StreamResponse
from .stores.logs import LogSink
from .stores.secrets import SecretsError, SecretStore
from .stores.state import StateStore

log = logging.getLogger("ccproxy")

PROTOCOL_ROOTS = frozenset({"v1", "v1beta", "api", "health"})
SWITCH = "/switch/"  # the prefix of the active group, which `ccproxy switch` sets
COMPAT_SEGMENTS = frozenset({"compat", "compat_mode"})


@dataclass(slots=True)
class Settings:
    config: Config
    secrets: SecretStore
    # True only where nobody but the machine's own user can connect
    # (a server on loopback): then no access key is needed.
    open_when_no_keys: bool = False
    # Rotation counters, cooldowns and usage; None keeps them in memory.
    state: StateStore | None = None
    # Where exchange records go; None turns research logging off.
    logs: LogSink | None = None
    # On Lambda the environment may freeze once a response is complete, so
    # follow-up work (usage, logs) must finish inside the response.
    finish_inside_response: bool = False
    # Logged when requests are refused for want of an access key: where the
    # operator should put one.
    access_key_hint: str = "set access_keys in the config or the secrets"
    # How long a process trusts what it last read of an access key's
    # revocation (`ccproxy access revoke`) from the state store.
    revocation_view_seconds: float = REVOCATION_VIEW_SECONDS
    # Where a newer config may come from (the file being served, a pushed
    # object), and what is done to each before it serves.
    config_source: ConfigSource | None = None
    prepare_config: Callable[[Config], Config] | None = None
    # Check the source on a timer too, not only when requests come (a local
    # server: a bad file is reported as soon as it is saved).
    watch_config: bool = False


@dataclass(frozen=True, slots=True)
class Prefix:
    group: str
    compat: bool
    path: str  # what follows the prefix


def split_prefix(path: str, active_group: str) -> Prefix:
    """`/{group}`, `/compat`, `/compat_mode`, `/{group}/compat[_mode]` and
    `/switch` (the active group) before a protocol path."""
    segments = path.split("/")
    i, group, compat = 1, "default", False
    if len(segments) > 2 and segments[i] not in PROTOCOL_ROOTS:
        if segments[i] in COMPAT_SEGMENTS:
            compat, i = True, i + 1
        else:
            group = active_group if segments[i] == "switch" else segments[i]
            i += 1
            if len(segments) > i + 1 and segments[i] in COMPAT_SEGMENTS:
                compat, i = True, i + 1
    return Prefix(group, compat, "/" + "/".join(segments[i:]))


def _bare_prefix(path: str, config: Config) -> bool:
    """`/{group}`, `/compat`, `/{group}/compat` or `/switch` with nothing after."""
    segments = [s for s in path.split("/") if s]
    if not 1 <= len(segments) <= 2 or segments[-1] in PROTOCOL_ROOTS:
        return False
    first_is_group = segments[0] in config.groups or segments[0] == "switch"
    if len(segments) == 1:
        return first_is_group or segments[0] in COMPAT_SEGMENTS
    return first_is_group and segments[1] in COMPAT_SEGMENTS


class RouteTable:
    """Every codec's routes; routes that need a header are tried first, so
    `GET /v1/models` with `anthropic-version` lists models the Claude way."""

    def __init__(self, codecs: Sequence[ClientCodec]) -> None:
        entries = [(route, codec, route.compiled()) for codec in codecs for route in codec.routes]
        entries.sort(key=lambda entry: entry[0].header is None)
        self._entries: list[tuple[Route, ClientCodec, re.Pattern[str]]] = entries
        self._codecs = list(codecs)
        self._fallback = codecs[0]

    def owner(self, path: str, headers: Any) -> tuple[ClientCodec, list[str]]:
        """The protocol a path belongs to, for an error in its shape, and the
        methods its routes take there (empty: no route has the path). A path
        no route has belongs to the protocol with the longest root it begins
        with (`/v1beta/...` Gemini, `/api/...` Ollama)."""
        methods: dict[str, ClientCodec] = {}
        for route, codec, pattern in self._entries:
            if (route.header is None or route.header in headers) and pattern.match(path):
                methods.setdefault(route.method, codec)
        if methods:
            return next(iter(methods.values())), sorted(methods)
        roots = [
            (root, codec)
            for codec in self._codecs
            for root in codec.path_roots
            if path == root or path.startswith(root + "/")
        ]
        return (max(roots, key=lambda r: len(r[0]))[1] if roots else self._fallback), []

    def match(self, method: str, path: str, headers: Any) -> tuple[Route, ClientCodec, dict[str, str]] | None:
        for route, codec, pattern in self._entries:
            if route.method != method:
                continue
            if route.header is not None and route.header not in headers:
                continue
            found = pattern.match(path)
            if found:
                return route, codec, found.groupdict()
        return None


def presented_key(request: Request) -> str | None:
    """Any one of four places: each SDK sends its own."""
    headers = request.headers
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or request.query_params.get("key")


def create_app(settings: Settings) -> Starlette:
    live = LiveConfig(settings.config, settings.config_source, settings.prepare_config)
    keys = KeyRing(settings.config, settings.secrets)
    proxy = Proxy(settings.config, keys, state=settings.state, revocation_view_seconds=settings.revocation_view_seconds)
    live.follow(keys.follow)
    live.follow(proxy.follow)
    recorder = Recorder(settings.logs, keys)
    gate = AccessGate(keys, settings.open_when_no_keys, settings.access_key_hint)
    handler = Handler(settings, live, keys, proxy, RouteTable(client_codecs()), recorder, gate)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        watcher = asyncio.create_task(live.watch()) if settings.watch_config else None
        yield
        if watcher is not None:
            watcher.cancel()
        await proxy.http.aclose()

    routes = [
        StarletteRoute("/health", health, methods=["GET"]),
        StarletteRoute("/", root, methods=["GET", "HEAD"]),
        # Every method, so that a wrong one is answered in the protocol's shape.
        StarletteRoute("/{path:path}", handler.dispatch, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.proxy = proxy
    app.state.recorder = recorder
    app.state.live = live
    return app


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def root(request: Request) -> Response:
    # Clients probe the bare URL (Claude Code sends HEAD /) to see that a
    # server is there; nothing about keys or config is said.
    accesslog.write(request.scope, time.perf_counter(), 200)
    return JSONResponse({"service": "ccproxy", "status": "ok"})


class Handler:
    """Every protocol route: find it under its prefix, check the access key,
    read the body, hand a Call to the Proxy and write its Answer back, each
    request observed by the research record and the metrics."""

    def __init__(
        self,
        settings: Settings,
        live: LiveConfig,
        keys: KeyRing,
        proxy: Proxy,
        table: RouteTable,
        recorder: Recorder,
        gate: AccessGate,
    ) -> None:
        self.settings = settings
        self.live = live
        self.keys = keys
        self.proxy = proxy
        self.table = table
        self.recorder = recorder
        self.gate = gate
        self.metrics = telemetry.metrics_enabled()

    async def dispatch(self, request: Request) -> Response:
        started = time.perf_counter()
        scope = request.scope
        path = scope["path"]  # what request.url.path holds, without building a URL per request
        config = await self.live.current()
        active = config.active_group
        if path.startswith(SWITCH):
            active = await self.live.active_group(self.proxy.rotation.state, config)
        prefix = split_prefix(path, active)
        found = self.table.match(request.method, prefix.path, request.headers)
        try:
            access = self.gate.access_keys()
        except ProxyError as error:
            accesslog.write(scope, started, error.status, reason=error.message)
            return _error(found[1] if found else self.table.owner(prefix.path, request.headers)[0], error)
        if found is None and request.method in ("GET", "HEAD") and _bare_prefix(path, config):
            # A base URL that carries a group (URL/free) is probed like the root.
            return await root(request)
        if found is None:
            return self._unrouted(request, prefix, started)
        route, codec, params = found
        observer = self._observer(request, route, codec, prefix.group, config)
        call: Call | None = None
        key: AccessKey | None = None
        try:
            if access:
                key = identify(presented_key(request), access)
                if key is None:
                    raise ProxyError(
                        401, "missing or invalid access key", kind="authentication", code="invalid_api_key"
                    )
                observer.identified(key.name)
                await self.proxy.access.admit(key, prefix.group)
            body = None
            if request.method == "POST" and route.body:
                body = await _json_body(request, config.limits.request_bytes)
                observer.client_request(body[1])
            call = Call(
                codec=codec,
                route=route,
                ctx=ClientContext(
                    model=params.get("model"),
                    stream=route.stream,
                    endpoint=route.endpoint,
                    headers=request.headers,
                    resource=params.get("id"),
                ),
                group=prefix.group,
                compat_prefix=prefix.compat,
                body=body[0] if body else None,
                headers=request.headers,
                config=config,
                observer=observer,
                access_key=key,
            )
            answer = await self.proxy.handle(call)
        except ProxyError as error:
            return await self._refused(error, request, codec, call, observer, started, key)
        except Exception:
            log.exception("unexpected failure on %s %s", request.method, path)
            accesslog.write(
                scope, started, 500, codec.protocol, reason="unexpected failure (see the log above)", key=_name(key)
            )
            return _error(codec, ProxyError(500, "ccproxy failed unexpectedly; see its log", kind="internal"))
        answer.after.append(_finish(observer, answer.status))
        answer.after.append(
            _access_line(scope, started, answer.status, codec.protocol, call.alias, call.target, _name(key))
        )
        return _respond(answer, self.settings.finish_inside_response)

    def _observer(self, request: Request, route: Route, codec: ClientCodec, group: str, config: Config) -> Observer:
        """Who listens to this request: its research record (when sampled)
        and the metrics, for the generate routes."""
        if route.operation != "generate":
            return NOBODY
        metrics = telemetry.Metrics(codec.protocol) if self.metrics else None
        return observing([self.recorder.start(request, codec, group, config.logs), metrics])

    def _unrouted(self, request: Request, prefix: Prefix, started: float) -> Response:
        """404 for a path no route has, 405 for a method its routes do not
        take, in the shape of the protocol the path belongs to."""
        owner, allowed = self.table.owner(prefix.path, request.headers)
        path = request.scope["path"]
        if allowed:
            refusal = ProxyError(
                405, f"{request.method} is not allowed on {path}; use {', '.join(allowed)}", kind="invalid_request"
            )
        else:
            refusal = ProxyError(404, f"no route for {request.method} {path}", kind="not_found")
        accesslog.write(request.scope, started, refusal.status, owner.protocol, reason=refusal.message)
        response = _error(owner, refusal)
        if allowed:
            response.headers["allow"] = ", ".join(allowed)
        return response

    async def _refused(
        self,
        error: ProxyError,
        request: Request,
        codec: ClientCodec,
        call: Call | None,
        observer: Observer,
        started: float,
        key: AccessKey | None = None,
    ) -> Response:
        """The request ends in `error`, in the client protocol's shape, with
        no key in its message."""
        error.message = scrub(error.message, self.keys.secrets())
        alias, target = (call.alias, call.target) if call else (None, None)
        accesslog.write(
            request.scope, started, error.status, codec.protocol, alias, target, error.message, key=_name(key)
        )
        response = _error(codec, error)
        observer.refused(error, bytes(response.body))
        if observer is not NOBODY:
            if self.settings.finish_inside_response:
                await observer.finish(error.status)
            else:
                response.background = BackgroundTask(observer.finish, error.status)
        return response


def _name(key: AccessKey | None) -> str | None:
    return key.name if key is not None else None


def _finish(observer: Observer, status: int) -> Callable[[], Awaitable[None]]:
    async def finish() -> None:
        await observer.finish(status)

    return finish


async def _json_body(request: Request, cap: int) -> tuple[Any, bytes]:
    """The body parsed, and as it came."""
    raw = await _body(request, cap)
    if not raw:
        raise ProxyError(400, "the request has no body; send a JSON object")
    try:
        return loads(raw), raw
    except TooDeep as exc:
        raise ProxyError(400, f"the request body is {exc}") from None
    except ValueError as exc:
        raise ProxyError(400, f"the request body is not valid JSON: {exc}") from None


async def _body(request: Request, cap: int) -> bytes:
    """The request body, read under its cap: refused as soon as it is known
    to be larger, before it is held. Read from the ASGI messages themselves:
    Starlette's stream() would cost an async generator per request."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(cap)
    pieces, total = [], 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":  # the client went away
            raise ClientDisconnect()
        piece = message.get("body", b"")
        total += len(piece)
        if total > cap:
            raise _too_large(cap)
        pieces.append(piece)
        if not message.get("more_body", False):
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _too_large(cap: int) -> ProxyError:
    return ProxyError(413, f"the request body is larger than {cap} bytes", kind="request_too_large")


def _error(codec: ClientCodec, error: ProxyError) -> Response:
    # Written by dumpb: a message that quotes the client's text may hold a
    # lone surrogate, which it escapes where Starlette's JSON would fail.
    return Response(
        dumpb(codec.encode_error(error)),
        status_code=error.status,
        headers=codec.error_headers(error),
        media_type="application/json",
    )


def _access_line(
    scope: MutableMapping[str, Any],
    started: float,
    status: int,
    protocol: str,
    alias: str | None,
    target: str | None,
    key: str | None = None,
):
    """The access log line, written once the answer's last byte is out."""

    async def write() -> None:
        accesslog.write(scope, started, status, protocol, alias, target, key=key)

    return write


def _respond(answer: Answer, finish_inside: bool = False) -> Response:
    if answer.stream is not None:
        # A stream starts its follow-up work itself once its last byte is
        # out, even if the client hung up; on Lambda the response ends only
        # after the work (the environment may freeze right after).
        return StreamResponse(
            _then(answer.stream, answer.after, wait=finish_inside),
            status_code=answer.status,
            media_type=answer.media_type,
            headers=answer.headers,
        )
    # Written by jsonutil, which escapes a lone surrogate a client sent and
    # an answer repeats (a compaction's user turns, a kept response), where
    # Starlette's JSONResponse would fail to encode it.
    raw = answer.raw if answer.raw is not None else dumpb(answer.json)
    if finish_inside and answer.after:
        # The whole body goes out first with its length, so the client has
        # its answer at once; the response ends only after the follow-up work.
        headers = {**answer.headers, "content-length": str(len(raw))}
        return StreamResponse(
            _then(_once(raw), answer.after),
            status_code=answer.status,
            media_type=answer.media_type,
            headers=headers,
        )
    background = BackgroundTask(_run_all, answer.after) if answer.after else None
    return Response(
        raw, status_code=answer.status, media_type=answer.media_type, headers=answer.headers, background=background
    )


_pending: set[asyncio.Task] = set()


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _then(stream: AsyncIterator[bytes], after: list, wait: bool = True) -> AsyncIterator[bytes]:
    """The stream, then its follow-up work. The work runs in a task of its
    own, so a client that goes away (cancelling or closing the stream, even
    while the work runs) cannot cut it short. With `wait`, a stream that ends
    normally stays open until the work is done (on Lambda it must finish
    inside the response); without, the client has its last byte at once."""
    work: asyncio.Task | None = None
    try:
        async for piece in stream:
            # While work remains, the response must not end with the stream.
            yield bytes(piece) if wait and type(piece) is LastPiece else piece
    finally:
        work = _spawn(_run_all(after))
    if work is not None and wait:
        await asyncio.shield(work)


def _spawn(work: Any) -> asyncio.Task | None:
    try:
        task = asyncio.get_running_loop().create_task(work)
    except RuntimeError:  # no loop left (interpreter shutdown): nothing to record into
        work.close()
        return None
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    return task


async def _run_all(after: list) -> None:
    for task in after:
        await task()


class AccessGate:
    """Whether the proxy can serve at all. With no access key configured it
    is open only where that is safe (a server on loopback); anywhere else,
    and while the keys cannot be read, every route is refused with 503 in
    its protocol's shape, and the reason is logged at most once a minute."""

    LOG_INTERVAL = 60.0

    def __init__(self, keys: KeyRing, open_when_no_keys: bool, hint: str) -> None:
        self.keys = keys
        self.open_when_no_keys = open_when_no_keys
        self.hint = hint
        self._logged: dict[str, float] = {}

    def access_keys(self) -> list[AccessKey]:
        """The keys a client must present (empty: none needed). Raises a 503
        ProxyError when the proxy cannot serve."""
        try:
            keys = self.keys.access_keys()
        except SecretsError as exc:
            self._refuse(f"the keys cannot be read: {exc}")
            raise ProxyError(
                503, "ccproxy is not ready: its keys cannot be read (see its log)", kind="unavailable"
            ) from None
        if not keys and not self.open_when_no_keys:
            self._refuse(f"no access key is configured: {self.hint}")
            raise ProxyError(503, "ccproxy is not ready: no access key is configured (see its log)", kind="unavailable")
        return keys

    def _refuse(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(reason, -self.LOG_INTERVAL) >= self.LOG_INTERVAL:
            self._logged[reason] = now
            log.error("refusing every request: %s", reason)


class Recorder:
    """Starts a research record (an observer) for sampled generate requests;
    it is written to the sink once the answer is complete."""

    def __init__(self, sink: LogSink | None, keys: KeyRing) -> None:
        self.sink = sink
        self.keys = keys

    def start(self, request: Request, codec: ClientCodec, group: str, settings: LogSettings) -> Recording | None:
        if self.sink is None:
            return None
        if settings.sample < 1 and random.random() >= settings.sample:
            return None
        exchange = Exchange(
            route=f"{request.method} {request.url.path}",
            client_protocol=codec.protocol,
            group=group,
            limit=settings.max_body_bytes,
        )
        return Recording(exchange, self.keys.secrets, self._write)

    async def _write(self, record: dict[str, Any]) -> None:
        sink = self.sink
        if sink is not None and not await asyncio.to_thread(sink.safe_write, record):
            telemetry.count("LogWriteFailures")
