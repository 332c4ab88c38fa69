"""Text extraction, one module per format, each with the format's own parser (linear in the input):

* :mod:`.markdown`: markdown-it-py (CommonMark);
* :mod:`.rst`: docutils for the block structure (sections, lists, directives, literal blocks, tables),
  with a linear inline scanner in place of docutils' inline parser (which is quadratic on some input);
* :mod:`.html`: lxml (libxml2): the page's main content, without navigation, sidebars and footers;
* :mod:`.pdf`: pypdf, page by page;
* :mod:`.plain`: plain text and JSON lines with a text column.

Each reader takes the decoded text (PDF: the bytes), the document's key and a fallback title, and returns a
:class:`~eft_trainer.extract.base.Document`.
"""
