"""Entry point of the ``eft`` console script."""

from __future__ import annotations

import argparse
import sys

from eft_cli import render, retrain, run, validate

DESCRIPTION = """\
eft works with EmbeddingFinetune resources (short name: eft) outside the cluster.

  eft validate FILE...   check resources against the CRD schema and the operator's typed checks
  eft render FILE        print the ConfigMap and Job the operator would create (for GitOps reviews)
  eft run FILE           run the trainer locally on a resource, through the same path a Job takes
  eft retrain NAME       start a new run of a resource in the cluster without a spec edit

Run `eft COMMAND --help` for the details of each.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eft", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    validate.add_parser(sub)
    render.add_parser(sub)
    run.add_parser(sub)
    retrain.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        print("eft: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
