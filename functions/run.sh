#!/bin/bash
# Entry of the streaming function: the Lambda Web Adapter starts this and
# proxies each invocation to uvicorn on AWS_LWA_PORT, streaming the answer.
PATH=$PATH:$LAMBDA_TASK_ROOT/bin:/opt/python/bin
export PYTHONPATH=/opt/python:$LAMBDA_TASK_ROOT:$PYTHONPATH
exec python -m uvicorn --host 127.0.0.1 --port "${AWS_LWA_PORT:-8765}" --no-access-log --factory ccproxy.lambda_app:create
