"""Bad client input never gets a 5xx.

Every client route gets seeded fuzz cases (tests/fuzz/strategies.py): a valid
body broken 1-3 ways, whole bodies that are not JSON objects, wrong headers;
and wrong methods and unknown paths under each protocol's roots. Each answer
must be below 500; an error must be in the route's protocol's shape (a 404 or
405 for a path in the shape of the protocol the path belongs to); a streamed
200 must end properly or with the protocol's error event. After each route's
batch, a good request still gets its 200.

    CCPROXY_FUZZ_CASES   cases per route (default 150; `make fuzz` sets thousands)
    CCPROXY_FUZZ_SEED    the seed (default fixed, so `make test` is repeatable)
    CCPROXY_FUZZ_ONLY    comma-separated case indices: replay just those
    CCPROXY_FUZZ_REPORT  a file to append every failure to, one JSON object a line
    CCPROXY_FUZZ_SHRINK  requests spent shrinking each failure class's example (default 150; 0: off)

A failure names the seed, route, case index and the exact request (truncated);
`strategies.case(route, seed, index)` rebuilds it. The smallest example of
each failure class is then shrunk (fields deleted, strings and lists cut)
while the server still fails the same way, and shown as a minimal body. The
proxy's traceback for a 500 ("unexpected failure", logged by ccproxy.app) is
caught from its logger and shown with the file and function where it was
raised.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from ccproxy.stores.state import MemoryStateStore

from tests.integration.conftest import proxy_config, serving

from .strategies import PATHS_ROUTE, ROUTE_NAMES, ROUTES, Case, case, encode, get, headers_for, nodes

CASES = int(os.environ.get("CCPROXY_FUZZ_CASES") or 150)
SEED = int(os.environ.get("CCPROXY_FUZZ_SEED") or 20250611)
ONLY = [int(i) for i in (os.environ.get("CCPROXY_FUZZ_ONLY") or "").split(",") if i.strip()] or None
REPORT = os.environ.get("CCPROXY_FUZZ_REPORT")
# Requests spent shrinking each failure class's smallest example (0: none).
SHRINK = int(os.environ.get("CCPROXY_FUZZ_SHRINK") or 150)
SHRUNK_CLASSES = 10  # per route
TIMEOUT = 60.0
# The fakes keep every request; let them go now and then (bodies can be megabytes).
RESET_EVERY = 50
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the server's log


class ServerLog(logging.Handler):
    """Warnings and errors from the proxy (ccproxy.*) and from uvicorn (an
    exception inside a stream), kept until drained."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self._records.append(record)

    def drain(self) -> list[logging.LogRecord]:
        with self._lock:
            records, self._records = self._records, []
        return records

    def attach(self) -> None:
        """Catch the proxy's log (kept from pytest's log capture, which would
        print a traceback per failing case) and uvicorn's (which does not
        propagate). Each uvicorn Config re-applies its logging config,
        dropping handlers: attached again before each batch."""
        for name in ("ccproxy", "uvicorn"):
            logger = logging.getLogger(name)
            if self not in logger.handlers:
                logger.addHandler(self)
        logging.getLogger("ccproxy").propagate = False

    def detach(self) -> None:
        for name in ("ccproxy", "uvicorn"):
            logging.getLogger(name).removeHandler(self)
        logging.getLogger("ccproxy").propagate = True


def _frame(frame: traceback.FrameSummary) -> str:
    try:
        name = str(Path(frame.filename).resolve().relative_to(REPO))
    except ValueError:
        name = frame.filename
    return f"{name}:{frame.lineno} in {frame.name}"


def server_errors(records: list[logging.LogRecord]) -> list[dict[str, str]]:
    """Each logged exception: its type and message, and where it was raised
    (the innermost frame in functions/ccproxy, and the innermost of all)."""
    found = []
    for record in records:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            frames = traceback.extract_tb(exc.__traceback__)
            ours = [f for f in frames if "/functions/ccproxy/" in f.filename]
            found.append({
                "log": f"{record.name}: {record.getMessage()[:200]}",
                "exception": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                "where": _frame(ours[-1]) if ours else (_frame(frames[-1]) if frames else "?"),
                "innermost": _frame(frames[-1]) if frames else "?",
            })
        elif record.levelno >= logging.ERROR:
            found.append({"log": f"{record.name}: {record.getMessage()[:300]}", "exception": "", "where": "", "innermost": ""})
    return found


# ---------------------------------------------------------------- the stack


