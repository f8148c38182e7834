# ruff: noqa: F811 - pytest fixtures imported from tests.doubles.s3 are "redefined" by the test parameters using them
"""The S3 test infrastructure itself: moto's standalone server answers boto3 over real HTTP on 127.0.0.1 with the
S3 features the guardian relies on, and the FaultProxy makes boto3 see each kind of failure.

Several tests pin down what moto (5.x) actually does where it differs from AWS, so that product tests are
written against the real behaviour of the double; see the docstrings.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from tests.doubles.s3 import FaultProxy, MotoServer, fault_proxy, moto_server, s3_bucket, s3_client  # noqa: F401
from tests.support import wait_for

MIB = 1024 * 1024


def b64sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


# ---------------------------------------------------------------------------------------------------------------
# the server process
# ---------------------------------------------------------------------------------------------------------------
def test_moto_runs_in_its_own_process_on_loopback(moto_server: MotoServer) -> None:
    assert moto_server.running
    assert moto_server.pid != os.getpid()
    assert moto_server.endpoint_url.startswith("http://127.0.0.1:")
    assert moto_server.rss_bytes() > 10 * MIB


def test_reset_forgets_buckets() -> None:
    with MotoServer() as server:
        client = s3_client(server.endpoint_url)
        client.create_bucket(Bucket="will-be-forgotten")
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["will-be-forgotten"]
        server.reset()
        assert client.list_buckets()["Buckets"] == []
        pid = server.pid
    assert not server.running
    assert not Path(f"/proc/{pid}").exists()  # the process is gone (reaped), not merely stopped


# ---------------------------------------------------------------------------------------------------------------
# objects
# ---------------------------------------------------------------------------------------------------------------
def test_put_with_sse_and_sha256_checksum_reads_back(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    data = b"PGDMP" + bytes(range(256)) * 40
    put = client.put_object(Bucket=bucket, Key="dumps/shop.dump", Body=data, ServerSideEncryption="AES256",
                            ChecksumAlgorithm="SHA256", Metadata={"database": "shop", "sha256": "abc"},
                            Tagging="guardian=1&kind=scheduled")
    assert put["ServerSideEncryption"] == "AES256"
    assert put["ChecksumSHA256"] == b64sha256(data)

    head = client.head_object(Bucket=bucket, Key="dumps/shop.dump", ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ChecksumSHA256"] == b64sha256(data)
    assert head["ContentLength"] == len(data)
    assert head["Metadata"] == {"database": "shop", "sha256": "abc"}
    assert head["TagCount"] == 2
    # without ChecksumMode the checksum is not part of the answer
    assert "ChecksumSHA256" not in client.head_object(Bucket=bucket, Key="dumps/shop.dump")

    tags = client.get_object_tagging(Bucket=bucket, Key="dumps/shop.dump")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("guardian", "1"), ("kind", "scheduled")]
    client.put_object_tagging(Bucket=bucket, Key="dumps/shop.dump",
                              Tagging={"TagSet": [{"Key": "verified", "Value": "yes"}]})
    assert client.get_object_tagging(Bucket=bucket, Key="dumps/shop.dump")["TagSet"] == [
        {"Key": "verified", "Value": "yes"}]

    got = client.get_object(Bucket=bucket, Key="dumps/shop.dump", ChecksumMode="ENABLED")
    assert got["Body"].read() == data  # botocore validated the checksum while reading


def test_multipart_upload_with_sha256_checksums(s3_bucket: tuple[Any, str]) -> None:
    """moto: head_object(ChecksumMode=ENABLED) gives the composite SHA256 (sha256 of the parts' binary
    digests) WITHOUT the "-N" suffix; get_object(ChecksumMode=ENABLED) and get_object_attributes give it WITH
    the suffix / ChecksumType COMPOSITE. complete_multipart_upload's answer carries no ChecksumSHA256."""
    client, bucket = s3_bucket
    parts_data = [b"a" * (5 * MIB), b"b" * 1000]
    upload = client.create_multipart_upload(Bucket=bucket, Key="big.dump", ChecksumAlgorithm="SHA256",
                                            ServerSideEncryption="AES256")
    assert upload["ChecksumAlgorithm"] == "SHA256"
    parts = []
    for number, data in enumerate(parts_data, 1):
        part = client.upload_part(Bucket=bucket, Key="big.dump", UploadId=upload["UploadId"], PartNumber=number,
                                  Body=data, ChecksumAlgorithm="SHA256")
        assert part["ChecksumSHA256"] == b64sha256(data)
        parts.append({"PartNumber": number, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]})
    done = client.complete_multipart_upload(Bucket=bucket, Key="big.dump", UploadId=upload["UploadId"],
                                            MultipartUpload={"Parts": parts})
    assert done["ETag"].endswith('-2"')

    composite = base64.b64encode(
        hashlib.sha256(b"".join(hashlib.sha256(d).digest() for d in parts_data)).digest()).decode()
    head = client.head_object(Bucket=bucket, Key="big.dump", ChecksumMode="ENABLED")
    assert head["ContentLength"] == sum(len(d) for d in parts_data)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ChecksumSHA256"] == composite  # no "-2" here (AWS would say composite + "-2")

    got = client.get_object(Bucket=bucket, Key="big.dump", ChecksumMode="ENABLED")
    assert got["ChecksumSHA256"] == composite + "-2"
    assert got["Body"].read() == b"".join(parts_data)  # botocore does not validate composite checksums

    attrs = client.get_object_attributes(Bucket=bucket, Key="big.dump", ObjectAttributes=["Checksum", "ObjectSize"])
    assert attrs["Checksum"] == {"ChecksumSHA256": composite, "ChecksumType": "COMPOSITE"}
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_in_progress_multipart_upload_is_listed_and_abort_removes_it(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    upload = client.create_multipart_upload(Bucket=bucket, Key="half.dump", ChecksumAlgorithm="SHA256")
    client.upload_part(Bucket=bucket, Key="half.dump", UploadId=upload["UploadId"], PartNumber=1,
                       Body=b"x" * 1024, ChecksumAlgorithm="SHA256")
    listed = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("half.dump", upload["UploadId"])]
    assert listed[0]["ChecksumAlgorithm"] == "SHA256"
    assert "Initiated" in listed[0]  # moto: a fixed date in 2010, not the real start time

    client.abort_multipart_upload(Bucket=bucket, Key="half.dump", UploadId=upload["UploadId"])
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError) as caught:
        client.head_object(Bucket=bucket, Key="half.dump")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


