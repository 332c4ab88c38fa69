"""Storage at the edge: one :class:`Store` interface, chosen once per run by :func:`open_store`.

* :class:`S3Store`: S3 (or an S3-compatible store), one client per run, downloads, uploads and the mapping of
  failures to reasons.
* :class:`LocalStore`: a folder standing in for S3 (``s3://bucket/key`` is ``<root>/bucket/key``), for
  development (``$EFT_DATA_ROOT``) and tests. A URI that would lead outside the folder is refused.

Callers take a :class:`Store` and never ask which one they have (as Kubeflow Trainer's initializers dispatch
once on the URI scheme).

S3Store: boto3 with ``retries={"mode": "standard"}`` set explicitly, a :class:`TransferConfig` for multipart and
concurrency, endpoint, region and path-style from the spec. Credentials come from the environment
(``AWS_ACCESS_KEY_ID`` ...) or from files in ``$EFT_S3_CREDENTIALS_DIR`` (a mounted Secret). Every error
message names the bucket and key, never a credential and never the server's error text (which may echo
anything).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from eft_api.spec import StorageSpec
from eft_trainer.errors import (
    InvalidCorpus,
    S3AccessDenied,
    S3NotFound,
    S3Unavailable,
    TrainerError,
    credential_files,
)

log = logging.getLogger(__name__)

MB = 1024 * 1024

_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
}
_NOT_FOUND = {"NoSuchBucket", "NoSuchKey", "NotFound", "404", "NoSuchUpload"}
_MAY_PASS = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable", "InternalError"}

T = TypeVar("T")


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri}")
        bucket, _, key = uri[5:].partition("/")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def join(self, rel: str) -> S3Uri:
        base = self.key if not self.key or self.key.endswith("/") else self.key + "/"
        return S3Uri(self.bucket, base + rel)


def map_error(exc: BaseException, op: str, bucket: str, key: str = "") -> TrainerError:
    """The reason-carrying error for a failed S3 call (pure; tested by a table)."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

    where = f"s3://{bucket}/{key}"
    if isinstance(exc, TrainerError):
        return exc
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return S3AccessDenied(
            f"{op} {where}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or spec.storage.credentialsSecret)"
        )
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _DENIED or status == 403:
            return S3AccessDenied(
                f"{op} {where} was refused ({code or status}): check the credentials in "
                "spec.storage.credentialsSecret and their permissions on the bucket"
            )
        if code == "NoSuchBucket":
            return S3NotFound(f"{op} {where}: bucket {bucket} does not exist (NoSuchBucket)")
        if code in _NOT_FOUND or status == 404:
            return S3NotFound(f"{op} {where}: no such object ({code or status})")
        if code in _MAY_PASS or status >= 500 or status == 429:
            return S3Unavailable(f"{op} {where}: S3 answered {code or status} after retries; will retry")
        return S3Unavailable(f"{op} {where}: S3 answered {code or status}")
    if isinstance(exc, BotoCoreError):
        return S3Unavailable(f"{op} {where}: S3 endpoint unreachable ({type(exc).__name__}); will retry")
    if isinstance(exc, OSError):
        return S3Unavailable(f"{op} {where}: {type(exc).__name__}: {exc.strerror or 'I/O error'}")
    return S3Unavailable(f"{op} {where}: {type(exc).__name__}")


def local_path(dest: Path, bucket: str, key: str, prefix: str) -> Path:
    """Where the object ``key`` (listed under ``prefix``) goes under ``dest``; InvalidCorpus for a key that would
    land outside ``dest`` or on another key's file. Pure.

    S3 keys are not paths: ``..`` and ``.`` segments, and a ``/`` right after the prefix (which makes the
    joined path absolute), are legal in a key, so a corpus (or an s3:// base model) could otherwise overwrite
    any file the run can write.
    """
    rel = key[len(prefix) :] if key.startswith(prefix) else key
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise InvalidCorpus(
            f"s3://{bucket}/{key}: the object key is not a plain relative path under s3://{bucket}/{prefix} "
            "(an empty, '.' or '..' segment, or a '/' right after the prefix): refused before downloading anything"
        )
    path = dest.joinpath(*parts)
    if not path.resolve().is_relative_to(dest.resolve()):
        raise InvalidCorpus(f"s3://{bucket}/{key}: the object key leads outside the download folder: refused")
    return path


