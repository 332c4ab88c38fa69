"""The local folder store (``EFT_DATA_ROOT``, tests): S3's semantics on files, and no URI leads out of the folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from eft_api.spec import StorageSpec
from eft_trainer.errors import S3AccessDenied, S3NotFound
from eft_trainer.storage import DATA_ROOT_ENV, LocalStore, S3Store, S3Uri, fetch, open_store


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    root = tmp_path / "root"
    (root / "bkt" / "corpus" / "sub").mkdir(parents=True)
    (root / "bkt" / "corpus" / "a.jsonl").write_text("a\n")
    (root / "bkt" / "corpus" / "sub" / "b.jsonl").write_text("bb\n")
    (root / "bkt" / "corpus2.txt").write_text("c\n")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    return LocalStore(root)


ESCAPES = [
    "s3://bkt/../secret.txt",
    "s3://bkt/../../etc/passwd",
    "s3://bkt/corpus/../../secret.txt",
    "s3://bkt/corpus/./a.jsonl",
    "s3://bkt//secret.txt",
    "s3://bkt/corpus//a.jsonl",
    "s3://../secret.txt",
    "s3://./bkt/corpus/a.jsonl",
    "s3:///secret.txt",
]


@pytest.mark.parametrize("uri", ESCAPES)
def test_a_uri_leading_outside_the_folder_is_refused_by_every_operation(
    store: LocalStore, tmp_path: Path, uri: str
) -> None:
    loc = S3Uri.parse(uri)
    calls = [
        lambda: store.exists(loc),
        lambda: store.get_bytes(loc),
        lambda: store.download(loc, tmp_path / "out" / "f"),
        lambda: store.download_tree(loc, tmp_path / "out"),
        lambda: store.list_objects_meta(loc),
        lambda: store.put_bytes(b"x", loc),
        lambda: store.upload(tmp_path / "secret.txt", loc),
        lambda: fetch(store, uri, tmp_path / "out"),
    ]
    for call in calls:
        with pytest.raises(S3AccessDenied, match="refused"):
            call()
    assert not (tmp_path / "out").exists() and (tmp_path / "secret.txt").read_text() == "outside the root\n"


@pytest.mark.parametrize(
    ("prefix", "keys"),
    [
        ("corpus/", ["corpus/a.jsonl", "corpus/sub/b.jsonl"]),
        ("corpus", ["corpus/a.jsonl", "corpus/sub/b.jsonl", "corpus2.txt"]),  # S3's rule: a plain string prefix
        ("corpus/a", ["corpus/a.jsonl"]),
        ("", ["corpus/a.jsonl", "corpus/sub/b.jsonl", "corpus2.txt"]),
        ("nothing/", []),
    ],
)
def test_listing_is_by_key_prefix_with_sha256_checksums(store: LocalStore, prefix: str, keys: list[str]) -> None:
    listed = store.list_objects_meta(S3Uri("bkt", prefix))
    assert [k for k, _, _ in listed] == keys
    for key, size, checksum in listed:
        data = (store.root / "bkt" / key).read_bytes()
        assert (size, checksum) == (len(data), hashlib.sha256(data).hexdigest())


def test_fetch_copies_an_object_or_a_prefix(store: LocalStore, tmp_path: Path) -> None:
    one = fetch(store, "s3://bkt/corpus/a.jsonl", tmp_path / "one")
    assert one == [tmp_path / "one" / "a.jsonl"] and one[0].read_text() == "a\n"
    tree = fetch(store, "s3://bkt/corpus/", tmp_path / "tree")
    assert [p.relative_to(tmp_path / "tree").as_posix() for p in tree] == ["a.jsonl", "sub/b.jsonl"]
    with pytest.raises(S3NotFound, match="s3://bkt/none/"):
        fetch(store, "s3://bkt/none/", tmp_path / "none")
    with pytest.raises(S3NotFound, match="bucket nobucket does not exist"):
        fetch(store, "s3://nobucket/x/", tmp_path / "none")


def test_writes_read_back_and_a_missing_output_bucket_is_made(store: LocalStore, tmp_path: Path) -> None:
    uri = S3Uri("out", "runs/r1/manifest.json")
    assert not store.exists(uri)  # the output bucket's folder need not exist before the first write
    store.put_bytes(b'{"ok": true}', uri)
    assert store.exists(uri) and store.get_bytes(uri) == b'{"ok": true}'
    assert not list((store.root / "out" / "runs" / "r1").glob("*.part"))  # written whole, then renamed
    src = tmp_path / "weights.bin"
    src.write_bytes(b"\0" * 10)
    store.upload(src, S3Uri("out", "runs/r1/model/weights.bin"))
    assert store.list_objects_meta(S3Uri("out", "runs/r1/"))[1][:2] == ("runs/r1/model/weights.bin", 10)
    assert store.abort_multipart_uploads(S3Uri("out", "runs/")) == 0
    with pytest.raises(S3NotFound, match="no such object"):
        store.get_bytes(S3Uri("out", "runs/r1/missing.json"))


@pytest.mark.parametrize(
    ("env", "kind"),
    [({DATA_ROOT_ENV: "/data"}, LocalStore), ({}, S3Store), ({DATA_ROOT_ENV: ""}, S3Store)],
)
def test_the_store_is_chosen_once_from_the_environment(env: dict[str, str], kind: type) -> None:
    chosen = open_store(StorageSpec(endpoint="http://127.0.0.1:1"), env)
    assert type(chosen) is kind
    if isinstance(chosen, LocalStore):
        assert chosen.root == Path("/data")
