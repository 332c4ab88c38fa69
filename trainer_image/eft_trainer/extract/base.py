"""What every extractor makes: a :class:`Document` of :class:`Section` s, built by a :class:`Builder`.

Linear in the text: whitespace is collapsed with ``str.split`` and paragraphs are cut at blank lines by one
pass over the lines; no regular expression runs over document text here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class TooDeep(Exception):
    """The file nests deeper than its parser follows: the caller refuses it (reason ``tooDeep``)."""


@dataclass
class Section:
    path: tuple[str, ...]
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class Document:
    key: str
    title: str
    sections: list[Section]

    @property
    def chars(self) -> int:
        return sum(len(p) for s in self.sections for p in s.paragraphs)


def spaces(text: str) -> str:
    """``text`` with every run of whitespace made one space, trimmed."""
    return " ".join(text.split())


def blocks(text: str) -> list[str]:
    """The paragraphs of plain text: runs of non-blank lines, cut at blank lines."""
    out: list[str] = []
    cur: list[str] = []
    for line in text.splitlines():
        if line.strip():
            cur.append(line)
        elif cur:
            out.append("\n".join(cur))
            cur = []
    if cur:
        out.append("\n".join(cur))
    return out


class Builder:
    """Collects headings and paragraphs into sections with their path (document title > headings)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.heads: list[tuple[int, str]] = []
        self.sections: list[Section] = [Section((title,))]

    def heading(self, level: int, text: str) -> None:
        text = spaces(text)
        if not text:
            return
        if not self.heads and level == 1 and not any(s.paragraphs for s in self.sections):
            self.title = text  # the first top-level heading is the document's title
            self.heads = [(1, text)]
            self.sections = [Section((text,))]
            return
        self.heads = [(lv, t) for lv, t in self.heads if lv < level] + [(level, text)]
        path = tuple(t for _, t in self.heads)
        if path[0] != self.title:
            path = (self.title, *path)
        self.sections.append(Section(path))

    def paragraph(self, text: str) -> None:
        text = spaces(text)
        if text:
            self.sections[-1].paragraphs.append(text)

    def retitle(self, title: str) -> None:
        """Name the document ``title`` (an HTML page's <title> when it has no top-level heading)."""
        self.title = title
        self.sections[0].path = (title, *self.sections[0].path[1:])

    def document(self, key: str) -> Document:
        return Document(key, self.title, [s for s in self.sections if s.paragraphs])
