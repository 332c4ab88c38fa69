"""The checkpoint that ``checkpoints/latest.json`` names is read back from storage, so a tenant who can write
there could name ``../x`` or ``/etc``: the resume would delete (rmtree) or read that folder. The name must be
a plain ``checkpoint-<step>`` under the checkpoint folder, checked before any filesystem operation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainer_helpers import env

from eft_api.spec import StorageSpec
from eft_devtools.local_s3 import LocalS3
from eft_trainer.checkpoints import checkpoint_name, fetch_checkpoint
from eft_trainer.errors import InvalidCorpus
from eft_trainer.storage import S3Store, S3Uri


@pytest.mark.parametrize("name", ["checkpoint-1", "checkpoint-120"])
def test_plain_checkpoint_names_are_taken(name: str) -> None:
    assert checkpoint_name(name, "latest.json") == name


@pytest.mark.parametrize(
    "name",
    ["../victim", "/etc", "checkpoint-1/../../victim", "checkpoint-1/", "..", "", "checkpoint-", "x", 12, None],
)
def test_other_checkpoint_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidCorpus, match="not a plain checkpoint-<step> folder name"):
        checkpoint_name(name, "s3://b/run/checkpoints/latest.json")


@pytest.mark.slow  # starts SeaweedFS
@pytest.mark.parametrize("named", ["../victim", "VICTIM_ABS"])
def test_a_hostile_latest_json_touches_nothing(s3_server: LocalS3, s3_bucket: str, tmp_path: Path, named: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("still here")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    name = str(victim) if named == "VICTIM_ABS" else named
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="run/checkpoints/latest.json", Body=json.dumps({"checkpoint": name}))
    with env(s3_server.env()):
        storage = S3Store(StorageSpec(endpoint=s3_server.endpoint, path_style=True))
        with pytest.raises(InvalidCorpus, match="not a plain checkpoint-<step>"):
            fetch_checkpoint(storage, S3Uri(s3_bucket, "run/checkpoints/"), folder)
    assert (victim / "keep.txt").read_text() == "still here"
    assert list(folder.iterdir()) == []
