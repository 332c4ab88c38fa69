"""The S3 fixture is a real server: objects round-trip, wrong keys are refused."""

from __future__ import annotations

import socket
from pathlib import Path

import botocore.exceptions
import pytest

from eft_devtools.local_s3 import LocalS3

pytestmark = pytest.mark.slow


def test_objects_round_trip(s3_server: LocalS3, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="a/b.jsonl", Body=b'{"anchor": "q", "positive": "p"}\n')
    body = client.get_object(Bucket=s3_bucket, Key="a/b.jsonl")["Body"].read()
    assert body == b'{"anchor": "q", "positive": "p"}\n'
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="a/")
    assert [o["Key"] for o in listed["Contents"]] == ["a/b.jsonl"]


def test_wrong_secret_key_is_refused(s3_server: LocalS3, s3_bucket: str) -> None:
    client = s3_server.client(aws_secret_access_key="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.list_objects_v2(Bucket=s3_bucket)
    assert info.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"}


def test_a_second_server_runs_beside_the_first(s3_server: LocalS3, tmp_path: Path) -> None:
    """Two sessions (or a demo beside the tests) each start a server: every port is a free one, none is fixed."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with LocalS3(tmp_path / "second") as second:
            assert second.port not in (s3_server.port, holder.getsockname()[1])
            second.create_bucket("second")
            assert [b["Name"] for b in second.client().list_buckets()["Buckets"]] == ["second"]
        assert s3_server.client().list_buckets() is not None


def test_a_fixed_port_that_is_taken_is_refused(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(RuntimeError, match="already in use"):
            LocalS3(tmp_path, port=holder.getsockname()[1]).start()
