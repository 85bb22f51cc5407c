#!/bin/bash
# Entry of the streaming function: the Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap)
# runs this, polls AWS_LWA_READINESS_CHECK_PATH until uvicorn answers, then
# forwards each invocation to uvicorn on AWS_LWA_PORT and streams the answer back.
# Outside Lambda it is just uvicorn serving the app (and really streaming).
PATH=$PATH:$LAMBDA_TASK_ROOT/bin:/opt/python/bin
export PYTHONPATH=/opt/python:$LAMBDA_TASK_ROOT:$PYTHONPATH
# stdout carries the JSON logs and EMF metrics: unbuffered, so nothing waits
# in a buffer while the environment is frozen between invocations.
export PYTHONUNBUFFERED=1
exec python -m uvicorn --host 127.0.0.1 --port "${AWS_LWA_PORT:-${PORT:-8765}}" \
    --no-access-log --timeout-graceful-shutdown 2 --factory ccproxy.lambda_app:create
