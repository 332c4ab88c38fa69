"""Development tools live outside the trainer's package and find their files from the current directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eft_devtools import demo

REPO = Path(__file__).resolve().parents[1]


def test_the_image_package_holds_no_development_tools() -> None:
    shipped = {p.stem for p in (REPO / "trainer_image" / "eft_trainer").glob("*.py")}
    assert not shipped & {"demo", "local_s3", "sample_data"}
    copies = re.findall(r"^COPY\s+(.+)$", (REPO / "trainer_image" / "Dockerfile").read_text(), flags=re.M)
    assert copies and not [c for c in copies if "eft_devtools" in c or c.split()[0] in (".", "trainer_image")]


def test_the_demo_reads_its_spec_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--data", str(tmp_path / "data")]) == 2
    assert f"{tmp_path / 'examples' / 'quickstart.yaml'} is missing" in capsys.readouterr().err

    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "quickstart.yaml").write_text((REPO / "examples" / "quickstart.yaml").read_text())
    assert demo.main(["--data", str(tmp_path / "data")]) == 2
    assert "python-docs/pairs.jsonl is missing: run `make data` first" in capsys.readouterr().err
