"""Documents are untrusted input: every extractor is linear in its input (time at 4x the size over time at 1x
stays under a linear-ish bound, measured as a ratio, never a wall-clock limit), files over the size caps are
refused and counted, and page chrome does not become training text.

Real Sphinx HTML comes from Debian's python3.11-doc (unpacked at set-up time, never committed).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from documents_helpers import make_pdf, pydoc_root
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trainer_helpers import make_cfg

from eft_api.spec import DocumentType
from eft_trainer.documents import Refused, read_document, whitespace_tokenizer
from eft_trainer.errors import InvalidCorpus
from eft_trainer.extract.base import Document, TooDeep
from eft_trainer.extract.html import read_html
from eft_trainer.extract.markdown import read_markdown
from eft_trainer.extract.pdf import read_pdf
from eft_trainer.extract.plain import read_jsonl, read_plain
from eft_trainer.extract.rst import read_rst, rst_inline
from eft_trainer.generation import generate_dataset
from eft_trainer.storage import LocalStore

TEXT_READERS: dict[str, Callable[[str, str, str], Document]] = {
    "markdown": read_markdown,
    "rst": read_rst,
    "html": read_html,
    "text": read_plain,
}

# ---------------------------------------------------------------- timing as a ratio


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    """The least CPU time of a few runs: CPU time of this process, not wall time, so that other processes
    on a shared machine do not count (noise only ever adds time)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


#: Below this a run is timer noise and cache effects (64 KB fits in a CPU cache, 1 MB does not): the ratio
#: is taken against at least this much.
FLOOR_S = 0.02


def growth(
    read: Callable[[str], object], unit: str, small: int, factor: int, rounds: int = 3, enough: float = 0.0
) -> float:
    """Time to read ``unit`` repeated to ``factor`` x ``small`` characters over time for ``small``: the best
    of a few rounds, the two sizes taken in turn so that a change in the machine's load hits both. With
    ``enough``, the rounds stop once the ratio is under it (a quadratic reader stays far above a linear
    bound in every round; the extra rounds are for a noisy first one)."""
    texts = [unit * max(1, n // len(unit)) for n in (small, small * factor)]
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, text in enumerate(texts):
            best[i] = min(best[i], _best(lambda text=text: read(text), 1))
        if best[1] / max(best[0], FLOOR_S) < enough:
            break
    return best[1] / max(best[0], FLOOR_S)


MARKUP = "[]()<>`*_:|#=-~.!\\/ \n\tax1é"


@pytest.mark.slow  # about a minute of CPU: a fuzz run, not part of the quick loop
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unit=st.text(alphabet=MARKUP, min_size=1, max_size=8))
@pytest.mark.parametrize("fmt", list(TEXT_READERS))
def test_every_text_extractor_grows_linearly_on_repeated_markup(fmt: str, unit: str) -> None:
    read = TEXT_READERS[fmt]
    try:
        ratio = growth(lambda s: _read_or_too_deep(read, s), unit, 8192, 4, rounds=3, enough=8)
    except TooDeep:
        return
    assert ratio < 8, f"{fmt}: 4x the input of {unit!r} took {ratio:.1f}x the time"


def _read_or_too_deep(read: Callable[[str, str, str], Document], text: str) -> object:
    try:
        return read(text, "k", "t")
    except TooDeep:
        return None


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet=MARKUP, max_size=2000))
@pytest.mark.parametrize("fmt", list(TEXT_READERS))
def test_every_text_extractor_reads_any_text_without_an_error(fmt: str, text: str) -> None:
    try:
        doc = TEXT_READERS[fmt](text, "k", "t")
    except TooDeep:
        return
    assert all(p.strip() == p and p for s in doc.sections for p in s.paragraphs)


@settings(max_examples=40, deadline=None)
@given(body=st.binary(max_size=2000))
def test_pdf_extractor_gives_a_document_or_invalid_corpus(body: bytes) -> None:
    try:
        read_pdf(b"%PDF-1.4\n" + body, "s3://b/x.pdf", "x")
    except InvalidCorpus as exc:
        assert "s3://b/x.pdf" in str(exc)


@settings(max_examples=15, deadline=None)
@given(lines=st.lists(st.text(alphabet='{}[]":,\\ ax1', max_size=40), min_size=1, max_size=4))
def test_jsonl_extractor_grows_linearly(lines: list[str]) -> None:
    unit = "\n".join(json.dumps({"text": line}) for line in lines) + "\n"
    ratio = growth(lambda s: read_jsonl(s, "k", "text", "k"), unit, 4096, 4, enough=8)
    assert ratio < 8


def test_pdf_extractor_grows_linearly_in_pages(tmp_path: Path) -> None:
    page = "The widget handbook explains how widgets are assembled. [[[ :a:a:a ]]] " * 20
    small = make_pdf(tmp_path / "s.pdf", "S", [page] * 4).read_bytes()
    large = make_pdf(tmp_path / "l.pdf", "L", [page] * 16).read_bytes()
    ratio = _best(lambda: read_pdf(large, "l", "l")) / max(_best(lambda: read_pdf(small, "s", "s")), FLOOR_S)
    assert ratio < 8