def _credentials() -> dict[str, str]:
    """boto3 client arguments from the credentials folder (``AWS_SECRET_ACCESS_KEY`` -> aws_secret_access_key)."""
    return {name.lower(): value for name, value in credential_files().items()}


class Store(Protocol):
    """What the trainer does with storage: read objects and prefixes, write objects, list with checksums.

    Every error is a :class:`~eft_trainer.errors.TrainerError` that names the URI (S3NotFound for a missing
    object or bucket)."""

    def exists(self, uri: S3Uri) -> bool:
        """Whether the object exists (S3NotFound when its bucket does not)."""
        ...

    def check_bucket(self, bucket: str) -> None:
        """S3NotFound unless the bucket exists."""
        ...

    def list_objects_meta(self, uri: S3Uri) -> list[tuple[str, int, str]]:
        """(key, size, checksum) of every object under the prefix, in key order (what a dataset's hash covers)."""
        ...

    def download(self, uri: S3Uri, dest: Path) -> Path:
        """One object into the file ``dest``."""
        ...

    def download_tree(self, uri: S3Uri, dest: Path, *, allow_object: bool = True) -> list[Path]:
        """An object, or every object under a prefix (keeping relative paths), into ``dest``."""
        ...

    def upload(self, path: Path, uri: S3Uri, content_type: str | None = None) -> None:
        """The file ``path`` as the object ``uri``."""
        ...

    def put_bytes(self, data: bytes, uri: S3Uri, content_type: str = "application/json") -> None:
        """``data`` as the object ``uri``."""
        ...

    def get_bytes(self, uri: S3Uri) -> bytes:
        """The object's content."""
        ...

    def abort_multipart_uploads(self, uri: S3Uri) -> int:
        """Abort what a killed pod left half-uploaded under the prefix; how many."""
        ...


