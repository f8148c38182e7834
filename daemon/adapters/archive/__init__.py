"""Archive stores: a local directory or an S3 bucket, the same interface (`store.ArchiveStore`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.archive.store import ArchiveStore

if TYPE_CHECKING:
    from daemon.config import GuardianConfig


def open_store(config: GuardianConfig) -> ArchiveStore:
    """The configured archive store (S3 imports boto3 only when used)."""
    if config.archive.kind == "s3" and config.archive.s3 is not None:
        from daemon.adapters.archive.s3 import S3ArchiveStore

        return S3ArchiveStore(config.archive.s3)
    return LocalDirectoryStore(config.archive_dir)