# ---------------------------------------------------------------------------------------------------------------
# bucket posture
# ---------------------------------------------------------------------------------------------------------------
def test_bucket_posture_getters_when_unset(s3_bucket: tuple[Any, str]) -> None:
    """moto, for a bucket with nothing configured: get_bucket_versioning answers without a Status (no error);
    the three others raise ClientError, HTTP 404, with the AWS codes."""
    client, bucket = s3_bucket
    versioning = client.get_bucket_versioning(Bucket=bucket)
    assert "Status" not in versioning and "MFADelete" not in versioning
    expected = {
        "get_bucket_encryption": "ServerSideEncryptionConfigurationNotFoundError",
        "get_public_access_block": "NoSuchPublicAccessBlockConfiguration",
        "get_bucket_lifecycle_configuration": "NoSuchLifecycleConfiguration",
    }
    for getter, code in expected.items():
        with pytest.raises(ClientError) as caught:
            getattr(client, getter)(Bucket=bucket)
        assert error_code(caught.value) == code, getter
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404, getter


def test_bucket_posture_can_be_set_and_read_back(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]})
    block = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
             "RestrictPublicBuckets": True}
    client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block)
    rule = {"ID": "expire-dumps", "Status": "Enabled", "Filter": {"Prefix": "dumps/"},
            "Expiration": {"Days": 30}, "NoncurrentVersionExpiration": {"NoncurrentDays": 7},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [rule]})

    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"] == [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]
    assert client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == block
    assert client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == [rule]

    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"


