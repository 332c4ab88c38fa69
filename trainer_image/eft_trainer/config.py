"""Load the run config (seam 2) from the JSON file that ``$EFT_RUN_CONFIG`` names."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from eft_api.contract import RUN_CONFIG_ENV, RUN_CONFIG_PATH, RunConfig
from eft_trainer.errors import InvalidSpecError


def load_run_config(path: str | os.PathLike[str] | None = None) -> RunConfig:
    """Read and check the run config; :class:`InvalidSpecError` names the file and the fields at fault."""
    where = Path(path or os.environ.get(RUN_CONFIG_ENV) or RUN_CONFIG_PATH)
    try:
        text = where.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidSpecError(
            f"cannot read the run config {where}: {exc.strerror or exc} (set {RUN_CONFIG_ENV})"
        ) from None
    try:
        return RunConfig.from_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)[:10]
        )
        raise InvalidSpecError(f"run config {where} is not valid: {problems}") from None
