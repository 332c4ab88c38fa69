"""HTML with lxml (libxml2's HTML parser: linear, and it stops at 256 levels of nesting): the main content of
a page, not its chrome.

1. The content root: the first of ``[role=main]``, ``<main>``, ``<article>``, ``div.body`` (Sphinx), the
   ``<body>``.
2. Chrome under it is skipped: elements that are navigation by tag (nav, header, footer, aside, form, ...),
   by ARIA role (navigation, banner, contentinfo, search, complementary) or by a class themes use for
   navigation bars, sidebars and footers (``related``, ``sphinxsidebar``, ``footer``, ``headerlink``, ...).
3. A block that is all links (only separators such as ``|``, ``«`` and ``»`` between them) is a navigation
   bar: "Home | Table of contents | Index | Modules", "« previous | up | next »". A short block that
   starts "Last update", "Last updated", "Created using" or "Copyright" is a footer line.

Headings h1-h6 make sections; block elements end paragraphs. The walk is iterative and touches each node
once. A page nested deeper than libxml2 follows raises :class:`~eft_trainer.extract.base.TooDeep` (lexbor,
tried first, took minutes for 20,000 nested ``<div>`` s: its time grows with the square of the depth).
"""

from __future__ import annotations

from lxml import etree

from eft_trainer.extract.base import Builder, Document, TooDeep, spaces

_MAIN = (
    "//*[@role='main']",
    "//main",
    "//article",
    "//div[contains(concat(' ', normalize-space(@class), ' '), ' body ')]",
    "//body",
)
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
    tree = _parse(text, key)
    walk = _Walk(title)
    if tree is not None:
        walk.run(_content_root(tree))
        page_title = spaces(tree.findtext(".//title") or "")
        if walk.b.title == title and page_title:
            walk.b.retitle(page_title)
    return walk.b.document(key)


def _content_root(tree: etree._Element) -> etree._Element:
    for query in _MAIN:
        found = tree.xpath(query)
        if isinstance(found, list) and found and isinstance(found[0], etree._Element):
            return found[0]
    return tree


def html_text(fragment: str) -> str:
    """The text of an HTML fragment (Markdown's raw HTML blocks), without scripts and styles."""
    tree = _parse(f"<div>{fragment}</div>", "")
    if tree is None:
        return ""
    etree.strip_elements(tree, "script", "style", "noscript", "template", with_tail=False)
    return " ".join(str(t) for t in tree.itertext())


def _parse(text: str, key: str) -> etree._Element | None:
    """The page's tree (None for an empty page); :class:`TooDeep` when libxml2 stopped at its depth limit."""
    parser = etree.HTMLParser(encoding="utf-8", no_network=True, remove_comments=True, remove_pis=True)
    try:
        tree = etree.fromstring(text.encode("utf-8", "surrogatepass"), parser)
    except etree.ParserError:
        return None
    if any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log):
        raise TooDeep(f"{key}: nested deeper than the HTML parser follows (256 levels)")
    return tree


def _chrome(node: etree._Element) -> bool:
    tag = node.tag
    if not isinstance(tag, str) or tag in _CHROME_TAGS:
        return True  # a comment or processing instruction (its tail is still read), or a chrome element
    attrs = node.attrib
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

    def run(self, root: etree._Element) -> None:
        stack: list[tuple[etree._Element, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if leaving:
                self._leave(str(node.tag))
            elif _chrome(node):
                pass
            else:
                self._enter(str(node.tag))
                self._text(node.text or "")
                stack.append((node, True))
                stack.extend((c, False) for c in reversed(node))
                continue
            if node is not root:
                self._text(node.tail or "")  # the text after an element belongs to its parent
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
