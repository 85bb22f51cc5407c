"""Images and documents made fit for the upstream a request goes to.

An upstream that cannot fetch a URL itself (a declared capability of its
codec) gets the content inline, fetched here under the config's guard; a
document type it cannot read at all is the client's to change: a 400 that
names the upstream.
"""

from __future__ import annotations

import base64

from .config import FetchSettings
from .errors import ProxyError
from .protocols.base import UpstreamCodec
from .unified import Document, Image, Request, ToolResult
from .upstream import UpstreamClient


async def prepare_media(
    request: Request, upstream: UpstreamCodec, provider_id: str, settings: FetchSettings, http: UpstreamClient
) -> None:
    """Every image and document of `request` as `upstream` can take it,
    changed in place."""
    for part in _media(request):
        if isinstance(part, Document):
            if part.text is not None:
                continue
            if part.media_type not in upstream.document_types:
                raise ProxyError(
                    400,
                    f"{request.model!r} routes to provider {provider_id!r}, whose protocol "
                    f"({upstream.protocol}) cannot read {part.media_type} documents; send the document's "
                    "text instead, or use a model that reads them",
                    param="messages",
                )
            if part.data is None and not upstream.document_urls:
                part.data, part.media_type, part.url = *await _fetch(http, part.url or "", "document", settings), None
        elif part.data is None and part.url and upstream.needs_inline_images:
            part.data, part.media_type, part.url = *await _fetch(http, part.url, "image", settings), None


async def _fetch(http: UpstreamClient, url: str, what: str, settings: FetchSettings) -> tuple[str, str]:
    """The base64 content and media type at `url`, fetched under the
    config's guard (public addresses only, size and time caps)."""
    from .fetch import FetchPolicy, fetch_media  # only requests that name a URL need it

    policy = FetchPolicy(max_bytes=settings.max_bytes, timeout=settings.timeout, allow=tuple(settings.allow))
    content, media_type = await fetch_media(http, url, policy, what)
    return base64.b64encode(content).decode(), media_type


def _media(request: Request) -> list[Image | Document]:
    """Every image and document of the request, those in tool results too."""
    found: list[Image | Document] = []
    for message in request.messages:
        for part in message.content:
            if isinstance(part, (Image, Document)):
                found.append(part)
            elif isinstance(part, ToolResult):
                found.extend(p for p in part.content if isinstance(p, (Image, Document)))
    return found
