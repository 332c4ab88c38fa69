"""HTML with selectolax (lexbor, a linear C parser): the main content of a page, not its chrome.

1. The content root: the first of ``[role=main]``, ``<main>``, ``<article>``, ``div.body`` (Sphinx), the
   ``<body>``.
2. Chrome under it is skipped: elements that are navigation by tag (nav, header, footer, aside, form, ...),
   by ARIA role (navigation, banner, contentinfo, search, complementary) or by a class themes use for
   navigation bars, sidebars and footers (``related``, ``sphinxsidebar``, ``footer``, ``headerlink``, ...).
3. A block that is all links (only separators such as ``|``, ``«`` and ``»`` between them) is a navigation
   bar: "Home | Table of contents | Index | Modules", "« previous | up | next »". A short block that
   starts "Last update", "Last updated", "Created using" or "Copyright" is a footer line.

Headings h1-h6 make sections; block elements end paragraphs. The walk is iterative (no recursion on deep
nesting) and touches each node once.
"""

from __future__ import annotations

from selectolax.lexbor import LexborHTMLParser, LexborNode

from eft_trainer.extract.base import Builder, Document, spaces

_MAIN = ("[role=main]", "main", "article", "div.body")
_BLOCK = {
    "p", "div", "li", "ul", "ol", "pre", "br", "tr", "td", "th", "table", "section", "article", "main", "dd",
    "dt", "dl", "blockquote", "figcaption", "hr", "body", "center", "caption",
}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_CHROME_TAGS = {
    "script", "style", "noscript", "template", "svg", "math", "nav", "header", "footer", "aside", "form",
    "button", "select", "textarea", "iframe", "object", "embed", "canvas", "head", "title", "dialog", "menu",
}  # fmt: skip
_CHROME_ROLES = {"navigation", "banner", "contentinfo", "search", "complementary", "menu", "menubar", "toolbar"}
_CHROME_CLASSES = {
    "sphinxsidebar", "related", "footer", "headerlink", "navigation", "toc", "breadcrumbs", "topnav",
    "bottomnav", "header", "header-wrapper", "footer-wrapper", "sidebar", "navbar", "nav", "rel", "relbar",
    "rellinks", "skip-link", "searchbox", "prev-next-area", "related-pages", "wy-nav-side", "rst-footer-buttons",
}  # fmt: skip
_FOOTER_LINES = ("last update", "last updated", "last modified", "created using", "copyright", "©")
_FOOTER_MAX = 160


def read_html(text: str, key: str, title: str) -> Document:
    tree = LexborHTMLParser(text)
    walk = _Walk(title)
    root = next((n for n in (tree.css_first(s) for s in _MAIN) if n is not None), None) or tree.body
    if root is not None:
        walk.run(root)
    page_title = tree.css_first("title")
    if walk.b.title == title and page_title is not None and spaces(page_title.text()):
        walk.b.retitle(spaces(page_title.text()))
    return walk.b.document(key)


def html_text(fragment: str) -> str:
    """The text of an HTML fragment (Markdown's raw HTML blocks), without scripts and styles."""
    tree = LexborHTMLParser(fragment)
    tree.strip_tags(["script", "style", "noscript", "template"])
    return tree.body.text(separator=" ") if tree.body is not None else ""


def _chrome(node: LexborNode) -> bool:
    tag = node.tag or ""
    if tag in _CHROME_TAGS:
        return True
    attrs = node.attributes
    if (attrs.get("role") or "") in _CHROME_ROLES or "hidden" in attrs:
        return True
    return not _CHROME_CLASSES.isdisjoint((attrs.get("class") or "").split())


class _Walk:
    """Paragraphs and headings of a content root, with each block's link text counted to spot nav bars."""

    def __init__(self, title: str) -> None:
        self.b = Builder(title)
        self.buf: list[str] = []
        self.linked = 0  # letters and digits of the buffer inside <a>
        self.links = 0  # depth of <a> elements open
        self.heading: int | None = None

    def run(self, root: LexborNode) -> None:
        stack: list[tuple[LexborNode, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if leaving:
                self._leave(node.tag or "")
            elif node.is_text_node:
                self._text(node.text_content or "")
            elif node.is_element_node and not _chrome(node):
                self._enter(node.tag or "")
                stack.append((node, True))
                stack.extend((c, False) for c in reversed(list(node.iter(include_text=True))))
        self._flush()

    def _enter(self, tag: str) -> None:
        if tag in _HEADINGS:
            self._flush()
            self.heading = _HEADINGS[tag]
        elif tag in _BLOCK:
            self._flush()
        elif tag == "a":
            self.links += 1

    def _leave(self, tag: str) -> None:
        if tag in _HEADINGS:
            self._flush()
            self.heading = None
        elif tag in _BLOCK:
            self._flush()
        elif tag == "a":
            self.links -= 1

    def _text(self, text: str) -> None:
        self.buf.append(text)
        if self.links:
            self.linked += sum(c.isalnum() for c in text)

    def _flush(self) -> None:
        text, linked = spaces("".join(self.buf)), self.linked
        self.buf.clear()
        self.linked = 0
        if self.heading is not None:
            self.b.heading(self.heading, text.replace("¶", ""))
        elif text and not _navigation(text, linked):
            self.b.paragraph(text)


def _navigation(text: str, linked: int) -> bool:
    """A block of links and separators only (a navigation bar), or a short footer line."""
    letters = sum(c.isalnum() for c in text)
    if linked and letters - linked <= letters // 20:
        return True
    return len(text) <= _FOOTER_MAX and text.lower().startswith(_FOOTER_LINES)