# The issue's inputs: 16 KB against 64 KB of each (4x the size within 8x the time), and (slow) 64 KB against
# 1 MB (16x within 32x): linear with room for noise. The old regexes took 24 s for 64 KB of "[" and hours
# for 1 MB.
PATHOLOGICAL = {
    "brackets": "[",
    "colon-a": ":a",
    "nested-brackets": "[a](",
    "nested-closed": "[[[[]]]]",
    "roles": ":a:`b",
    "stars": "*a ",
    "angles": "<a ",
    "backquotes": "`a` ",
    "long-line": "word ",
    "footnotes": "[#a]_ [",
}


@pytest.mark.parametrize("fmt", list(TEXT_READERS))
@pytest.mark.parametrize("case", list(PATHOLOGICAL))
def test_pathological_inputs_of_the_issue_read_in_linear_time(fmt: str, case: str) -> None:
    ratio = growth(lambda s: _read_or_too_deep(TEXT_READERS[fmt], s), PATHOLOGICAL[case], 16 << 10, 4, enough=8)
    assert ratio < 8, f"{fmt} {case}: 4x the input took {ratio:.1f}x the time"


@pytest.mark.slow  # CPU only, but minutes: markdown-it reads 1 MB of "[a](" in about 25 s on this machine
@pytest.mark.parametrize("fmt", list(TEXT_READERS))
@pytest.mark.parametrize("case", list(PATHOLOGICAL))
def test_pathological_megabyte_inputs_read_in_linear_time(fmt: str, case: str) -> None:
    # Up to four rounds: with two, a busy CI machine once measured markdown's "*a " at 32.9x (quiet: 15-25x).
    # A round under the bound ends it: 1 MB of "[" takes markdown-it 25 s a round (four made it 200 s).
    read = TEXT_READERS[fmt]
    ratio = growth(lambda s: _read_or_too_deep(read, s), PATHOLOGICAL[case], 64 << 10, 16, rounds=4, enough=32)
    assert ratio < 32, f"{fmt} {case}: 16x the input took {ratio:.1f}x the time"


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("deep.rst", "".join(" " * i + "- a\n" for i in range(0, 4000, 2))),
        # 200,000 nested <div>: lexbor (selectolax), tried first, took over 10 minutes on this
        ("deep.html", "<div>" * 200_000 + "text" + "</div>" * 200_000),
        ("deep.md", ">" * 100_000 + " a\n" + "- " * 50_000 + "b\n"),
    ],
)
def test_deeply_nested_input_is_refused_never_a_crash(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / name).write_text(body)
    with pytest.raises(Refused) as err:
        read_document(tmp_path / name, f"s3://b/{name}")
    assert err.value.reason == "tooDeep" and f"s3://b/{name}" in str(err.value)


def test_nesting_within_the_parsers_limits_is_read() -> None:
    assert read_html("<div>" * 200 + "text" + "</div>" * 200, "k", "t").sections[0].paragraphs == ["text"]
    assert read_markdown(">" * 90 + " a\n\nafter\n", "k", "t").sections[0].paragraphs == ["a", "after"]


def test_rst_inline_markup_to_words() -> None:
    cases = {
        ":mod:`json` --- JSON encoder": "json --- JSON encoder",
        "see :func:`~os.path.join` and :class:`!Foo`": "see join and Foo",
        "a `link <https://x.example>`_ here": "a link here",
        "an anonymous `ref`__ and `name`_": "an anonymous ref and name",
        "``literal *stars*`` and *emphasis* and **strong**": "literal *stars* and emphasis and strong",
        "a footnote [1]_ and [#note]_.": "a footnote and.",
        "2 * 3 and a*b and *args": "2 * 3 and a*b and args",
        "unclosed ``literal and `role": "unclosed ``literal and `role",
        "ends::": "ends:",
        "a `title <target>`:ref: suffix role": "a title suffix role",
    }
    for text, words in cases.items():
        assert rst_inline(text) == words, text


# ---------------------------------------------------------------- chrome on real Sphinx HTML

CHROME = [
    "Navigation",
    "index | modules",
    "previous |",
    "Previous topic",
    "Next topic",
    "This Page",
    "Report a Bug",
    "Show Source",
    "Table of Contents",
    "Last updated on",
    "Created using",
    "© Copyright",
    "Quick search",
    "Python »",
]
PAGES = [
    "library/json.html",
    "library/functools.html",
    "library/os.path.html",
    "tutorial/classes.html",
    "faq/general.html",
]


@pytest.mark.parametrize("page", PAGES)
def test_sphinx_pages_give_their_content_without_chrome(page: str) -> None:
    (doc,) = read_document(pydoc_root() / page, page)
    paragraphs = [p for s in doc.sections for p in s.paragraphs]
    assert len(paragraphs) > 10 and sum(map(len, paragraphs)) > 5000
    for p in paragraphs:
        assert not any(c in p for c in CHROME), (page, p[:200])
    assert not any(
        s.path[-1] in ("Navigation", "This Page", "Previous topic", "Table of Contents") for s in doc.sections
    )


