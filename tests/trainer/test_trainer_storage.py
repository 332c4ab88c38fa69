"""Object keys are not trusted as local paths: a key that would land outside the download folder is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest

from eft_api.spec import StorageSpec
from eft_devtools.local_s3 import LocalS3
from eft_trainer.errors import InvalidCorpus
from eft_trainer.storage import S3Store, S3Uri, local_path

BAD_KEYS = [
    "corpus/../../escape.jsonl",  # climbs out of the work folder
    "corpus//etc/passwd",  # '/' right after the prefix: the joined path would be absolute
    "corpus/a/../b.jsonl",  # stays inside, but lands on another key's file
    "corpus/./b.jsonl",
    "corpus/..",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidCorpus, match=f"s3://bkt/{key}: the object key is not a plain relative path"):
        local_path(tmp_path / "dest", "bkt", key, "corpus/")


def test_plain_keys_keep_their_relative_path(tmp_path: Path) -> None:
    assert local_path(tmp_path, "bkt", "corpus/a/b.jsonl", "corpus/") == tmp_path / "a" / "b.jsonl"
    assert local_path(tmp_path, "bkt", "pairs.jsonl", "") == tmp_path / "pairs.jsonl"


class Listed(S3Store):
    """An S3Store whose listing is what AWS S3 would return (keys with '..' and '//' are legal there)."""

    def __init__(self, listing: list[str]) -> None:
        super().__init__(StorageSpec(endpoint="http://127.0.0.1:9", path_style=True))
        self.listing = listing
        self.downloaded: list[str] = []

    def list_objects(self, uri: S3Uri) -> Iterator[tuple[str, int]]:
        yield from ((k, 1) for k in self.listing if k.startswith(uri.key))

    def download(self, uri: S3Uri, dest: Path) -> Path:
        self.downloaded.append(uri.key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("{}")
        return dest


@pytest.mark.parametrize("bad", BAD_KEYS[:2])
def test_download_tree_refuses_before_downloading_anything(tmp_path: Path, bad: str) -> None:
    storage = Listed(["corpus/a.jsonl", bad, "corpus/z.jsonl"])
    work = tmp_path / "work"
    with pytest.raises(InvalidCorpus, match=f"s3://bkt/{bad}"):
        storage.download_tree(S3Uri("bkt", "corpus/"), work / "data" / "train")
    assert storage.downloaded == []
    assert not tmp_path.joinpath("escape.jsonl").exists() and not work.exists()


def test_download_tree_keeps_nested_keys(tmp_path: Path) -> None:
    storage = Listed(["corpus/a.jsonl", "corpus/sub/b.jsonl"])
    got = storage.download_tree(S3Uri("bkt", "corpus/"), tmp_path)
    assert got == [tmp_path / "a.jsonl", tmp_path / "sub" / "b.jsonl"]


@pytest.mark.slow
def test_the_local_s3_server_refuses_or_folds_such_keys(s3_server: LocalS3, s3_bucket: str) -> None:
    """Why the tests above fake the listing: SeaweedFS refuses '.' and '..' segments and folds '//', so it cannot
    hold the keys that AWS S3 accepts."""
    client = s3_server.client()
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidRequest"):
        client.put_object(Bucket=s3_bucket, Key="corpus/../escape.jsonl", Body=b"{}")
    client.put_object(Bucket=s3_bucket, Key="corpus//etc/passwd", Body=b"{}")
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert listed == ["corpus/etc/passwd"]