class S3Store:
    """An S3 client configured from ``spec.storage`` (endpoint override for local runs)."""

    def __init__(self, spec: StorageSpec, endpoint: str | None = None, max_attempts: int = 4) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.endpoint = endpoint or spec.endpoint
        config = Config(
            region_name=spec.region,
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=5,
            read_timeout=60,
            s3={"addressing_style": "path" if spec.path_style else "auto"},
            signature_version="s3v4",
        )
        session = boto3.session.Session()
        self.client: Any = session.client("s3", endpoint_url=self.endpoint, config=config, **_credentials())
        self.transfer = TransferConfig(
            multipart_threshold=64 * MB, multipart_chunksize=16 * MB, max_concurrency=8, use_threads=True
        )

    def _call(self, op: str, bucket: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except TrainerError:
            raise
        except Exception as exc:
            raise map_error(exc, op, bucket, key) from None

    def exists(self, uri: S3Uri) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=uri.bucket, Key=uri.key)
            return True
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                # A missing bucket also answers 404 to HEAD: tell the two apart.
                self.check_bucket(uri.bucket)
                return False
            raise map_error(exc, "HEAD", uri.bucket, uri.key) from None
        except Exception as exc:
            raise map_error(exc, "HEAD", uri.bucket, uri.key) from None

    def check_bucket(self, bucket: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise S3NotFound(f"bucket {bucket} does not exist (NoSuchBucket)") from None
            raise map_error(exc, "HEAD bucket", bucket) from None
        except Exception as exc:
            raise map_error(exc, "HEAD bucket", bucket) from None

    def list_objects(self, uri: S3Uri) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under the prefix."""

        def page() -> list[tuple[str, int]]:
            out = []
            paginator = self.client.get_paginator("list_objects_v2")
            for p in paginator.paginate(Bucket=uri.bucket, Prefix=uri.key):
                out += [(o["Key"], int(o["Size"])) for o in p.get("Contents", [])]
            return out

        yield from self._call("LIST", uri.bucket, uri.key, page)

    def list_objects_meta(self, uri: S3Uri) -> list[tuple[str, int, str]]:
        """(key, size, ETag) of every object under the prefix, in key order (what a dataset's hash covers)."""

        def page() -> list[tuple[str, int, str]]:
            out = []
            paginator = self.client.get_paginator("list_objects_v2")
            for p in paginator.paginate(Bucket=uri.bucket, Prefix=uri.key):
                out += [(o["Key"], int(o["Size"]), str(o.get("ETag", "")).strip('"')) for o in p.get("Contents", [])]
            return sorted(out)

        return self._call("LIST", uri.bucket, uri.key, page)

    def download(self, uri: S3Uri, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._call(
            "GET",
            uri.bucket,
            uri.key,
            lambda: self.client.download_file(uri.bucket, uri.key, str(dest), Config=self.transfer),
        )
        return dest

    def download_tree(self, uri: S3Uri, dest: Path, *, allow_object: bool = True) -> list[Path]:
        """Download an object, or every object under a prefix (keeping relative paths); S3NotFound if none."""
        if allow_object and uri.key and not uri.key.endswith("/") and self.exists(uri):
            folder = uri.key.rsplit("/", 1)[0] + "/" if "/" in uri.key else ""
            return [self.download(uri, local_path(dest, uri.bucket, uri.key, folder))]
        prefix = uri.key if not uri.key or uri.key.endswith("/") else uri.key + "/"
        objects = [(k, s) for k, s in self.list_objects(S3Uri(uri.bucket, prefix)) if not k.endswith("/")]
        if not objects:
            self.check_bucket(uri.bucket)
            raise S3NotFound(f"no object at {uri} and no objects under s3://{uri.bucket}/{prefix}")
        # Every key is checked before the first byte is written.
        targets = [(k, local_path(dest, uri.bucket, k, prefix)) for k, _ in objects]
        return [self.download(S3Uri(uri.bucket, k), path) for k, path in targets]

    def upload(self, path: Path, uri: S3Uri, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else None
        # s3transfer aborts a multipart upload whose parts fail; stale ones from a killed pod are aborted
        # by abort_multipart_uploads() before publishing.
        self._call(
            "PUT",
            uri.bucket,
            uri.key,
            lambda: self.client.upload_file(str(path), uri.bucket, uri.key, ExtraArgs=extra, Config=self.transfer),
        )

    def put_bytes(self, data: bytes, uri: S3Uri, content_type: str = "application/json") -> None:
        self._call(
            "PUT",
            uri.bucket,
            uri.key,
            lambda: self.client.put_object(Bucket=uri.bucket, Key=uri.key, Body=data, ContentType=content_type),
        )

    def get_bytes(self, uri: S3Uri) -> bytes:
        data: bytes = self._call(
            "GET", uri.bucket, uri.key, lambda: self.client.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read()
        )
        return data

    def abort_multipart_uploads(self, uri: S3Uri) -> int:
        """Abort unfinished multipart uploads under a prefix (left by a pod that died mid-upload)."""

        def run() -> int:
            n = 0
            resp = self.client.list_multipart_uploads(Bucket=uri.bucket, Prefix=uri.key)
            for up in resp.get("Uploads", []):
                self.client.abort_multipart_upload(Bucket=uri.bucket, Key=up["Key"], UploadId=up["UploadId"])
                n += 1
            return n

        try:
            return self._call("ABORT multipart", uri.bucket, uri.key, run)
        except S3Unavailable:
            log.warning("could not list multipart uploads under %s; continuing", uri)
            return 0


def _plain_parts(text: str, what: str, uri: S3Uri) -> list[str]:
    """``text``'s ``/``-separated segments; S3AccessDenied for an empty, ``.`` or ``..`` segment or a leading
    ``/`` (one trailing ``/``, a prefix's, is allowed). Pure."""
    body = text[:-1] if text.endswith("/") else text
    parts = body.split("/") if body else []
    if text.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise S3AccessDenied(
            f"{uri}: the {what} is not a plain relative path (an empty, '.' or '..' segment, or a leading '/'), "
            "so it could lead outside the local data folder: refused"
        )
    return parts


class LocalStore:
    """A folder standing in for S3: the object ``s3://bucket/key`` is the file ``<root>/bucket/key``.

    Segments are checked before any file is touched, so no URI reaches outside ``root`` (symbolic links the
    folder's owner placed inside it are followed: the folder is theirs, the URIs are the tenant's). Listings
    carry each file's sha256 as its checksum."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, uri: S3Uri) -> Path:
        """Where the object (or prefix) ``uri`` lives under the root; S3AccessDenied for one outside it. Pure."""
        if uri.bucket in ("", ".", "..") or "/" in uri.bucket:
            raise S3AccessDenied(f"{uri}: the bucket name {uri.bucket!r} is not a plain folder name: refused")
        return self.root.joinpath(uri.bucket, *_plain_parts(uri.key, "key", uri))

    def exists(self, uri: S3Uri) -> bool:
        """A missing bucket folder holds nothing (writes make it): the output bucket need not exist beforehand."""
        return self.path(uri).is_file()

    def check_bucket(self, bucket: str) -> None:
        if not self.path(S3Uri(bucket, "")).is_dir():
            raise S3NotFound(f"bucket {bucket} does not exist (no folder {self.root / bucket})")

    def _listed(self, uri: S3Uri) -> list[Path]:
        """The files whose key starts with the prefix ``uri.key`` (S3's rule: a prefix need not end in '/')."""
        folder = self.path(S3Uri(uri.bucket, uri.key.rsplit("/", 1)[0] + "/" if "/" in uri.key else ""))
        bucket = self.path(S3Uri(uri.bucket, ""))
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        return [p for p in files if p.relative_to(bucket).as_posix().startswith(uri.key)]

    def list_objects_meta(self, uri: S3Uri) -> list[tuple[str, int, str]]:
        bucket = self.path(S3Uri(uri.bucket, ""))
        return sorted((p.relative_to(bucket).as_posix(), p.stat().st_size, sha256_file(p)) for p in self._listed(uri))

    def download(self, uri: S3Uri, dest: Path) -> Path:
        src = self.path(uri)
        if not src.is_file():
            self.check_bucket(uri.bucket)
            raise S3NotFound(f"GET {uri}: no such object (no file {src})")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest

    def download_tree(self, uri: S3Uri, dest: Path, *, allow_object: bool = True) -> list[Path]:
        src = self.path(uri)
        if allow_object and uri.key and not uri.key.endswith("/") and src.is_file():
            return [self.download(uri, dest / src.name)]
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
            return sorted(p for p in dest.rglob("*") if p.is_file())
        self.check_bucket(uri.bucket)
        raise S3NotFound(f"{uri}: nothing at {src} (the local data folder)")

    def upload(self, path: Path, uri: S3Uri, content_type: str | None = None) -> None:
        self.put_bytes(path.read_bytes(), uri)

    def put_bytes(self, data: bytes, uri: S3Uri, content_type: str = "application/json") -> None:
        """Written whole or not at all (a temporary file renamed), as an S3 PUT."""
        dest = self.path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(dest)

    def get_bytes(self, uri: S3Uri) -> bytes:
        src = self.path(uri)
        if not src.is_file():
            self.check_bucket(uri.bucket)
            raise S3NotFound(f"GET {uri}: no such object (no file {src})")
        return src.read_bytes()

    def abort_multipart_uploads(self, uri: S3Uri) -> int:
        return 0  # a local write is whole or absent


def sha256_file(path: Path) -> str:
    """A file's sha256, read in blocks (a document may be larger than memory should hold)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


#: Development only: ``s3://bucket/key`` is ``$EFT_DATA_ROOT/bucket/key`` (no S3 at all). Read by
#: :func:`open_store` alone.
DATA_ROOT_ENV = "EFT_DATA_ROOT"


def open_store(spec: StorageSpec, env: Mapping[str, str]) -> Store:
    """The run's store, chosen once: the folder ``$EFT_DATA_ROOT`` when set (development), else S3 from
    ``spec.storage``."""
    root = env.get(DATA_ROOT_ENV)
    return LocalStore(Path(root)) if root else S3Store(spec)


def base_uri(uri: str) -> str:
    """The prefix whose objects a data URI names: the URI itself for a prefix, its folder for an object."""
    return uri if uri.endswith("/") else uri.rsplit("/", 1)[0] + "/"


def fetch(store: Store, uri: str, dest: Path) -> list[Path]:
    """Download an object, or every object under a prefix, into ``dest``."""
    return store.download_tree(S3Uri.parse(uri), dest)
