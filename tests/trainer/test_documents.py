"""Documents to pairs, offline and without S3: extraction by type, chunking, generators, filters, split, hash.

Real text comes from Debian's python3.11-doc (reST sources and HTML) and PDFs made with fpdf2 here.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from documents_helpers import library_rst, make_pdf, pydoc_root
from trainer_helpers import make_cfg

from eft_api.spec import DocumentType, GenerateFilter, InverseCloze, Titles
from eft_trainer.documents import (
    Chunk,
    Document,
    Section,
    Tokenizer,
    chunk_documents,
    chunk_section,
    document_type,
    read_document,
    whitespace_tokenizer,
)
from eft_trainer.errors import InvalidCorpus
from eft_trainer.generate import Pair
from eft_trainer.generate.filters import apply
from eft_trainer.generate.inverse_cloze import InverseClozeGenerator
from eft_trainer.generate.titles import TitlesGenerator
from eft_trainer.generation import dataset_hash, split_by_documents

# ---------------------------------------------------------------- extraction


def test_rst_library_reference_keeps_titles_headings_and_prose() -> None:
    (path,) = library_rst(pydoc_root(), ["json"])
    (doc,) = read_document(path, "library/json.rst.txt")
    assert doc.title == "json --- JSON encoder and decoder"
    paths = [s.path for s in doc.sections]
    assert ("json --- JSON encoder and decoder", "Basic Usage") in paths
    assert (
        "json --- JSON encoder and decoder",
        "Standard Compliance and Interoperability",
        "Character Encodings",
    ) in paths
    text = " ".join(p for s in doc.sections for p in s.paragraphs)
    assert ":mod:" not in text and "``" not in text and ".. versionchanged" not in text and "moduleauthor" not in text
    assert "lightweight data interchange format" in text


def test_html_from_the_documentation_package_skips_navigation() -> None:
    (doc,) = read_document(pydoc_root() / "library" / "json.html", "library/json.html")
    assert doc.title.startswith("json") and "JSON encoder and decoder" in doc.title
    assert any(s.path[-1] == "Basic Usage" for s in doc.sections)
    text = " ".join(p for s in doc.sections for p in s.paragraphs)
    assert "lightweight data interchange format" in text
    assert "¶" not in text and "Previous topic" not in text and "Table of Contents" not in text


def test_markdown_front_matter_headings_fences_and_links(tmp_path: Path) -> None:
    md = tmp_path / "guide.md"
    md.write_text(
        "---\ntitle: x\n---\n# Widget guide\n\nWidgets are [small tools](https://w.example) for **work**.\n\n"
        "## Install\n\nRun the installer.\nIt takes a minute.\n\n```sh\nwidget --install\n```\n\n"
        "Setext heading\n--------------\n\n- one item\n- two items\n"
    )
    (doc,) = read_document(md, "guide.md")
    assert doc.title == "Widget guide"
    by_path = {s.path: s.paragraphs for s in doc.sections}
    assert by_path[("Widget guide",)] == ["Widgets are small tools for work."]
    assert by_path[("Widget guide", "Install")] == ["Run the installer. It takes a minute.", "widget --install"]
    assert ("Widget guide", "Setext heading") in by_path


def test_pdf_made_here_is_read_page_by_page(tmp_path: Path) -> None:
    pages = [
        "The widget handbook explains how widgets are assembled. Each widget has a frame and a spring.",
        "Maintenance: oil the spring every month. Replace the frame when it cracks.",
    ]
    path = make_pdf(tmp_path / "handbook.pdf", "Widget Handbook", pages)
    (doc,) = read_document(path, "s3://b/handbook.pdf")
    assert doc.title == "Widget Handbook"
    text = " ".join(p for s in doc.sections for p in s.paragraphs)
    assert "oil the spring every month" in text and "widgets are assembled" in text


def test_a_real_pdf_of_a_debian_documentation_package_when_present() -> None:
    found = [p for p in Path("/usr/share/doc").glob("*/*.pdf") if p.stat().st_size < 5_000_000]
    if not found:
        pytest.skip("no PDF under /usr/share/doc on this machine")
    docs = read_document(found[0], found[0].name)
    assert docs and docs[0].chars > 1000


@pytest.mark.parametrize(
    ("name", "make", "words"),
    [
        ("secret.pdf", lambda p: make_pdf(p, "S", ["hidden text"], user_password="pw"), ["encrypted", "password"]),
        (
            "broken.pdf",
            lambda p: p.write_bytes(b"%PDF-1.7\n1 0 obj <</Type /Catalog>> garbage"),
            ["not a readable PDF"],
        ),
        ("image.md", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), ["binary file"]),
        ("latin1.txt", lambda p: p.write_bytes(b"fine line\ncaf\xe9\n"), ["line 2", "not UTF-8"]),
        ("docs.jsonl", lambda p: p.write_text('{"text": "a"}\n{"body": "b"}\n'), ["line 2", "'text'"]),
    ],
)
def test_bad_files_are_invalid_corpus_naming_the_file(
    tmp_path: Path, name: str, make: object, words: list[str]
) -> None:
    path = tmp_path / name
    make(path)  # type: ignore[operator]
    with pytest.raises(InvalidCorpus) as err:
        read_document(path, f"s3://b/docs/{name}")
    assert f"s3://b/docs/{name}" in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_types_by_extension_and_override(tmp_path: Path) -> None:
    assert document_type("a/b.rst.txt") is DocumentType.RESTRUCTURED_TEXT
    assert document_type("notes.txt", "Title\n=====\n\ntext") is DocumentType.RESTRUCTURED_TEXT
    assert document_type("notes.txt", "just text") is DocumentType.TEXT
    assert document_type("x.HTM") is DocumentType.HTML and document_type("x.unknown") is DocumentType.TEXT
    page = tmp_path / "page.txt"
    page.write_text("<html><head><title>T</title></head><body><h1>Head</h1><p>Body text.</p></body></html>")
    (doc,) = read_document(page, "page.txt", DocumentType.HTML)
    assert doc.title == "Head" and doc.sections[0].paragraphs == ["Body text."]
    jl = tmp_path / "docs.jsonl"
    jl.write_text(json.dumps({"body": "first doc", "title": "One"}) + "\n" + json.dumps({"body": "second"}) + "\n")
    docs = read_document(jl, "docs.jsonl", None, text_column="body")
    assert [d.title for d in docs] == ["One", "docs 2"] and [d.key for d in docs] == ["docs.jsonl#1", "docs.jsonl#2"]


# ---------------------------------------------------------------- chunking


def test_chunks_respect_size_keep_paths_and_overlap() -> None:
    tok = whitespace_tokenizer()
    para = " ".join(f"Sentence number {i} has five words." for i in range(40))  # 6 words each, 240 in all
    doc = Document("d", "T", [Section(("T",), ["Short intro paragraph."]), Section(("T", "Part"), [para, "Tail."])])
    chunks = list(chunk_documents([doc], 50, 12, tok))
    assert all(c.tokens <= 50 and len(c.text.split()) <= 50 for c in chunks)
    assert chunks[0].path == ("T",) and chunks[0].text == "Short intro paragraph."
    part = [c for c in chunks if c.path == ("T", "Part")]
    assert len(part) >= 5 and [c.id for c in chunks] == [f"d#{i}" for i in range(len(chunks))]
    for a, b in itertools.pairwise(part):  # about 12 tokens repeated: the last sentences of a start b
        assert b.text.split(". ")[0] in a.text
    # no section's text is lost
    assert "Sentence number 39 has five words." in part[-1].text or "Tail." in part[-1].text


def test_an_overlong_sentence_is_split_on_tokens() -> None:
    tok = whitespace_tokenizer()
    long = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_section([(p, len(p.split())) for p in tok.split(long, 30)], 30, 0)
    assert [len(c[0].split()) for c in chunks] == [30, 30, 30, 10]


@pytest.mark.slow
def test_real_tokenizer_chunks_fit_the_model(model_dir: Path) -> None:
    from trainer_helpers import HUB_ID
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(model_dir / HUB_ID))
    tok = Tokenizer.of(hf)
    docs = [d for p in library_rst(pydoc_root(), ["json", "os.path", "re"]) for d in read_document(p, p.name)]
    chunks = list(chunk_documents(docs, 128, 16, tok))
    assert len(chunks) > 100
    sizes = [len(hf(c.text)["input_ids"]) for c in chunks]
    assert max(sizes) <= 128 + 2, max(sizes)  # special tokens counted; joins may differ by a token
    assert sum(sizes) / len(sizes) > 40  # packed, not one sentence a chunk


# ---------------------------------------------------------------- generators and filters


def _chunk(cid: str, text: str, path: tuple[str, ...] = ("Doc", "Sec")) -> Chunk:
    return Chunk(cid, cid.split("#")[0], path, text, len(text.split()))


def test_inverse_cloze_picks_prose_sentences_seeded() -> None:
    text = (
        "The parser reads the whole file into memory first. It then builds a tree of nodes for every "
        "element found. Then >>> parse(x) == {a} fails."
    )
    chunks = [_chunk(f"d{i}#0", text) for i in range(5)]
    gen = InverseClozeGenerator(InverseCloze(), seed=1)
    pairs = gen.generate(chunks, 2)
    assert len(pairs) == 10
    for p in pairs:
        assert p.query in text and p.query not in p.positive and ">>>" not in p.query
    assert pairs == InverseClozeGenerator(InverseCloze(), seed=1).generate(chunks, 2)
    keep = InverseClozeGenerator(InverseCloze(removeQuery=False), seed=1).generate(chunks[:1], 1)
    assert keep[0].positive == text


def test_titles_one_query_per_section_with_the_document_title() -> None:
    chunks = [
        _chunk("d#0", "intro text", ("json",)),
        _chunk("d#1", "how to use it", ("json", "Basic Usage")),
        _chunk("d#2", "more on use", ("json", "Basic Usage")),
    ]
    pairs = TitlesGenerator(Titles()).generate(chunks, 3)
    assert [(p.query, p.positive) for p in pairs] == [("json", "intro text"), ("json: Basic Usage", "how to use it")]
    bare = TitlesGenerator(Titles(withDocumentTitle=False)).generate(chunks, 1)
    assert [p.query for p in bare] == ["json", "Basic Usage"]


def test_filters_count_every_drop_by_reason() -> None:
    def p(q: str, pos: str = "a passage") -> Pair:
        return Pair(q, pos, "c", "d", "g")

    pairs = [
        p("How do I parse a JSON file from disk quickly?"),
        p("   "),
        p("short"),
        p("A fine question with no passage?", "  "),
        p("how do I parse a JSON file from disk quickly"),  # the same after normalisation
        p("How do I parse a JSON file from disk quickly today?"),  # near: Jaccard 7/8 of trigrams... >= 0.75
        p("What does the spring of a widget do?"),
    ]
    kept, dropped = apply(pairs, GenerateFilter(minQueryChars=8, nearDuplicateThreshold=0.75))
    assert [k.query for k in kept] == [pairs[0].query, pairs[-1].query]
    assert dropped == {"empty": 1, "tooShort": 1, "emptyPositive": 1, "duplicate": 1, "nearDuplicate": 1}
    _, exact_only = apply(pairs, GenerateFilter(minQueryChars=8, nearDuplicateThreshold=1))
    assert exact_only["nearDuplicate"] == 0 and exact_only["duplicate"] == 1


def test_near_duplicates_found_among_many() -> None:
    base = [f"What is the default value of option number {i} in the config module?" for i in range(2000)]
    noisy = [q.replace("What is", "what is") + "!" for q in base[:300]]  # exact after normalisation
    near = [q.replace("config module", "config module today") for q in base[300:600]]
    kept, dropped = apply(
        [Pair(q, "x", "c", "d", "g") for q in base + noisy + near], GenerateFilter(nearDuplicateThreshold=0.8)
    )
    assert len(kept) == 2000 and dropped["duplicate"] == 300 and dropped["nearDuplicate"] == 300


# ---------------------------------------------------------------- split and hash


def test_split_holds_out_whole_documents() -> None:
    pairs = [{"anchor": f"q{d}-{i}", "positive": "p", "doc": f"doc{d}"} for d in range(20) for i in range(5)]
    train, ev, info = split_by_documents(pairs, 0.2, seed=3)
    assert {p["doc"] for p in train}.isdisjoint({p["doc"] for p in ev})
    assert info == {"by": "documents", "evalDocuments": 4, "trainDocuments": 16} and len(ev) == 20
    assert split_by_documents(pairs, 0.2, seed=3)[1] == ev and split_by_documents(pairs, 0.2, seed=4)[1] != ev
    with pytest.raises(InvalidCorpus, match="two or more"):
        split_by_documents(pairs[:5], 0.2, seed=3)


def _docs_spec(**generate: object) -> dict[str, object]:
    return {
        "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {
            "train": {"uri": "s3://bkt/docs/", "format": "documents"},
            "generate": {"generator": {"inverseCloze": {}}, **generate},
        },
        "output": {"uri": "s3://bkt/out/"},
    }


@pytest.mark.slow
def test_dataset_hash_covers_listing_and_generation_settings_only(tmp_path: Path, model_dir: Path) -> None:
    listing = [("docs/a.rst", 10, "etag-a"), ("docs/b.md", 20, "etag-b")]
    h = dataset_hash(make_cfg(_docs_spec(), tmp_path, model_dir), listing, None)
    assert h == dataset_hash(make_cfg(_docs_spec(), tmp_path, model_dir, name="other"), listing, None)
    trained_longer = _docs_spec()
    trained_longer["training"] = {"epochs": 3, "learningRate": 1e-4}
    assert h == dataset_hash(make_cfg(trained_longer, tmp_path, model_dir), listing, None)
    assert h != dataset_hash(make_cfg(_docs_spec(seed=7), tmp_path, model_dir), listing, None)
    assert h != dataset_hash(make_cfg(_docs_spec(chunking={"size": 128}), tmp_path, model_dir), listing, None)
    assert h != dataset_hash(
        make_cfg(_docs_spec(), tmp_path, model_dir), [listing[0], ("docs/b.md", 20, "etag-c")], None
    )
    assert h != dataset_hash(make_cfg(_docs_spec(), tmp_path, model_dir), listing, "another prompt")
