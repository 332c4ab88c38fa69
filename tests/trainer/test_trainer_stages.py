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
