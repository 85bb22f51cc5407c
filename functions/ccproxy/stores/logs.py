"""Where exchange records go: a local directory or an S3 bucket, as gzipped
single-line JSON under date and hour partitions.

Writing happens after the answer is complete; a sink that fails is logged
and counted, never raised into the request.
"""

from __future__ import annotations

import gzip
import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator

from ..environment import Environment
from ..jsonutil import dumpb

log = logging.getLogger("ccproxy")


class LogSink(ABC):
    """Stores exchange records and reads them back (for `ccproxy logs`)."""

    failures = 0

    @abstractmethod
    def write(self, record: dict[str, Any]) -> None: ...

    @abstractmethod
    def keys(self, day: str | None = None) -> list[str]:
        """Object keys (relative to the sink's root), oldest first."""

    @abstractmethod
    def read(self, key: str) -> dict[str, Any]: ...

    def find(self, record_id: str) -> dict[str, Any] | None:
        for key in reversed(self.keys()):
            if key.endswith(f"/{record_id}.json.gz") or record_id in key.rsplit("/", 1)[-1]:
                return self.read(key)
        return None

    def safe_write(self, record: dict[str, Any]) -> bool:
        """Writes the record; False (logged) when it could not."""
        try:
            self.write(record)
            return True
        except Exception as exc:  # the answer is already out; the record is lost, the request is not
            type(self).failures += 1
            log.error("exchange log not written (%s: %s)", type(exc).__name__, exc)
            return False


def object_key(record: dict[str, Any], prefix: str = "") -> str:
    """`{prefix}dt=YYYY-MM-DD/hour=HH/{id}.json.gz`: partitions Athena can
    project without crawling."""
    received = record["received"]
    return f"{prefix}dt={received[:10]}/hour={received[11:13]}/{record['id']}.json.gz"


def encode(record: dict[str, Any]) -> bytes:
    """One gzipped line of compact UTF-8 JSON. Text that UTF-8 cannot hold (a
    lone surrogate from a client's `"\\ud800"` escape, a truncated emoji) is
    written escaped, so any record is stored and reads back as it was; a
    plain `.encode()` raised on it and the record was lost."""
    return gzip.compress(dumpb(record) + b"\n", compresslevel=6, mtime=0)


def decode(data: bytes) -> dict[str, Any]:
    return json.loads(gzip.decompress(data))


class DirectorySink(LogSink):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def write(self, record: dict[str, Any]) -> None:
        path = self.root / object_key(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(encode(record))
        temporary.replace(path)  # readers never see half a record

    def keys(self, day: str | None = None) -> list[str]:
        pattern = f"dt={day}/hour=*/*.json.gz" if day else "dt=*/hour=*/*.json.gz"
        found = sorted(self.root.glob(pattern), key=lambda p: (p.parent.parent.name, p.parent.name, p.stat().st_mtime))
        return [str(p.relative_to(self.root)) for p in found]

    def read(self, key: str) -> dict[str, Any]:
        return decode((self.root / key).read_bytes())


class S3Sink(LogSink):
    def __init__(self, bucket: str, prefix: str = "exchanges/", client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def write(self, record: dict[str, Any]) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=object_key(record, self.prefix),
            Body=encode(record),
            ContentType="application/json",
            ContentEncoding="gzip",
        )

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents") or []

    def keys(self, day: str | None = None) -> list[str]:
        prefix = self.prefix + (f"dt={day}/" if day else "")
        objects = sorted(self._list(prefix), key=lambda o: (o["Key"].split("/hour=")[0], o["LastModified"]))
        return [o["Key"][len(self.prefix) :] for o in objects if o["Key"].endswith(".json.gz")]

    def read(self, key: str) -> dict[str, Any]:
        body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        return decode(body)


def log_sink_from_env(env: Environment | None = None) -> LogSink | None:
    """CCPROXY_LOG_BUCKET (+ CCPROXY_LOG_PREFIX) on AWS, else CCPROXY_LOG_DIR,
    else logging is off. `env` defaults to the process environment as it is
    now."""
    env = env or Environment.read()
    if env.log_bucket:
        return S3Sink(env.log_bucket, env.log_prefix)
    if env.log_dir:
        return DirectorySink(env.log_dir)
    return None
