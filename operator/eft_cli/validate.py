"""``eft validate FILE...``: the checks the API server and the operator make, before you apply."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import yaml

from eft_api.schema import structural_problems
from eft_api.spec import KIND, InvalidSpec, SpecProblem, parse_resource

HELP = """\
Check EmbeddingFinetune resources before you apply them: first against the CRD's schema (what
`kubectl apply` would refuse), then with the operator's own typed checks (what would fail the run,
including which losses fit which data format). Each problem is printed on one line as
FILE[#DOC]: FIELD.PATH: WHAT, and the exit status is 1 when any file has a problem.

Documents of other kinds in a multi-document file are skipped, so a kustomize build or a Helm
template output can be piped in with `-`.

examples:
  eft validate examples/*.yaml
  kustomize build overlays/prod | eft validate -
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="check resources against the CRD schema and the typed model",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "files", nargs="+", metavar="FILE", help="YAML files with EmbeddingFinetune documents, or - for stdin"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print problems only, not the OK lines")
    p.set_defaults(handler=run)


def _documents(name: str) -> Iterator[tuple[int, Any]]:
    text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    yield from enumerate(yaml.safe_load_all(text))


def check_document(doc: Any) -> list[SpecProblem]:
    """Schema problems first; the typed model's problems that the schema did not already report."""
    problems = structural_problems(doc)
    try:
        parse_resource(doc)
    except InvalidSpec as exc:
        seen = {p.path for p in problems}
        problems += [p for p in exc.problems if p.path not in seen]
    return problems


def validate_files(files: list[str], out: TextIO, quiet: bool = False) -> int:
    failed = 0
    for name in files:
        label = "<stdin>" if name == "-" else name
        try:
            docs = list(_documents(name))
        except OSError as exc:
            print(f"{label}: cannot read: {exc.strerror or exc}", file=out)
            failed += 1
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            print(f"{label}{where}: not valid YAML: {getattr(exc, 'problem', exc)}", file=out)
            failed += 1
            continue
        found = 0
        multi = len(docs) > 1
        for i, doc in enumerate(d for _, d in docs):
            if doc is None or (isinstance(doc, dict) and doc.get("kind") not in (KIND, None)):
                continue
            found += 1
            where = f"{label}#{i}" if multi else label
            problems = check_document(doc)
            if problems:
                failed += 1
                for p in problems:
                    print(f"{where}: {p.path}: {p.message}", file=out)
            elif not quiet:
                name_ = (doc.get("metadata") or {}).get("name", "?")
                print(f"{where}: {KIND} {name_} is valid", file=out)
        if found == 0:
            print(f"{label}: no {KIND} document found", file=out)
            failed += 1
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    return validate_files(args.files, sys.stdout, quiet=args.quiet)
