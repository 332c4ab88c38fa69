"""The one sentence splitter (``eft_trainer.documents``): chunking documents and pre-training (TSDAE) cut prose alike.

One table for both entry points: ``sentences`` cuts one paragraph as it is; ``split_sentences`` first splits a text
into paragraphs (blank lines) and joins each into one line."""

from __future__ import annotations

import pytest

from eft_trainer.documents import abbreviated, sentences, split_sentences

#: (id, text, sentences of the text as one paragraph, sentences of the text as paragraphs joined into lines)
CASES: list[tuple[str, str, list[str], list[str]]] = [
    (
        "one",
        "A single sentence without an end",
        ["A single sentence without an end"],
        ["A single sentence without an end"],
    ),
    ("two", "First one. Second one.", ["First one.", "Second one."], ["First one.", "Second one."]),
    ("question-exclaim", "Is it? Yes! Fine.", ["Is it?", "Yes!", "Fine."], ["Is it?", "Yes!", "Fine."]),
    (
        "lower-case-next",
        "Call os.path.join() then. it is fine.",
        ["Call os.path.join() then. it is fine."],
        ["Call os.path.join() then. it is fine."],
    ),
    ("digit-next", "Python 3. 12 is out.", ["Python 3.", "12 is out."], ["Python 3.", "12 is out."]),
    (
        "abbreviation",
        "Use a list, e.g. A list of ints. Done here.",
        ["Use a list, e.g. A list of ints.", "Done here."],
        ["Use a list, e.g. A list of ints.", "Done here."],
    ),
    (
        "abbreviations-mixed",
        "Use it, e.g. like this. Then stop! Why? Because 3 is odd.",
        ["Use it, e.g. like this.", "Then stop!", "Why?", "Because 3 is odd."],
        ["Use it, e.g. like this.", "Then stop!", "Why?", "Because 3 is odd."],
    ),
    (
        "abbreviation-any-case",
        "See I.e. The rest. Next.",
        ["See I.e. The rest.", "Next."],
        ["See I.e. The rest.", "Next."],
    ),
    (
        "abbreviation-in-brackets",
        "Lists (e.g. Tuples) work. Go.",
        ["Lists (e.g. Tuples) work.", "Go."],
        ["Lists (e.g. Tuples) work.", "Go."],
    ),
    ("abbreviation-inside-a-word", "A bee.g. Then more.", ["A bee.g.", "Then more."], ["A bee.g.", "Then more."]),
    ("title", "Ask Mrs. Smith today. Fine.", ["Ask Mrs. Smith today.", "Fine."], ["Ask Mrs. Smith today.", "Fine."]),
    ("lower-case-no-ends", "Say no. Then go.", ["Say no.", "Then go."], ["Say no.", "Then go."]),
    ("label", "See No. 5 and Fig. 2 there.", ["See No. 5 and Fig. 2 there."], ["See No. 5 and Fig. 2 there."]),
    (
        "initial",
        "Written by J. Smith in Dublin.",
        ["Written by J. Smith in Dublin."],
        ["Written by J. Smith in Dublin."],
    ),
    (
        "quote-closes",
        'He said "stop." Then it ended.',
        ['He said "stop."', "Then it ended."],
        ['He said "stop."', "Then it ended."],
    ),
    (
        "bracket-opens",
        "One ends. (Two starts here.)",
        ["One ends.", "(Two starts here.)"],
        ["One ends.", "(Two starts here.)"],
    ),
    (
        "wrapped-lines",
        "A sentence wrapped\nover two lines. Next one.",
        ["A sentence wrapped\nover two lines.", "Next one."],
        ["A sentence wrapped over two lines.", "Next one."],
    ),
    ("paragraphs", "Title line\n\nBody text here", ["Title line\n\nBody text here"], ["Title line", "Body text here"]),
    ("blank", "  \n\n  ", [], []),
    ("decimal", "Pi is 3.14 roughly.", ["Pi is 3.14 roughly."], ["Pi is 3.14 roughly."]),
]


@pytest.mark.parametrize(("text", "one", "joined"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sentences(text: str, one: list[str], joined: list[str]) -> None:
    assert sentences(text) == one
    assert split_sentences(text) == joined


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        ("Use it, e.g.", True),
        ("(e.g.", True),
        ("J.", True),
        ("see E.G.", True),
        ("bee.g.", False),
        ("no.", False),
        ("", False),
    ],
)
def test_abbreviated(before: str, expected: bool) -> None:
    assert abbreviated(before) is expected
