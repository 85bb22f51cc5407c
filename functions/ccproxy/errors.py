"""One error type for everything that goes wrong, whichever side it came from.

Codecs turn a ProxyError into their protocol's error body; the HTTP status is
carried unchanged, because that is what every official SDK routes on.
"""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal[
    "invalid_request",
    "authentication",
    "permission",
    "not_found",
    "request_too_large",
    "rate_limit",
    "overloaded",
    "unavailable",
    "timeout",
    "internal",
]

_KIND_BY_STATUS: dict[int, ErrorKind] = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    408: "timeout",
    413: "request_too_large",
    422: "invalid_request",
    429: "rate_limit",
    500: "internal",
    502: "unavailable",
    503: "unavailable",
    504: "timeout",
    529: "overloaded",
}


_STATUS_BY_KIND: dict[str, int] = {
    "invalid_request": 400,
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "request_too_large": 413,
    "rate_limit": 429,
    "internal": 500,
    "unavailable": 503,
    "timeout": 504,
    "overloaded": 529,
}


def status_for_kind(kind: str) -> int:
    """The HTTP status an in-stream error of `kind` would have had, had it
    come before the stream began."""
    return _STATUS_BY_KIND.get(kind, 500)


def kind_for_status(status: int) -> ErrorKind:
    if status in _KIND_BY_STATUS:
        return _KIND_BY_STATUS[status]
    return "invalid_request" if status < 500 else "internal"


class ProxyError(Exception):
    """An error to show the client, in its own protocol's shape.

    `status` is the HTTP status the client sees; `kind` is the protocol-neutral
    meaning that each codec maps to its own error type names.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: ErrorKind | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind: ErrorKind = kind or kind_for_status(status)
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"ProxyError({self.status}, {self.message!r}, kind={self.kind!r})"


def invalid_request(message: str, *, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, kind="invalid_request", param=param)


def not_found(message: str) -> ProxyError:
    return ProxyError(404, message, kind="not_found", code="model_not_found")
