"""The S3 fixture is a real server: objects round-trip, wrong keys are refused."""

from __future__ import annotations

import botocore.exceptions
import pytest

from eft_trainer.local_s3 import LocalS3

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
