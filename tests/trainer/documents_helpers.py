"""Real documents for tests: Debian's python3.11-doc (reST sources and HTML of the library reference, PSF
licence), unpacked at set-up time under ``.data/python3.11-doc`` and never committed; and PDFs made here."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "python3.11-doc"
HTML = "usr/share/doc/python3.11/html"


def pydoc_root() -> Path:
    """The unpacked package's html/ folder (with _sources/): $EFT_PYDOC_DIR, .data/, or fetched with apt-get."""
    candidates = [Path(os.environ["EFT_PYDOC_DIR"])] if os.environ.get("EFT_PYDOC_DIR") else []
    candidates += [REPO / ".data" / PACKAGE, REPO.parent / "main" / ".data" / PACKAGE]
    for c in candidates:
        if (c / HTML / "_sources" / "library").is_dir():
            return c / HTML
    target = REPO / ".data" / PACKAGE
    if shutil.which("apt-get") and shutil.which("dpkg-deb"):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, capture_output=True, check=False)
            debs = list(Path(tmp).glob(f"{PACKAGE}_*.deb"))
            if debs:
                subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(target)], check=True)
                return target / HTML
    pytest.skip(f"{PACKAGE} is not unpacked (set EFT_PYDOC_DIR, or run `apt-get download {PACKAGE}` and dpkg-deb -x)")


def library_rst(root: Path, names: list[str]) -> list[Path]:
    return [root / "_sources" / "library" / f"{n}.rst.txt" for n in names]


def make_pdf(path: Path, title: str, pages: list[str], user_password: str | None = None) -> Path:
    """A real PDF (fpdf2) with a title and one text block per page; encrypted (RC4) when a password is given."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_font("helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    if user_password is not None:
        pdf.set_encryption(owner_password="owner-" + user_password, user_password=user_password)
    pdf.output(str(path))
    return path
