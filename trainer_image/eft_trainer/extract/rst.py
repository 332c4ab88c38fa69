"""reStructuredText with docutils: sections, paragraphs, lists, tables, literal blocks and directives come
from docutils' own parser; inline markup goes through :func:`rst_inline`, a linear scanner, in place of
docutils' inline parser (quadratic on some input: 64 KB of ``:a`` took over a minute).

Sphinx's directives are registered with docutils so that Sphinx sources (the Python documentation) read
well: an object description (``.. function:: dumps(obj)``) gives its signature and its body, a version note
("Changed in version 3.4: ...") its words, and ``toctree``, ``index``, ``moduleauthor`` and the like nothing.
An unknown directive is dropped. Nothing reaches outside the text: file inclusion and raw output are off,
and no configuration file is read.

The walk over docutils' tree is iterative, but docutils' parser recurses: a file nested deeper than Python's
recursion limit allows (a few hundred levels) raises :class:`TooDeep`, and the caller refuses the file.
Registering the directives is a module-level side effect on docutils' registry (this process is the
trainer's own).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, ClassVar

from docutils import nodes
from docutils.core import publish_doctree
from docutils.parsers.rst import Directive, Parser, directives, states

from eft_trainer.extract.base import Builder, Document, TooDeep

_SETTINGS = {
    "_disable_config": True,
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "report_level": 5,
    "halt_level": 5,
    "doctitle_xform": False,
    "docinfo_xform": False,
    "sectsubtitle_xform": False,
    "syntax_highlight": "none",
    "smart_quotes": False,
    "line_length_limit": 1 << 40,  # the inline scanner is linear: no line is too long for it
}


def read_rst(text: str, key: str, title: str) -> Document:
    settings = {**_SETTINGS, "warning_stream": io.StringIO()}
    try:
        tree = publish_doctree(text, parser=Parser(inliner=_Inliner()), settings_overrides=settings)
    except RecursionError:
        raise TooDeep(f"{key}: nested deeper than the reStructuredText parser follows") from None
    b = Builder(title)
    _walk(tree, b)
    return b.document(key)


# ---- the doctree to sections

_SKIP: tuple[type[nodes.Node], ...] = (
    nodes.comment, nodes.system_message, nodes.substitution_definition, nodes.target, nodes.raw,
    nodes.pending, nodes.image, nodes.label, nodes.meta,
)  # fmt: skip


def _walk(tree: nodes.document, b: Builder) -> None:
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, _SKIP):
            continue
        if isinstance(node, nodes.section):
            title = node.next_node(nodes.title)
            b.heading(depth + 1, title.astext() if title is not None else "")
            kids = [c for c in node.children if not isinstance(c, nodes.title)]
            stack.extend((c, depth + 1) for c in reversed(kids))
        elif isinstance(node, nodes.row):  # a table's row is one paragraph
            b.paragraph(" ".join(entry.astext() for entry in node.children))
        elif isinstance(node, nodes.TextElement):
            b.paragraph(node.astext())
        elif isinstance(node, nodes.Element):
            stack.extend((c, depth) for c in reversed(node.children))


# ---- inline markup, linearly

_ROLE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:+.-")
_OPENERS = frozenset(" \t\n([{<'\"-/:")
_CLOSERS = frozenset(" \t\n)]}>'\".,;:!?-/")


def rst_inline(text: str) -> str:
    """The words of reST inline markup: ``:role:`text <target>``` and ```text <url>`_`` give text,
    ````literal```` its content, ``*emphasis*`` and ``**strong**`` their words; footnote references and
    escapes go. One pass, each character looked at a bounded number of times."""
    out: list[str] = []
    n, i = len(text), 0
    while i < n:
        j = text.find("`", i)
        if j < 0:
            out.append(_plain(text[i:]))
            break
        if text.startswith("``", j):
            k = text.find("``", j + 2)
            if k < 0:  # no literal closes: the rest is plain text
                out.append(_plain(text[i:]))
                break
            out.append(_plain(text[i:j]) + text[j + 2 : k])
            i = k + 2
            continue
        k = text.find("`", j + 1)
        if k < 0:
            out.append(_plain(text[i:]))
            break
        out.append(_plain(_without_role(text[i:j])) + _role_text(text[j + 1 : k]))
        i = _after_reference(text, k + 1)
    return "".join(out)


def _without_role(before: str) -> str:
    """``before`` less a role name (``:mod:``) that ends it."""
    if not before.endswith(":"):
        return before
    p = len(before) - 1
    while p > 0 and before[p - 1] in _ROLE_CHARS:
        p -= 1
    return before[:p] if p < len(before) - 1 and before[p] == ":" else before


def _role_text(inner: str) -> str:
    """Interpreted text as Sphinx shows it: ``title <target>`` -> title; ``~a.b.c`` -> c; ``!x`` -> x."""
    if inner.endswith(">") and "<" in inner:
        head = inner[: inner.rfind("<")].rstrip()
        inner = head or inner
    if inner.startswith("~"):
        inner = inner[1:].rsplit(".", 1)[-1]
    return inner.lstrip("!")


def _after_reference(text: str, i: int) -> int:
    """Past a reference's ``_`` or ``__`` or a role written after the text (```x`:sub:``)."""
    if text.startswith("__", i):
        return i + 2
    if text.startswith("_", i):
        return i + 1
    if text.startswith(":", i):
        p = i + 1
        while p < len(text) and p - i < 64 and text[p] in _ROLE_CHARS and text[p] != ":":
            p += 1
        if p < len(text) and text[p] == ":" and p > i + 1:
            return p + 1
    return i


