"""Checkpoints: the newest local one, mirroring each to storage, fetching the mirrored one back (the HF
Trainer callbacks that call these are in :mod:`eft_trainer.hf_trainer`).

Checkpoints go to ``<workDir>/checkpoints/checkpoint-<step>`` and are mirrored to
``<run prefix>/checkpoints/checkpoint-<step>/`` with ``checkpoints/latest.json`` written last, so a retried
pod resumes from the last mirrored checkpoint instead of starting over. ``latest.json`` is read back from
storage, so the name it holds is checked (:func:`checkpoint_name`) before it touches the filesystem.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from eft_trainer.errors import InvalidCorpus
from eft_trainer.storage import S3Uri, Store

log = logging.getLogger(__name__)

LATEST = "latest.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(value: object, where: str) -> str:
    """The checkpoint folder name ``latest.json`` holds, if it is a plain ``checkpoint-<step>``; else
    InvalidCorpus (a name such as ``../x`` or ``/etc`` would make the resume delete or read any folder). Pure."""
    name = str(value)
    if not _CKPT.fullmatch(name):
        raise InvalidCorpus(
            f"{where}: the checkpoint it names ({name[:80]!r}) is not a plain checkpoint-<step> folder name: "
            "refused before touching the filesystem; delete the file (or the run's checkpoints/ folder) to start over"
        )
    return name


def local_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder`` (one with trainer_state.json), if any."""
    best: tuple[int, Path] | None = None
    if folder.is_dir():
        for p in folder.iterdir():
            m = _CKPT.match(p.name)
            if m and (p / "trainer_state.json").is_file() and (best is None or int(m.group(1)) > best[0]):
                best = (int(m.group(1)), p)
    return best[1] if best else None


def fetch_checkpoint(storage: Store, prefix: S3Uri, folder: Path) -> Path | None:
    """Download the last mirrored checkpoint (named by checkpoints/latest.json), if one exists."""
    marker = prefix.join(LATEST)
    if not storage.exists(marker):
        return None
    try:
        named = json.loads(storage.get_bytes(marker))["checkpoint"]
    except (ValueError, KeyError, TypeError):
        raise InvalidCorpus(f"{marker}: not a JSON object with a 'checkpoint' name") from None
    name = checkpoint_name(named, str(marker))
    dest = folder / name
    if dest.exists():
        shutil.rmtree(dest)
    storage.download_tree(prefix.join(name + "/"), dest, allow_object=False)
    log.info("fetched checkpoint %s from %s", name, prefix)
    return dest


def mirror_checkpoint(storage: Store, ckpt: Path, prefix: S3Uri) -> None:
    for f in sorted(p for p in ckpt.rglob("*") if p.is_file()):
        storage.upload(f, prefix.join(f"{ckpt.name}/{f.relative_to(ckpt).as_posix()}"))
    storage.put_bytes(json.dumps({"checkpoint": ckpt.name}).encode(), prefix.join(LATEST))
    log.info("mirrored %s to %s", ckpt.name, prefix)
