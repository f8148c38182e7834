"""Application objects in an S3 bucket (e.g. an app's invoice PDFs), read only: listed under a prefix and
streamed one by one, for the compliance export's copy of them. The connection is the archive's S3 settings
(endpoint, region, credentials, timeout); the bucket may be another one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from daemon.adapters.archive.s3.store import S3ArchiveStore, _client_error
from daemon.config import S3Config
from daemon.core.errors import GuardianError

#: What one read of an object's body returns at most.
CHUNK = 1 << 20
_GONE = ("NoSuchKey", "404", "NotFound")


class ObjectGone(GuardianError):
    """The object was listed but is no longer there when read (deleted meanwhile)."""


@dataclass(frozen=True)
class SourceObject:
    """One listed object: its key and size."""

    key: str
    size: int


class ObjectSource:
    """Objects of one bucket, read only. `list(prefix)` gives every object under `prefix` (GuardianError when the
    bucket cannot be listed); `read(key)` yields its bytes in chunks of at most CHUNK, raising ObjectGone when it
    has vanished since the listing and GuardianError for any other failure."""

    def __init__(self, cfg: S3Config, bucket: str | None = None, client: Any = None) -> None:
        self.cfg, self.bucket = cfg, bucket or cfg.bucket
        if client is not None:
            self.__dict__["client"] = client

    @cached_property
    def client(self) -> Any:
        return S3ArchiveStore._make_client(self.cfg)  # built on first use: boto3 is heavy

    def list(self, prefix: str) -> list[SourceObject]:
        out: list[SourceObject] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            try:
                page = self.client.list_objects_v2(**kwargs)
            except Exception as exc:
                code, message = _client_error(exc)
                raise GuardianError(f"S3 list of s3://{self.bucket}/{prefix} failed: {code}: {message}") from None
            out += [SourceObject(o["Key"], int(o.get("Size", 0))) for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = page.get("NextContinuationToken")

    def read(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            yield from body.iter_chunks(CHUNK)
        except Exception as exc:
            code, message = _client_error(exc)
            if code in _GONE:
                raise ObjectGone(f"s3://{self.bucket}/{key} is gone") from None
            raise GuardianError(f"S3 read of s3://{self.bucket}/{key} failed: {code}: {message}") from None
