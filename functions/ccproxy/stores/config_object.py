"""The S3 object that holds the config `ccproxy config push` uploaded.

A reader passes the ETag it last saw: S3 answers 304 while the object is
unchanged, so a check that finds nothing new costs one request and no body
(one GetObject with If-None-Match rather than a HeadObject then a GetObject,
which would also leave a gap between the two in which the object could
change). A missing object is a 404 only where the caller may list the bucket
under the key; without that right S3 answers 403 for it, which is reported
as a permission problem, not read as "no config pushed".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ..environment import Environment

# A config is a few kilobytes; anything near this is not one.
MAX_CONFIG_BYTES = 1 << 20
CONTENT_TYPE = "application/yaml"


class ConfigObjectError(Exception):
    """The object cannot be read or written; the message names it and says why."""


class ConfigObjectTooLarge(ConfigObjectError):
    """The object is over MAX_CONFIG_BYTES. `etag` names the version read, so a
    reader can tell when it changes and not fetch the same one again."""

    def __init__(self, message: str, etag: str | None = None) -> None:
        super().__init__(message)
        self.etag = etag


class Absent(enum.Enum):
    """No object under the key: never pushed, or deleted."""

    ABSENT = "absent"


ABSENT = Absent.ABSENT


@dataclass(frozen=True, slots=True)
class Pushed:
    """The object's bytes and the ETag of that version."""

    body: bytes
    etag: str


def _client(env: Environment | None, region: str | None) -> Any:
    import boto3  # lazily: importing this module stays cheap without AWS
    from botocore.config import Config

    # botocore itself reads AWS_DEFAULT_REGION and AWS_ENDPOINT_URL; AWS_REGION
    # is what Lambda sets, so pass it on. A check runs while a request waits
    # for it: short timeouts, so an unreachable S3 costs seconds, not minutes.
    return boto3.client(
        "s3",
        region_name=region or (env or Environment.read()).aws_region,
        config=Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}),
    )


class S3ConfigObject:
    def __init__(
        self,
        bucket: str,
        key: str,
        env: Environment | None = None,
        *,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.key = key
        self.client = client if client is not None else _client(env, region)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def __str__(self) -> str:
        return self.url

    def read_if_changed(self, etag: str | None) -> Pushed | Absent | None:
        """The object if its ETag is not `etag` (None: whatever is there),
        ABSENT if there is none, None if it is unchanged. Raises
        ConfigObjectTooLarge over MAX_CONFIG_BYTES, ConfigObjectError when
        the object may not be read, botocore's errors when S3 cannot be
        reached."""
        from botocore.exceptions import ClientError

        request = {"Bucket": self.bucket, "Key": self.key}
        if etag is not None:
            request["IfNoneMatch"] = etag
        try:
            reply = self.client.get_object(**request)
        except ClientError as exc:
            return self._unread(exc)
        return Pushed(self._capped_body(reply), reply["ETag"])

    def _unread(self, exc: Any) -> Absent | None:
        """What a refused GetObject means: unchanged, absent, or an error."""
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code", "")
        if status == 304:
            return None
        if code == "NoSuchBucket":
            raise ConfigObjectError(f"{self.url}: no bucket named {self.bucket}") from None
        if status == 404:
            return ABSENT
        if status == 403:
            raise ConfigObjectError(
                f"{self.url}: access denied ({code}): reading it takes s3:GetObject on the object, and telling "
                "a missing object from a forbidden one takes s3:ListBucket on the bucket for its prefix"
            ) from None
        raise exc

    def _capped_body(self, reply: dict[str, Any]) -> bytes:
        stream = reply["Body"]
        try:
            if (reply.get("ContentLength") or 0) > MAX_CONFIG_BYTES:
                raise self._too_large(reply["ContentLength"], reply["ETag"])
            body: bytes = stream.read(MAX_CONFIG_BYTES + 1)
        finally:
            stream.close()
        if len(body) > MAX_CONFIG_BYTES:
            raise self._too_large(None, reply["ETag"])
        return body

    def _too_large(self, size: int | None, etag: str | None) -> ConfigObjectTooLarge:
        what = f"{size} bytes" if size is not None else f"over {MAX_CONFIG_BYTES} bytes"
        return ConfigObjectTooLarge(
            f"{self.url}: {what}; a config may be at most {MAX_CONFIG_BYTES} bytes (1 MiB)", etag
        )

    def put(self, body: bytes) -> str:
        """Upload `body` as the object; its new ETag."""
        if len(body) > MAX_CONFIG_BYTES:
            raise self._too_large(len(body), None)
        reply = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, ContentType=CONTENT_TYPE)
        etag: str = reply["ETag"]
        return etag
