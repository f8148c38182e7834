"""The S3-compatible archive store (boto3): `store` (S3ArchiveStore: list, read, tag, delete, begin uploads),
`upload` (S3Writer: the multipart upload of one dump, verified before its record is written), `listing` (what a
LIST tells, so unchanged records and HEAD facts are not read again).
"""

from daemon.adapters.archive.s3.store import S3ArchiveStore

__all__ = ["S3ArchiveStore"]
