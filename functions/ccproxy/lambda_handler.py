"""AWS Lambda entry point of the API function: the app wrapped by Mangum.

Built once per execution environment, at import, so every warm invocation
reuses the app, its config and its pooled HTTP client. Lifespan is off:
Mangum would otherwise run startup on every invocation.
"""

from __future__ import annotations

from mangum import Mangum

from .lambda_app import create

app = create()
handler = Mangum(app, lifespan="off")
