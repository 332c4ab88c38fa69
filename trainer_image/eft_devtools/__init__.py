"""Development tools, kept out of the trainer image: the demo, a local S3 server and the sample corpus.

* :mod:`eft_devtools.local_s3`: SeaweedFS on loopback, on free ports (the tests' fixture and the demo).
* :mod:`eft_devtools.sample_data`: ``python -m eft_devtools.sample_data --out .data`` builds the demo corpus.
* :mod:`eft_devtools.demo`: ``python -m eft_devtools.demo`` (``make demo``), run from the repository root.

Every path is an argument or relative to the current directory, so the tools work installed as well as
from a checkout. The trainer (``eft_trainer``) never imports this package (an import-linter contract).
"""