@pytest.fixture(scope="module")
def fuzz_stack():
    """The strict fakes (answering "text" by default) and the proxy in
    front of them, with the integration tests' config."""
    with serving(proxy_config, "fuzz-config") as (url, fakes, app):
        log = ServerLog()
        yield url, fakes, app, log
        log.detach()


# ---------------------------------------------------------------- error shapes


def _text(value: Any) -> bool:
    return isinstance(value, str)


def openai_problem(body: Any, status: int | None) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "no error object"
    if not (_text(error.get("message")) and _text(error.get("type"))):
        return "error.message and error.type must be strings"
    return None


def claude_problem(body: Any, status: int | None) -> str | None:
    if not isinstance(body, dict) or body.get("type") != "error":
        return 'no "type": "error"'
    error = body.get("error")
    if not (isinstance(error, dict) and _text(error.get("type")) and _text(error.get("message"))):
        return "error.type and error.message must be strings"
    return None


def gemini_problem(body: Any, status: int | None) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "no error object"
    code = error.get("code")
    if not (isinstance(code, int) and not isinstance(code, bool) and _text(error.get("message")) and _text(error.get("status"))):
        return "error.code (int), error.message and error.status (strings) required"
    if status is not None and code != status:
        return f"error.code {code} is not the HTTP status {status}"
    return None


def ollama_problem(body: Any, status: int | None) -> str | None:
    if not (isinstance(body, dict) and _text(body.get("error"))):
        return 'no "error" string'
    return None


# The Responses API answers errors in the OpenAI shape.
SHAPES = {"openai": openai_problem, "claude": claude_problem, "gemini": gemini_problem, "ollama": ollama_problem,
          "responses": openai_problem}


def shape_of(body: Any) -> str:
    """Which protocol's error shape a body has (for the failure class)."""
    for protocol in ("claude", "gemini", "openai", "ollama"):
        if SHAPES[protocol](body, None) is None:
            return protocol
    return "no known"


# ---------------------------------------------------------------- stream ends


def sse_events(content: bytes) -> list[tuple[str | None, str]]:
    text = content.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


def _json_or_none(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def stream_problem(protocol: str, content: bytes) -> str | None:
    """None when the stream ends the protocol's proper way or with its error event."""
    try:
        if protocol == "ollama":
            lines = [line for line in content.split(b"\n") if line.strip()]
            last = _json_or_none(lines[-1]) if lines else None
            if isinstance(last, dict) and (last.get("done") is True or ollama_problem(last, None) is None):
                return None
            return f"the NDJSON stream does not end with a done line or an error line: {content[-200:]!r}"
        events = sse_events(content)
    except UnicodeDecodeError:
        return "the stream is not UTF-8"
    if not events:
        return "an empty stream"
    name, data = events[-1]
    last = _json_or_none(data)
    if protocol == "responses":
        return responses_stream_problem(name, last, data)
    if protocol == "openai":
        if data == "[DONE]" or openai_problem(last, None) is None:
            return None
        return f"the stream ends without [DONE] or an error event: {data[-200:]!r}"
    if protocol == "claude":
        if name == "message_stop" or (name == "error" and claude_problem(last, None) is None):
            return None
        return f"the stream ends without message_stop or an error event: {name} {data[-200:]!r}"
    candidates = last.get("candidates") if isinstance(last, dict) else None
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict) and candidates[0].get("finishReason"):
        return None
    if gemini_problem(last, None) is None:
        return None
    return f"the stream ends without a finishReason or an error chunk: {data[-200:]!r}"


def responses_stream_problem(name: str | None, last: Any, data: str) -> str | None:
    """A Responses stream ends with response.completed (or .incomplete), or
    fails with response.failed carrying its error, or an error event."""
    if name in ("response.completed", "response.incomplete"):
        return None
    response = last.get("response") if isinstance(last, dict) else None
    if name == "response.failed" and isinstance(response, dict) and isinstance(response.get("error"), dict):
        if _text(response["error"].get("message")):
            return None
    if name == "error" and isinstance(last, dict) and _text(last.get("message")):
        return None
    return f"the stream ends without response.completed or an error event: {name} {data[-200:]!r}"


# ---------------------------------------------------------------- one case


@dataclass
class Outcome:
    status: int | None
    kind: str = ""       # the failure class (empty: passed)
    detail: str = ""
    answer: str = ""     # what the server answered, truncated
    server: list[dict[str, str]] = field(default_factory=list)