ISSUE_NAV = (
    '<div><a href="index.html">Home</a> | <a href="contents.html">Table of contents</a> | '
    '<a href="genindex.html">Index</a> | <a href="py-modindex.html">Modules</a></div>'
    '<div>&laquo; <a href="p.html">previous</a> | <a href="u.html">up</a> | <a href="n.html">next</a> &raquo;</div>'
)


@pytest.mark.parametrize("page", PAGES)
def test_nav_bars_without_theme_classes_are_still_chrome(page: str) -> None:
    """The same real page with every class, role and id removed (so no theme rule applies) and the issue's
    navigation bars and "Last update:" line added at its top and bottom: the content stays, the chrome goes."""
    html = re.sub(r'\s(class|role|id)="[^"]*"', "", (pydoc_root() / page).read_text())
    html = html.replace("<body>", "<body>" + ISSUE_NAV, 1)
    html = html.replace("</body>", ISSUE_NAV + "<p>Last update: May 12, 2026</p></body>", 1)
    doc = read_html(html, page, "t")
    text = "\n".join(p for s in doc.sections for p in s.paragraphs)
    assert len(text) > 5000
    for chrome in ("Home | Table of contents | Index | Modules", "Table of contents", "previous | up", "Last update:"):
        assert chrome not in text, (page, chrome)
    (real,) = read_document(pydoc_root() / page, page)
    assert real.sections[-1].paragraphs[-1] in text  # the content's last paragraph is still there


def test_markdown_html_blocks_and_tables_keep_their_words() -> None:
    md = (
        "# T\n\n<div class='x'><script>alert(1)</script>Raw <b>html</b></div>\n\n"
        "| a | b |\n|---|---|\n| one | two |\n\n![alt text](i.png) and [link](u)\n"
    )
    doc = read_markdown(md, "k", "t")
    assert doc.sections[0].paragraphs == ["Raw html", "| a | b | |---|---| | one | two |", "alt text and link"]


# ---------------------------------------------------------------- size caps


def test_a_file_over_the_cap_is_refused_after_reading_at_most_cap_plus_one(tmp_path: Path) -> None:
    path = tmp_path / "big.md"
    path.write_bytes(b"# Big\n\n" + b"[" * 100_000)
    with pytest.raises(Refused) as err:
        read_document(path, "s3://b/big.md", max_bytes=4096)
    assert err.value.reason == "overFileLimit" and "s3://b/big.md" in str(err.value) and "4096" in str(err.value)
    assert read_document(path, "s3://b/big.md", DocumentType.MARKDOWN, max_bytes=200_000)


def _local_spec(limits: dict[str, int]) -> dict[str, object]:
    return {
        "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {
            "train": {"uri": "s3://local/docs/", "format": "documents"},
            "eval": {"heldOutFraction": 0.5},
            "generate": {"generator": {"titles": {}}, "chunking": {"size": 64, "overlap": 8}, "limits": limits},
        },
        "output": {"uri": "s3://local/out/"},
    }


def _section(i: int) -> str:
    return f"Part {i}\n{'=' * 10}\n\nThe widget number {i} has a spring and a frame of steel.\n\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("limits", "refused", "read"),
    [
        ({"maxFileBytes": 4096}, {"overFileLimit": 2}, 3),
        # a and b (1.5 KB each) fit in 4 KB, c would pass it; d and e are over the file cap as well
        ({"maxFileBytes": 4096, "maxTotalBytes": 4096}, {"overTotalLimit": 1, "overFileLimit": 2}, 2),
    ],
)
def test_generation_refuses_and_counts_files_over_the_caps(
    tmp_path: Path,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    limits: dict[str, int],
    refused: dict[str, int],
    read: int,
) -> None:
    docs = tmp_path / "data" / "local" / "docs"
    docs.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (docs / f"{name}.rst").write_text("".join(_section(i) for i in range(20)))
    (docs / "d-big.md").write_bytes(b"[" * (600 << 10))
    (docs / "e-big.rst").write_bytes(b":a" * (300 << 10))
    cfg = make_cfg(_local_spec(limits), tmp_path / "work", model_dir)
    gen = generate_dataset(cfg, LocalStore(tmp_path / "data"), tmp_path / "work", whitespace_tokenizer())
    assert gen.card["documentsRefused"] == refused and gen.summary().refused == sum(refused.values())
    names = ["a.rst", "b.rst", "c.rst", "d-big.md", "e-big.rst"]
    assert [r["key"] for r in gen.card["refused"]] == [f"s3://local/docs/{n}" for n in names[read:]]
    assert all(r["bytes"] > 0 for r in gen.card["refused"])
    assert gen.card["documentsRead"] == read and gen.card["documentsEmpty"] == 0
    assert gen.report_section()["documentsRefused"] == refused
