"""What the proxy reports while it serves one request, and who listens.

The request path calls an `Observer` at each step (routed, attempt started,
upstream bytes, attempt failed, client bytes, answered, finished) and never
asks whether anyone listens: the research record (exchange.Recording) and
the metrics (telemetry.Metrics) are observers, and a request nobody observes
gets `NOBODY`, whose methods do nothing.

Observers must not raise into the request and must not keep the client
waiting: what takes time (writing a record) happens in `finish`, which runs
once the answer's last byte is out.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ProxyError
from .unified import Request, Response


class Observer:
    """One request's listener. Every method is a no-op here; an observer
    overrides those it cares about."""

    def identified(self, access_key: str) -> None:
        """The name of the access key the client presented (never the key)."""

    def client_request(self, body: bytes) -> None:
        """The client's request body as it arrived."""

    def routed(self, group: str, alias: str, request: Request, rule: str | None) -> None:
        """The request decoded and matched to an alias of a group, or to the
        route rule named by `rule`."""

    def attempt_started(
        self, provider: str, model: str, protocol: str, key_fingerprint: str, compat: bool, passthrough: bool
    ) -> None:
        """An upstream is about to be tried (the first, or the next after a failure)."""

    def shaped(self, steps: Sequence[str]) -> None:
        """The group's shaping steps that changed the request for this attempt."""

    def upstream_request(self, body: bytes, left_out: Sequence[str]) -> None:
        """The body sent upstream, and what of the client's request it could not carry."""

    def upstream_answered(self) -> None:
        """The upstream's answer began (its status and headers are in)."""

    def upstream_chunk(self, chunk: bytes) -> None:
        """A piece of the upstream's answer, as it arrived."""

    def attempt_failed(self, provider: str, model: str, key_fingerprint: str, error: ProxyError) -> None:
        """The attempt ended in `error` (the next may follow)."""

    def client_chunk(self, piece: bytes) -> None:
        """A piece of the client's answer, as it goes out (a whole answer is one piece)."""

    def answered(self, response: Response, error: ProxyError | None, upstream_latency_ms: float) -> None:
        """The answer is complete: assembled, with its usage; `error` when a
        stream ended in one."""

    def refused(self, error: ProxyError, body: bytes) -> None:
        """The request ends in an error answer (`body`, in the client's shape)."""

    async def finish(self, status: int) -> None:
        """The last byte is out (or the client left): slow work goes here."""


class Observers(Observer):
    """Several observers heard as one, in order."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = tuple(observers)

    def identified(self, access_key: str) -> None:
        for observer in self.observers:
            observer.identified(access_key)

    def client_request(self, body: bytes) -> None:
        for observer in self.observers:
            observer.client_request(body)

    def routed(self, group: str, alias: str, request: Request, rule: str | None) -> None:
        for observer in self.observers:
            observer.routed(group, alias, request, rule)

    def attempt_started(
        self, provider: str, model: str, protocol: str, key_fingerprint: str, compat: bool, passthrough: bool
    ) -> None:
        for observer in self.observers:
            observer.attempt_started(provider, model, protocol, key_fingerprint, compat, passthrough)

    def shaped(self, steps: Sequence[str]) -> None:
        for observer in self.observers:
            observer.shaped(steps)

    def upstream_request(self, body: bytes, left_out: Sequence[str]) -> None:
        for observer in self.observers:
            observer.upstream_request(body, left_out)

    def upstream_answered(self) -> None:
        for observer in self.observers:
            observer.upstream_answered()

    def upstream_chunk(self, chunk: bytes) -> None:
        for observer in self.observers:
            observer.upstream_chunk(chunk)

    def attempt_failed(self, provider: str, model: str, key_fingerprint: str, error: ProxyError) -> None:
        for observer in self.observers:
            observer.attempt_failed(provider, model, key_fingerprint, error)

    def client_chunk(self, piece: bytes) -> None:
        for observer in self.observers:
            observer.client_chunk(piece)

    def answered(self, response: Response, error: ProxyError | None, upstream_latency_ms: float) -> None:
        for observer in self.observers:
            observer.answered(response, error, upstream_latency_ms)

    def refused(self, error: ProxyError, body: bytes) -> None:
        for observer in self.observers:
            observer.refused(error, body)

    async def finish(self, status: int) -> None:
        for observer in self.observers:
            await observer.finish(status)


NOBODY = Observer()


def observing(observers: Sequence[Observer | None]) -> Observer:
    """One observer for those given (None: not listening this time)."""
    present = [observer for observer in observers if observer is not None]
    if not present:
        return NOBODY
    return present[0] if len(present) == 1 else Observers(present)