def test_object_lock_refuses_deleting_a_retained_version(moto_server: MotoServer) -> None:
    """moto: a bucket created with ObjectLockEnabledForBucket has versioning Enabled; delete_object of a version
    under retention raises ClientError AccessDenied (HTTP 403) for COMPLIANCE, and for GOVERNANCE unless
    BypassGovernanceRetention=True; delete_objects reports it per key; a plain delete (no VersionId) only adds a
    delete marker. get_object_retention is NOT implemented by moto's server (it answers with the object's bytes,
    which botocore fails to parse): read retention from head_object's ObjectLockMode / ObjectLockRetainUntilDate."""
    client = s3_client(moto_server.endpoint_url)
    bucket = f"locked-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    assert client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]["ObjectLockEnabled"] == \
        "Enabled"
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    until = datetime.now(UTC) + timedelta(days=1)
    compliance = client.put_object(Bucket=bucket, Key="dump", Body=b"kept", ObjectLockMode="COMPLIANCE",
                                   ObjectLockRetainUntilDate=until, ChecksumAlgorithm="SHA256")["VersionId"]
    head = client.head_object(Bucket=bucket, Key="dump", VersionId=compliance)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert abs((head["ObjectLockRetainUntilDate"] - until).total_seconds()) < 2

    for kwargs in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as caught:
            client.delete_object(Bucket=bucket, Key="dump", VersionId=compliance, **kwargs)
        assert error_code(caught.value) == "AccessDenied"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    batch = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "dump", "VersionId": compliance}]})
    assert [(e["Key"], e["Code"]) for e in batch["Errors"]] == [("dump", "AccessDenied")]

    marker = client.delete_object(Bucket=bucket, Key="dump")
    assert marker["DeleteMarker"] is True
    versions = client.list_object_versions(Bucket=bucket)
    assert [v["VersionId"] for v in versions["Versions"]] == [compliance]

    governance = client.put_object(Bucket=bucket, Key="gov", Body=b"x", ObjectLockMode="GOVERNANCE",
                                   ObjectLockRetainUntilDate=until)["VersionId"]
    with pytest.raises(ClientError) as caught:
        client.delete_object(Bucket=bucket, Key="gov", VersionId=governance)
    assert error_code(caught.value) == "AccessDenied"
    client.delete_object(Bucket=bucket, Key="gov", VersionId=governance, BypassGovernanceRetention=True)


# ---------------------------------------------------------------------------------------------------------------
# the fault proxy
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def proxied(fault_proxy: FaultProxy, s3_bucket: tuple[Any, str]) -> tuple[FaultProxy, Any, str]:
    """(proxy, client through the proxy, bucket holding `obj`), with no retry unless a test asks for one."""
    direct, bucket = s3_bucket
    direct.put_object(Bucket=bucket, Key="obj", Body=b"0123456789" * 2000)
    client = s3_client(fault_proxy.endpoint_url, config=Config(retries={"total_max_attempts": 1}))
    return fault_proxy, client, bucket


def test_clean_requests_pass_through_the_proxy(proxied: tuple[FaultProxy, Any, str]) -> None:
    proxy, client, bucket = proxied
    data = bytes(range(256)) * 1000
    client.put_object(Bucket=bucket, Key="through", Body=data, ChecksumAlgorithm="SHA256",
                      ServerSideEncryption="AES256")
    assert client.get_object(Bucket=bucket, Key="through", ChecksumMode="ENABLED")["Body"].read() == data
    assert client.head_object(Bucket=bucket, Key="through")["ContentLength"] == len(data)
    assert client.get_object(Bucket=bucket, Key="obj", Range="bytes=0-9")["Body"].read() == b"0123456789"
    assert {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]} == {"obj", "through"}
    assert proxy.requests == [
        ("PUT", f"/{bucket}/through", 200),
        ("GET", f"/{bucket}/through", 200),
        ("HEAD", f"/{bucket}/through", 200),
        ("GET", f"/{bucket}/obj", 206),
        ("GET", f"/{bucket}?list-type=2&encoding-type=url", 200),
    ]


