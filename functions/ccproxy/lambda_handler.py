"""AWS Lambda entry point of the API function: the app wrapped by Mangum.

Built once per execution environment, at import, so every warm invocation
reuses the app, its config and its pooled HTTP client. Lifespan is off:
Mangum would otherwise run startup on every invocation. Mangum buffers, so a
streamed answer comes back whole (still valid SSE or NDJSON).
"""

from __future__ import annotations

from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES

from .lambda_app import create

app = create()
# Ollama streams NDJSON: send it as text rather than base64.
handler = Mangum(app, lifespan="off", text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, "application/x-ndjson"])
