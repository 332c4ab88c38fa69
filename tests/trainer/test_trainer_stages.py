"""The stages of a run report their own phases: generating pairs from documents is phase ``generate`` (it ran
under ``fetch`` before, so the progress gauge and the report's timings hid the generation's minutes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import HUB_ID, env, make_cfg

from eft_trainer import generation
from eft_trainer.entrypoint import run_job
from eft_trainer.metrics import Progress
from eft_trainer.storage import DATA_ROOT_ENV


class Phases(Progress):
    """Progress gauges that remember every phase they were set to."""

    def __init__(self) -> None:
        super().__init__(0)
        self.seen: list[str] = []

    def set_phase(self, phase: str) -> None:
        self.seen.append(phase)
        super().set_phase(phase)


class Stop(Exception):
    pass


@pytest.mark.slow  # loads the base model (its tokenizer chunks the documents)
def test_generating_pairs_from_documents_is_phase_generate(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    (root / "bkt" / "docs").mkdir(parents=True)
    (root / "bkt" / "docs" / "a.md").write_text("# Widgets\n\nA widget has a frame and a spring.\n")
    spec = {
        "model": {"base": HUB_ID, "maxSeqLength": 64},
        "data": {
            "train": {"uri": "s3://bkt/docs/", "format": "documents"},
            "generate": {"chunking": {"size": 64, "overlap": 8}, "generator": {"titles": {}}},
        },
        "output": {"uri": "s3://bkt/runs/"},
        "resources": {"gpus": 0},
    }
    cfg = make_cfg(spec, tmp_path / "work", model_dir)
    progress = Phases()
    at_generation: list[str] = []

    def generate_dataset(*args: Any, **kwargs: Any) -> Any:
        at_generation.append(progress.seen[-1])
        raise Stop

    monkeypatch.setattr(generation, "generate_dataset", generate_dataset)
    with env({DATA_ROOT_ENV: str(root)}), pytest.raises(Stop):
        run_job(cfg, progress=progress)
    progress.close()
    assert at_generation == ["generate"] and "fetch" not in progress.seen


@pytest.mark.parametrize(("rank", "registered"), [(0, True), (1, False)])
def test_a_run_found_already_published_is_still_registered_with_the_runs_own_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: int, registered: bool
) -> None:
    """A retry after the registry failed finds the run published: it registers it (rank 0 only), through the
    store the run opened, not a second one."""
    from eft_api.contract import TerminationMessage
    from eft_trainer import registry
    from eft_trainer.distributed import World
    from eft_trainer.stages import publish

    spec = {
        "model": {"base": HUB_ID},
        "data": {"train": {"uri": "s3://bkt/pairs/", "format": "pairs"}},
        "output": {
            "uri": "s3://bkt/runs/",
            "registry": {"mlflow": {"trackingUri": "http://mlflow.test:5000", "modelName": "m"}},
        },
        "resources": {"gpus": 0},
    }
    cfg = make_cfg(spec, tmp_path / "work", tmp_path)
    done = TerminationMessage(outcome="Succeeded", reason="Published", message="published before", run_id="r")
    stores: list[Any] = []
    calls: list[Any] = []

    def already_published(c: Any, storage: Any) -> TerminationMessage:
        stores.append(storage)
        return done

    def after_publish(c: Any, msg: TerminationMessage, storage: Any) -> TerminationMessage:
        calls.append(storage)
        return msg.model_copy(update={"message": "registered"})

    monkeypatch.setattr(publish, "already_published", already_published)
    monkeypatch.setattr(registry, "after_publish", after_publish)
    with env({DATA_ROOT_ENV: str(tmp_path / "root")}):
        msg = run_job(cfg, world=World(rank, rank, 2))
    assert calls == (stores if registered else [])
    assert msg.message == ("registered" if registered else "published before")