def test_large_bodies_stream_through_the_proxy(proxied: tuple[FaultProxy, Any, str]) -> None:
    proxy, client, bucket = proxied
    data = os.urandom(3 * MIB) * 8
    put = client.put_object(Bucket=bucket, Key="large", Body=data, ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"] == b64sha256(data)
    got = client.get_object(Bucket=bucket, Key="large", ChecksumMode="ENABLED")["Body"]
    digest = hashlib.sha256()
    for block in iter(lambda: got.read(MIB), b""):
        digest.update(block)
    assert digest.digest() == hashlib.sha256(data).digest()
    assert [s for _, _, s in proxy.requests] == [200, 200]


def test_chunked_request_body_is_forwarded(proxied: tuple[FaultProxy, Any, str]) -> None:
    """A body sent with Transfer-Encoding: chunked (no Content-Length) reaches moto whole (unsigned request:
    moto does not check signatures unless told to)."""
    proxy, client, bucket = proxied
    host, port = proxy.endpoint_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("PUT", f"/{bucket}/chunked", body=iter([b"abc" * 1000, b"", b"def" * 1000]),
                     encode_chunked=True)
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status == 200
    assert client.get_object(Bucket=bucket, Key="chunked")["Body"].read() == b"abc" * 1000 + b"def" * 1000


def test_sigv4_signatures_survive_the_proxy() -> None:
    """With moto's signature checking switched on, requests signed by boto3 for the proxy's address verify at
    moto: the proxy keeps the Host header (part of the signature) and the body unchanged."""
    with MotoServer() as server:
        server.set_auth_after(3)  # the three IAM calls below are served unauthenticated, then checking is on
        iam = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name="us-east-1").client("iam", endpoint_url=server.endpoint_url,
                                                                    config=Config(proxies={}))
        iam.create_user(UserName="guardian")
        key = iam.create_access_key(UserName="guardian")["AccessKey"]
        iam.put_user_policy(UserName="guardian", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        no_retry = Config(retries={"total_max_attempts": 1})

        wrong = s3_client(server.endpoint_url, access_key_id=key["AccessKeyId"], secret_access_key="not-the-secret",
                          config=no_retry)
        with pytest.raises(ClientError) as caught:
            wrong.list_buckets()
        assert error_code(caught.value) == "SignatureDoesNotMatch"  # so signatures really are checked

        with FaultProxy(server.endpoint_url) as proxy:
            client = s3_client(proxy.endpoint_url, access_key_id=key["AccessKeyId"],
                               secret_access_key=key["SecretAccessKey"], config=no_retry)
            client.create_bucket(Bucket="signed")
            client.put_object(Bucket="signed", Key="k", Body=b"signed body" * 1000, ChecksumAlgorithm="SHA256")
            assert client.get_object(Bucket="signed", Key="k")["Body"].read() == b"signed body" * 1000
            assert [o["Key"] for o in client.list_objects_v2(Bucket="signed")["Contents"]] == ["k"]
            assert all(status == 200 for _, _, status in proxy.requests)

            wrong_via_proxy = s3_client(proxy.endpoint_url, access_key_id=key["AccessKeyId"],
                                        secret_access_key="not-the-secret", config=no_retry)
            with pytest.raises(ClientError) as caught:
                wrong_via_proxy.list_objects_v2(Bucket="signed")
            assert error_code(caught.value) == "SignatureDoesNotMatch"


def test_500_is_retried_by_standard_mode_then_raises(fault_proxy: FaultProxy, s3_bucket: tuple[Any, str]) -> None:
    direct, bucket = s3_bucket
    direct.put_object(Bucket=bucket, Key="obj", Body=b"x")
    client = s3_client(fault_proxy.endpoint_url, config=Config(retries={"mode": "standard", "total_max_attempts": 3}))
    fault_proxy.inject(rf"^GET /{bucket}/obj$", "500")
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket=bucket, Key="obj")
    assert error_code(caught.value) == "InternalError"
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    assert fault_proxy.requests == [("GET", f"/{bucket}/obj", 500)] * 3

    # a fault limited to two hits: the third attempt reaches moto and succeeds
    fault_proxy.clear()
    fault_proxy.inject(rf"^GET /{bucket}/obj$", "500", times=2)
    got = client.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == b"x"
    assert got["ResponseMetadata"]["RetryAttempts"] == 2
    assert [s for _, _, s in fault_proxy.requests[3:]] == [500, 500, 200]


