"""Build the demo corpus from the Python documentation that Debian ships (``python3.11-doc``, PSF licence).

    python -m eft_devtools.sample_data --out .data

writes ``.data/python-docs/pairs.jsonl`` with columns ``question`` and ``answer``: FAQ questions paired with
their answers, and library-reference section titles ("json: Basic Usage") paired with the section's text.
The text is third-party documentation: it is built at set-up time and never committed. Idempotent: an
existing file is kept.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "python3.11-doc"
SOURCES = "usr/share/doc/python3.11/html/_sources"
_UNDERLINE = re.compile(r"^([=\-~^*#+\"'`])\1{2,}\s*$")
_ROLE = re.compile(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`_+")
_MAX_ANSWER = 1200


class SampleDataError(RuntimeError):
    pass


def _clean(text: str) -> str:
    """Strip the reST markup that would only add noise (roles, links, directives, index entries)."""
    out: list[str] = []
    skip_indent: int | None = None
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if stripped and indent <= skip_indent:
                skip_indent = None
            else:
                continue
        if stripped.startswith(".. ") and any(
            stripped.startswith(f".. {d}")
            for d in (
                "index",
                "module",
                "moduleauthor",
                "sectionauthor",
                "only",
                "contents",
                "toctree",
                "_",
                "highlight",
            )
        ):
            skip_indent = indent
            continue
        if stripped.startswith(".. ") and "::" in stripped:
            stripped = stripped.split("::", 1)[1].strip()
        if _UNDERLINE.match(stripped):
            continue
        out.append(stripped)
    joined = " ".join(s for s in out if s)
    joined = _LINK.sub(r"\1", joined)
    joined = _ROLE.sub(r"\1", joined)
    joined = joined.replace("``", "").replace("**", "").replace("::", ":")
    return re.sub(r"\s+", " ", joined).strip()


def _sections(text: str) -> Iterator[tuple[str, str]]:
    """(title, body) of every reST section of a document (body up to the next title)."""
    lines = text.splitlines()
    heads: list[int] = []
    for i in range(1, len(lines)):
        title = lines[i - 1].strip()
        if title and _UNDERLINE.match(lines[i]) and len(lines[i].strip()) >= len(title) and not _UNDERLINE.match(title):
            heads.append(i - 1)
    for n, h in enumerate(heads):
        end = heads[n + 1] if n + 1 < len(heads) else len(lines)
        body = "\n".join(lines[h + 2 : end])
        yield lines[h].strip(), body


def _title(text: str) -> str:
    return _clean(text).strip(" -")


def build_pairs(sources: Path) -> list[dict[str, str]]:
    """FAQ (question -> answer) and library reference (module: section -> text) pairs from reST sources."""
    pairs: list[dict[str, str]] = []
    for path in sorted((sources / "faq").glob("*.rst.txt")):
        for title, body in _sections(path.read_text(encoding="utf-8", errors="replace")):
            answer = _clean(body)
            if title.endswith("?") and len(answer) >= 40:
                pairs.append({"question": _title(title), "answer": answer[:_MAX_ANSWER]})
    for path in sorted((sources / "library").glob("*.rst.txt")):
        sections = list(_sections(path.read_text(encoding="utf-8", errors="replace")))
        if not sections:
            continue
        module = _title(sections[0][0]).split(" --- ")[0].split(" — ")[0]
        for title, body in sections[1:]:
            answer = _clean(body)
            name = _title(title)
            if len(answer) < 120 or not name or name.lower() in {"examples", "example", "notes", "footnotes"}:
                continue
            pairs.append({"question": f"{module}: {name}", "answer": answer[:_MAX_ANSWER]})
    seen: set[str] = set()
    unique = []
    for p in pairs:
        if p["question"] not in seen and p["question"] != p["answer"]:
            seen.add(p["question"])
            unique.append(p)
    return unique


def fetch_sources(tmp: Path) -> Path:
    """Download and unpack Debian's python3.11-doc into ``tmp``; return its reST sources folder."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise SampleDataError(
            "apt-get/dpkg-deb are missing, so the Python documentation cannot be fetched: put a JSON-lines file "
            "with 'question' and 'answer' fields at <out>/python-docs/pairs.jsonl and run again"
        )

    def download() -> bool:
        r = subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, capture_output=True, text=True)
        return r.returncode == 0 and any(tmp.glob(f"{PACKAGE}_*.deb"))

    if not download():
        subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        if not download():
            raise SampleDataError(
                f"`apt-get download {PACKAGE}` failed (no package mirror reachable?): run `apt-get update` and try "
                "again, or put a JSON-lines file with 'question' and 'answer' fields at <out>/python-docs/pairs.jsonl"
            )
    deb = next(tmp.glob(f"{PACKAGE}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], check=True)
    sources = tmp / "root" / SOURCES
    if not sources.is_dir():
        raise SampleDataError(f"{deb.name} has no reST sources under /{SOURCES}")
    return sources


def build(out: Path, limit: int = 2400, seed: int = 7) -> Path:
    target = out / "python-docs" / "pairs.jsonl"
    if target.exists() and target.stat().st_size > 0:
        print(f"sample data: {target} already exists; kept it")
        return target
    with tempfile.TemporaryDirectory(prefix="eft-pydoc-") as tmpdir:
        pairs = build_pairs(fetch_sources(Path(tmpdir)))
    faq = [p for p in pairs if p["question"].endswith("?")]
    lib = [p for p in pairs if not p["question"].endswith("?")]
    random.Random(seed).shuffle(lib)
    chosen = faq + lib[: max(0, limit - len(faq))]
    random.Random(seed).shuffle(chosen)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_target = target.with_suffix(".tmp")
    with tmp_target.open("w", encoding="utf-8") as f:
        for p in chosen:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    tmp_target.replace(target)
    print(f"sample data: wrote {len(chosen)} pairs ({len(faq)} FAQ, {len(chosen) - len(faq)} library) to {target}")
    return target


def unpack_documents(out: Path) -> Path:
    """The whole package under ``<out>/python3.11-doc`` (reST sources and HTML), for training from documents
    and for the documents tests and benchmarks. Idempotent."""
    target = out / PACKAGE
    if (target / SOURCES / "library").is_dir():
        return target
    with tempfile.TemporaryDirectory(prefix="eft-pydoc-") as tmpdir:
        fetch_sources(Path(tmpdir))
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(Path(tmpdir) / "root"), str(target))
    print(f"sample data: unpacked {PACKAGE} into {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".data", help="output folder (default .data)")
    parser.add_argument("--limit", type=int, default=2400, help="at most this many pairs (default 2400)")
    args = parser.parse_args(argv)
    try:
        build(Path(args.out), limit=args.limit)
        unpack_documents(Path(args.out))
    except SampleDataError as exc:
        print(f"sample data: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