def judge(c: Case, status: int, headers: httpx.Headers, content: bytes) -> tuple[str, str]:
    """(failure class, detail); ("", "") when the answer is right."""
    if status >= 500:
        return f"{status}", ""
    if c.expect_status is not None and status not in c.expect_status:
        return f"{status} where 404/405 belongs", ""
    if 300 <= status < 400:
        return f"{status} redirect", headers.get("location", "")
    media = headers.get("content-type", "")
    if status >= 400:
        body = _json_or_none(content)
        if body is None:
            return f"{status} error that is not JSON ({media.split(';')[0] or 'no content type'})", ""
        problem = SHAPES[c.protocol](body, status)
        if problem:
            return f"{status} error in the {shape_of(body)} shape where the {c.protocol} shape belongs", problem
        return "", ""
    if "text/event-stream" in media or "ndjson" in media:
        problem = stream_problem(c.protocol, content)
        return ("200 stream that ends badly", problem) if problem else ("", "")
    if _json_or_none(content) is None:
        return "200 answer that is not JSON", ""
    return "", ""


def send(client: httpx.Client, c: Case) -> Outcome:
    try:
        response = client.request(c.method, c.path, headers=c.headers, content=c.content)
    except httpx.TransportError as exc:
        return Outcome(None, f"transport error {type(exc).__name__}", str(exc)[:200])
    kind, detail = judge(c, response.status_code, response.headers, response.content)
    answer = response.content[:300].decode("utf-8", "replace")
    return Outcome(response.status_code, kind, detail, answer)


def good_case(route: str) -> Case:
    spec = ROUTES["openai-chat" if route == PATHS_ROUTE else route]
    return Case(spec.name, SEED, -1, spec.protocol, "POST", spec.good_path(), headers_for(spec.protocol),
                encode(spec.good_body()), ["none: the route's good request"])


def attempt(client: httpx.Client, log: ServerLog, app, c: Case) -> Outcome:
    """One case sent; on a failure, the server's logged exceptions attached."""
    log.drain()
    outcome = send(client, c)
    if outcome.kind:
        time.sleep(0.02)  # a stream's exception is logged as the connection drops
        outcome.server = server_errors(log.drain())
        # Let one case's failure (a key cooling down) not decide the next ones.
        rest_keys(app)
    return outcome


def _without(body: Any, path: tuple) -> Any:
    body = copy.deepcopy(body)
    del get(body, path[:-1])[path[-1]]
    return body


def _simpler(body: Any) -> Iterator[Any]:
    """Bodies one step simpler: a long string or list cut down, then each
    node (outermost first) deleted."""
    for path, value in nodes(body):
        if path and isinstance(value, str) and len(value) > 8:
            cut = copy.deepcopy(body)
            get(cut, path[:-1])[path[-1]] = value[:1]
            yield cut
        if isinstance(value, list) and len(value) > 1:
            cut = copy.deepcopy(body)
            if path:
                get(cut, path[:-1])[path[-1]] = value[:1]
            else:
                cut = value[:1]
            yield cut
    for path, _ in nodes(body):
        if path:
            yield _without(body, path)