def test_503_slowdown_is_retried_then_raises(fault_proxy: FaultProxy, s3_bucket: tuple[Any, str]) -> None:
    _, bucket = s3_bucket
    client = s3_client(fault_proxy.endpoint_url, config=Config(retries={"mode": "standard", "total_max_attempts": 2}))
    fault_proxy.inject(r"^HEAD ", "503")
    with pytest.raises(ClientError) as caught:
        client.head_bucket(Bucket=bucket)
    # HEAD answers have no body: botocore only sees the status
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert [s for _, _, s in fault_proxy.requests] == [503, 503]

    fault_proxy.clear()
    fault_proxy.inject(r"^GET ", "503")
    with pytest.raises(ClientError) as caught:
        client.list_objects_v2(Bucket=bucket)
    assert error_code(caught.value) == "SlowDown"


def test_403_raises_immediately(proxied: tuple[FaultProxy, Any, str]) -> None:
    proxy, _, bucket = proxied
    client = s3_client(proxy.endpoint_url)  # standard mode, 3 attempts: AccessDenied is not retried
    proxy.inject(r"^PUT ", "403")
    with pytest.raises(ClientError) as caught:
        client.put_object(Bucket=bucket, Key="denied", Body=b"y" * 10000)
    assert error_code(caught.value) == "AccessDenied"
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    assert proxy.requests == [("PUT", f"/{bucket}/denied", 403)]
    # the connection stays usable after an injected answer, and other requests are untouched
    assert client.get_object(Bucket=bucket, Key="obj")["Body"].read()[:4] == b"0123"


def test_slow_delays_then_forwards(proxied: tuple[FaultProxy, Any, str]) -> None:
    proxy, client, bucket = proxied
    proxy.inject(r"^HEAD ", "slow", delay=0.3)
    started = time.monotonic()
    assert client.head_object(Bucket=bucket, Key="obj")["ContentLength"] == 20000
    assert time.monotonic() - started >= 0.3
    assert proxy.requests == [("HEAD", f"/{bucket}/obj", 200)]


def test_timeout_raises_read_timeout(proxied: tuple[FaultProxy, Any, str]) -> None:
    proxy, _, bucket = proxied
    client = s3_client(proxy.endpoint_url, config=Config(read_timeout=0.5, retries={"total_max_attempts": 1}))
    proxy.inject(r"^GET ", "timeout")  # held 30 s by default; the client gives up first
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        client.get_object(Bucket=bucket, Key="obj")
    assert time.monotonic() - started < 5
    assert proxy.requests == [("GET", f"/{bucket}/obj", None)]


def test_stop_does_not_wait_for_held_connections(moto_server: MotoServer) -> None:
    proxy = FaultProxy(moto_server.endpoint_url)
    proxy.inject("", "timeout", delay=120)
    client = s3_client(proxy.endpoint_url, config=Config(read_timeout=60, retries={"total_max_attempts": 1}))
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            client.list_buckets()
        except Exception as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: proxy.requests)  # the request is being held
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 5
    caller.join(timeout=10)
    assert not caller.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionClosedError)


def test_reset_mid_response_raises_connection_errors(proxied: tuple[FaultProxy, Any, str]) -> None:
    proxy, client, bucket = proxied
    proxy.inject("", "reset")
    # an answer cut inside its headers (small answers): botocore raises ConnectionClosedError
    with pytest.raises(ConnectionClosedError):
        client.list_objects_v2(Bucket=bucket)
    with pytest.raises(ConnectionClosedError):
        client.put_object(Bucket=bucket, Key="never", Body=b"z" * 100)
    # an answer cut inside its body: get_object returns, reading the stream raises
    got = client.get_object(Bucket=bucket, Key="obj")
    with pytest.raises(ResponseStreamingError):
        got["Body"].read()
    assert [s for _, _, s in proxy.requests] == [None, None, None]

    proxy.clear()
    assert client.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"0123456789" * 2000


def test_reset_is_retried_by_standard_mode(proxied: tuple[FaultProxy, Any, str]) -> None:
    proxy, _, bucket = proxied
    client = s3_client(proxy.endpoint_url, config=Config(retries={"mode": "standard", "total_max_attempts": 3}))
    proxy.inject(r"^HEAD ", "reset", times=1)
    head = client.head_object(Bucket=bucket, Key="obj")
    assert head["ResponseMetadata"]["RetryAttempts"] == 1
    assert [s for _, _, s in proxy.requests] == [None, 200]


def test_inject_rejects_unknown_kinds(fault_proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        fault_proxy.inject("", "teapot")
