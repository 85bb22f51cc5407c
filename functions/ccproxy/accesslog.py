"""One line per request: what was asked, what it became, how it ended.

Locally it is a plain line on stderr; on Lambda the `ccproxy` logger is
Powertools' JSON logger, and the fields arrive as keys of their own.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping
from urllib.parse import parse_qsl, quote

log = logging.getLogger("ccproxy.access")

# Query parameters that carry a key (clients may send `?key=`), never logged.
SECRET_PARAMS = frozenset({"key", "api_key", "access_token"})


def logged_path(scope: Mapping[str, Any]) -> str:
    """The request's path and query, with every key in the query masked."""
    path: str = scope["path"]
    query = scope.get("query_string") or b""
    if not query:
        return path
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    shown = "&".join(f"{quote(k)}={'***' if k.lower() in SECRET_PARAMS else quote(v)}" for k, v in pairs)
    return f"{path}?{shown}"


def write(
    scope: Mapping[str, Any],
    started: float,
    status: int,
    protocol: str | None = None,
    alias: str | None = None,
    target: str | None = None,
    reason: str | None = None,
    *,
    key: str | None = None,
) -> None:
    """The request's line; `reason` says why a refused request was refused;
    `key` is the name of the access key presented (never the key)."""
    if not log.isEnabledFor(logging.INFO):
        return
    method, path = scope["method"], logged_path(scope)
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    route = f"{alias} -> {target}" if alias and target else (alias or "")
    who = f"key {key}" if key else ""
    message = " ".join(p for p in (method, path, str(status), protocol or "", route, who, f"{duration_ms} ms") if p)
    if reason:
        message += f": {reason}"
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "protocol": protocol,
        "alias": alias,
        "target": target,
        "access_key": key,
        "duration_ms": duration_ms,
        "reason": reason,
    }
    log.info(message, extra={"access": fields})
