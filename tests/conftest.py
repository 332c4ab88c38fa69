"""Shared fixtures: a real S3 server (SeaweedFS on loopback) for the whole test session.

The Kubernetes API fixture (kmock with the real kopf loop) lives in ``tests/operator/conftest.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eft_devtools.local_s3 import LocalS3

REPO = Path(__file__).resolve().parents[1]

# Never reach a model hub from tests: models come from the packaged MiniLM or from S3.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """A SeaweedFS S3 server on 127.0.0.1 for the test session (free ports, so sessions run side by side;
    EFT_TEST_S3_PORT fixes the S3 port), stopped by pid at the end."""
    server = LocalS3(tmp_path_factory.mktemp("seaweedfs"), port=int(os.environ.get("EFT_TEST_S3_PORT", "0")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: LocalS3) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name
