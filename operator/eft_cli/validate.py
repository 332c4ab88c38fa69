"""``eft validate FILE...``: the checks the API server and the operator make, before you apply."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import yaml

from eft_api import policy
from eft_api.schema import structural_problems
from eft_api.spec import KIND, InvalidSpec, SpecProblem, parse_resource
from eft_cli.server import ClientMissing

HELP = """\
Check EmbeddingFinetune resources before you apply them. Each problem is printed on one line as
FILE[#DOC]: FIELD.PATH: WHAT, and the exit status is 1 when any file has a problem (2 when the
check itself could not run, for example an unreachable cluster).

Offline (the default), two checks that a test keeps in agreement with a real API server case by
case: the CRD's structural schema (types, enums, ranges, patterns, unknown fields) and the typed
model, which also holds the CRD's CEL rules (which losses fit which data format, and so on) and
the metadata rules (name length, generateName).

With --policy VALUES.yaml, the platform policy of a Helm values file (its `policy` key, see
docs/security.md) judges each resource too, with the overrides of the namespace that -n names (else the
document's metadata.namespace, else `default`): the same verdict, field and rule as the cluster's
admission policy and the operator (Stalled=True, reason PolicyViolation).

With --server, the API server of your kubeconfig judges instead: a server-side dry run with strict
field validation, which also runs the cluster's admission policies and persists nothing. It needs
the CRD installed and permission to create EmbeddingFinetunes in the namespace.

Documents of other kinds in a multi-document file are skipped, so a kustomize build or a Helm
template output can be piped in with `-`.

examples:
  eft validate examples/*.yaml
  kustomize build overlays/prod | eft validate -
  eft validate --server -n ml-team examples/quickstart.yaml
  eft validate --policy platform-values.yaml -n team-a examples/documents-llm.yaml
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
    p.add_argument(
        "--server", action="store_true", help="ask the API server of the kubeconfig (a dry run) instead of offline"
    )
    p.add_argument(
        "-n", "--namespace", help="namespace for --server or --policy when a document has none (default: context's)"
    )
    p.add_argument(
        "--policy", metavar="VALUES.yaml", help="also check against the platform policy of a Helm values file"
    )
    p.add_argument("--kubeconfig", help="kubeconfig file for --server (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context for --server (default: the current context)")
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


Checker = Callable[[Any], list[SpecProblem]]


def policy_checker(values_file: str, namespace: str | None, check: Checker = check_document) -> Checker:
    """``check``, then the platform policy of ``values_file`` (its ``policy`` key) for the document's namespace."""
    values = yaml.safe_load(Path(values_file).read_text(encoding="utf-8")) or {}
    platform = policy.load(values.get("policy") if isinstance(values, dict) else None)

    def checked(doc: Any) -> list[SpecProblem]:
        problems = check(doc)
        ns = namespace or (doc.get("metadata") or {}).get("namespace") or "default"
        found = policy.violations(doc, platform.for_namespace(ns)) if isinstance(doc, dict) else []
        return problems + [SpecProblem(path=v.field, message=f"refused by {v.rule}: {v.message}") for v in found]

    return checked


def validate_files(files: list[str], out: TextIO, quiet: bool = False, check: Checker = check_document) -> int:
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
            problems = check(doc)
            if problems:
                failed += 1
                for p in problems:
                    print(f"{where}: {p.path}: {p.message}", file=out)
            elif not quiet:
                meta = doc.get("metadata") or {}
                name_ = meta.get("name") or f"{meta.get('generateName', '')}*"
                print(f"{where}: {KIND} {name_} is valid", file=out)
        if found == 0:
            print(f"{label}: no {KIND} document found", file=out)
            failed += 1
    return 1 if failed else 0


def server_checker(args: argparse.Namespace) -> Checker:
    """A checker that asks the API server of the kubeconfig (see :mod:`eft_cli.server`)."""
    from eft_cli.server import load_client, server_problems

    api_client, context_namespace = load_client(args.kubeconfig, args.context)
    namespace = args.namespace or context_namespace

    def check(doc: Any) -> list[SpecProblem]:
        return server_problems(api_client, doc, namespace)

    return check


def _unreachable(exc: Exception) -> bool:
    """A kubeconfig missing, a cluster unreachable, TLS: said on stderr with exit status 2."""
    if isinstance(exc, OSError) or type(exc).__module__.startswith(("kubernetes", "urllib3")):
        print(f"eft validate --server: cannot ask the API server: {exc}", file=sys.stderr)
        return True
    return False


def run(args: argparse.Namespace) -> int:
    try:
        check = server_checker(args) if args.server else check_document
        if args.policy:
            try:
                check = policy_checker(args.policy, args.namespace, check)
            except (OSError, yaml.YAMLError, policy.PolicyError) as exc:
                print(f"eft validate --policy {args.policy}: {exc}", file=sys.stderr)
                return 2
        return validate_files(args.files, sys.stdout, quiet=args.quiet, check=check)
    except Exception as exc:
        if _unreachable(exc):
            return 2
        if isinstance(exc, ClientMissing):
            print(f"eft validate --server: {exc}", file=sys.stderr)
            return 2
        raise