def depth(value: Any) -> int:
    """How deep a parsed body nests, without recursing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
    return deepest


def shrink(client: httpx.Client, log: ServerLog, app, failure: Failure) -> tuple[bytes, int] | None:
    """The failing body made as small as it stays failing the same way (same
    class, same exception raised at the same place), within SHRINK requests;
    None when the body is not JSON Python can read back (deep nesting,
    invalid UTF-8), or nothing could be cut."""
    try:
        body = json.loads(failure.case.content)
    except (ValueError, RecursionError):
        return None
    if depth(body) > 100:  # copying and walking it would recurse too deep here
        return None
    budget, shrunk = SHRINK, False
    while budget > 0:
        for candidate in _simpler(body):
            budget -= 1
            try:
                content = encode(candidate)
            except (ValueError, RecursionError):
                continue
            c = dataclasses.replace(failure.case, content=content)
            if Failure(c, attempt(client, log, app, c)).key() == failure.key():
                body, shrunk = candidate, True
                break
            if budget <= 0:
                break
        else:
            break  # nothing simpler fails the same way
    return (encode(body), SHRINK - budget) if shrunk else None


def rest_keys(app) -> None:
    rotation = app.state.proxy.rotation
    rotation.state = MemoryStateStore()
    views = getattr(rotation, "_views", None)  # cached per-pool views, where the rotation keeps them
    if isinstance(views, dict):
        views.clear()


def run_cases(route: str) -> Iterator[Case]:
    for index in ONLY if ONLY is not None else range(CASES):
        yield case(route, SEED, index)


# ---------------------------------------------------------------- the report


@dataclass
class Failure:
    case: Case
    outcome: Outcome
    minimal: bytes | None = None  # the body shrunk, failing the same way

    def key(self) -> tuple[str, ...]:
        first = self.outcome.server[0] if self.outcome.server else {}
        return (self.outcome.kind, first.get("exception", "").split(":")[0], first.get("where", ""))

    def record(self) -> dict[str, Any]:
        c = self.case
        return {"route": c.route, "seed": c.seed, "index": c.index, "method": c.method, "path": c.path,
                "mutations": c.mutations, "body": c.content[:2000].decode("utf-8", "backslashreplace"),
                "body_bytes": len(c.content), "status": self.outcome.status, "class": self.outcome.kind,
                "detail": self.outcome.detail, "answer": self.outcome.answer, "server": self.outcome.server,
                "minimal": None if self.minimal is None else self.minimal.decode("utf-8", "backslashreplace")}


def classes(failures: list[Failure]) -> dict[tuple[str, ...], list[Failure]]:
    groups: dict[tuple[str, ...], list[Failure]] = defaultdict(list)
    for failure in failures:
        groups[failure.key()].append(failure)
    return groups


def smallest(group: list[Failure]) -> Failure:
    return min(group, key=lambda f: (len(f.case.content), len(f.case.mutations), f.case.index))


def report(route: str, total: int, failures: list[Failure], good: Outcome) -> str:
    groups = classes(failures)
    lines = [(f"route {route}: {len(failures)} of {total} cases failed (CCPROXY_FUZZ_SEED={SEED}); "
              f"the good request afterwards: {good.status} {good.kind or 'ok'}")]
    if good.kind:
        lines.append(f"    good request answer: {good.answer[:200]!r} {good.detail}")
        for error in good.server:
            lines.append(f"    server: {error['exception'] or error['log']} at {error['where']}")
    ordered = sorted(groups.values(), key=len, reverse=True)
    for n, group in enumerate(ordered[:15], 1):
        example = smallest(group)
        outcome = example.outcome
        raised = outcome.server[0] if outcome.server and outcome.server[0]["where"] else None
        title = f"{outcome.kind} ({raised['exception'].split(':')[0]} at {raised['where']})" if raised else outcome.kind
        lines.append(f"[{n}] {title}: {len(group)} case(s), e.g. case {example.case.index}")
        if outcome.detail:
            lines.append(f"    problem: {outcome.detail}")
        for error in outcome.server[:2]:
            lines.append(f"    server: {error['exception'] or error['log']}")
            if error["where"]:
                lines.append(f"        at {error['where']} (innermost: {error['innermost']})")
        lines.append(f"    answer: {outcome.answer[:200]!r}")
        lines.append("    request: " + example.case.describe(300))
        if example.minimal is not None:
            lines.append(f"    minimal body (fails the same way): {example.minimal[:300]!r}")
        lines.append("    replay: " + example.case.replay())
    if len(ordered) > 15:
        lines.append(f"... and {len(ordered) - 15} more failure classes")
    return "\n".join(lines)


# ---------------------------------------------------------------- the test


def run_batch(client: httpx.Client, log: ServerLog, app, fakes: dict, route: str) -> tuple[int, list[Failure]]:
    failures: list[Failure] = []
    total = 0
    for c in run_cases(route):
        if total % RESET_EVERY == 0:
            for fake in fakes.values():
                fake.reset()
        total += 1
        outcome = attempt(client, log, app, c)
        if outcome.kind:
            failures.append(Failure(c, outcome))
    if SHRINK:
        for group in sorted(classes(failures).values(), key=len, reverse=True)[:SHRUNK_CLASSES]:
            example = smallest(group)
            found = shrink(client, log, app, example)
            if found is not None:
                example.minimal = found[0]
    return total, failures


@pytest.mark.parametrize("route", ROUTE_NAMES)
def test_bad_client_input_never_gets_a_5xx(fuzz_stack, route):
    url, fakes, app, log = fuzz_stack
    log.attach()
    try:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
            total, failures = run_batch(client, log, app, fakes, route)
            # The server still answers a good request after all that.
            good = attempt(client, log, app, good_case(route))
            if good.status != 200 and not good.kind:
                good.kind = f"{good.status} where 200 belongs"
                good.server = server_errors(log.drain())
    finally:
        log.detach()
        for fake in fakes.values():
            fake.reset()
    if REPORT and failures:
        with open(REPORT, "a", encoding="utf-8") as out:
            for failure in failures:
                out.write(json.dumps(failure.record()) + "\n")
    if failures or good.kind:
        pytest.fail(report(route, total, failures, good), pytrace=False)