def _plain(text: str) -> str:
    """Text outside backquotes: footnote references (``[1]_``, ``[#x]_``), ``**``, emphasis stars and
    backslash escapes go; ``::`` ends a paragraph as ``:``."""
    if "]_" in text:
        text = _without_footnotes(text)
    text = text.replace("**", "").replace("\\", "")
    if "*" in text:
        text = _without_stars(text)
    return text.replace("::", ":")


def _without_footnotes(text: str) -> str:
    out: list[str] = []
    i = 0
    while True:
        j = text.find("[", i)
        if j < 0:
            break
        k = text.find("]_", j + 1, j + 40)
        label = text[j + 1 : k] if k >= 0 else ""
        if k >= 0 and all(c.isalnum() or c in "#-_" for c in label):
            out.append(text[i:j].rstrip(" "))
            i = k + 2
        else:
            out.append(text[i : j + 1])
            i = j + 1
    out.append(text[i:])
    return "".join(out)


def _without_stars(text: str) -> str:
    """Drop a ``*`` that opens (after space or an opener, before a non-space) or closes emphasis."""
    out = []
    last = len(text) - 1
    for i, c in enumerate(text):
        if c == "*":
            before = text[i - 1] if i else " "
            after = text[i + 1] if i < last else " "
            opens = before in _OPENERS and not after.isspace() and after != "*"
            closes = not before.isspace() and before != "*" and after in _CLOSERS
            if opens or closes:
                continue
        out.append(c)
    return "".join(out)


class _Inliner(states.Inliner):
    """docutils' inliner with its parse replaced by :func:`rst_inline` (no regular expressions)."""

    def init_customizations(self, settings: Any) -> None:
        pass

    def adjust_uri(self, uri: str) -> str:
        return uri

    def parse(self, text: str, lineno: int, memo: Any, parent: Any) -> tuple[list[nodes.Node], list[Any]]:
        return [nodes.Text(rst_inline(text))], []


# ---- Sphinx's directives


class _AnyOptions(dict[str, Callable[[str], Any]]):
    """Every option accepted (Sphinx directives have many), its value kept as written."""

    def __missing__(self, key: str) -> Callable[[str], Any]:
        return directives.unchanged


class _Drop(Directive):
    has_content = True
    optional_arguments = 64
    final_argument_whitespace = True
    option_spec = _AnyOptions()

    def run(self) -> list[nodes.Node]:
        return []


class _Body(_Drop):
    """Arguments as a first paragraph (a signature, or a label's words), then the body parsed."""

    label: ClassVar[str] = ""

    def run(self) -> list[nodes.Node]:
        box = nodes.container()
        self.state.nested_parse(self.content, self.content_offset, box)
        args = [a for a in self.arguments if a != "\\"]  # a signature's lines may end in \
        if not self.label:
            if args:
                box.insert(0, nodes.paragraph(text=" ".join(args)))
            return [box]
        lead = f"{self.label} {args[0]}:" if args else f"{self.label}:"
        said = rst_inline(" ".join(args[1:]))
        first = box.children[0] if box.children else None
        if not said and isinstance(first, nodes.paragraph):
            first.children = [nodes.Text(f"{lead} {first.astext()}")]
        else:
            box.insert(0, nodes.paragraph(text=f"{lead} {said}".strip()))
        return [box]


class _Literal(_Drop):
    def run(self) -> list[nodes.Node]:
        text = "\n".join(self.content)
        return [nodes.literal_block(text, text)] if text.strip() else []


def _labelled(label: str) -> type[_Body]:
    return type(f"_Body_{label.replace(' ', '_')}", (_Body,), {"label": label})


_OBJECTS = (
    "function", "method", "class", "data", "attribute", "exception", "decorator", "decoratormethod",
    "classmethod", "staticmethod", "opcode", "cmdoption", "option", "envvar", "describe", "object",
    "pdbcommand", "coroutinefunction", "coroutinemethod", "abstractmethod", "audit-event", "property",
    "type", "macro", "member", "var", "struct", "enum", "enumerator", "union", "glossary", "hlist",
    "centered", "seealso", "impl-detail", "availability", "tab", "tabs", "program",
)  # fmt: skip
_DROPPED = (
    "index", "module", "moduleauthor", "sectionauthor", "codeauthor", "toctree", "highlight", "only",
    "contents", "include", "raw", "image", "figure", "currentmodule", "testsetup", "testcleanup",
    "literalinclude", "tabularcolumns", "autosummary", "automodule", "autoclass", "autofunction", "default-role",
    "default-domain", "ifconfig", "graphviz", "math", "sectnum", "meta",
)  # fmt: skip
_LITERAL = ("code", "code-block", "sourcecode", "doctest", "testcode", "testoutput", "productionlist", "parsed-literal")
_LABELS = {
    "versionadded": "New in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
    "deprecated-removed": "Deprecated since version",
}


def _register() -> None:
    def both(name: str, cls: type[Directive]) -> None:
        for prefix in ("", "py:", "c:", "cpp:", "js:", "std:", "rst:"):
            directives.register_directive(prefix + name, cls)

    for name in _OBJECTS:
        both(name, _Body)
    for name in _DROPPED:
        both(name, _Drop)
    for name in _LITERAL:
        directives.register_directive(name, _Literal)
    for name, label in _LABELS.items():
        directives.register_directive(name, _labelled(label))


_register()
