"""``eft render FILE``: print the ConfigMap and Job the operator would create, for GitOps reviews.

It calls the operator's own pure builders (``eft_operator.render``), so the output is exactly what the
operator sends to the API server for the run of the given generation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

HELP = """\
Print, as multi-document YAML, the ConfigMap (run config) and the batch/v1 Job that the operator
creates for each EmbeddingFinetune in FILE (- for stdin). Nothing is sent to a cluster.

The uid and generation of a resource are assigned by the API server; they name the run (run id
g<generation>-<hash of uid>) and its children. They are taken from the document's metadata when
present, else from --uid and --generation. Settings the operator reads from its environment
(EFT_TRAINER_IMAGE, EFT_DEFAULT_QUEUE_NAME, EFT_TRAINER_SERVICE_ACCOUNT, EFT_TRAINER_METRICS_PORT)
are read here too and can be overridden with the options.

A problem is printed as FILE[#DOC]: FIELD.PATH: WHAT and the exit status is 1.

examples:
  eft render examples/quickstart.yaml
  eft render --namespace ml-team --image registry.local/eft-trainer:dev examples/gpu-kueue.yaml
"""

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "render",
        help="print the ConfigMap and Job the operator would create",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="YAML file with EmbeddingFinetune documents, or - for stdin")
    p.add_argument("--image", help="trainer image (default: $EFT_TRAINER_IMAGE or the operator's default)")
    p.add_argument("--queue-name", help="default Kueue LocalQueue (default: $EFT_DEFAULT_QUEUE_NAME)")
    p.add_argument("--uid", help=f"uid of the resource when metadata has none (default: {PLACEHOLDER_UID})")
    p.add_argument("--generation", type=int, help="generation when metadata has none (default: 1)")
    p.add_argument("--namespace", help="namespace when metadata has none (default: default)")
    p.set_defaults(handler=run)


def render_file(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from dataclasses import replace

    from eft_api.spec import KIND, InvalidSpec, parse_resource
    from eft_operator.config import Settings, SettingsError
    from eft_operator.render import Owner, render_all

    label = "<stdin>" if args.file == "-" else args.file
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"eft render: {exc}", file=err)
        return 2
    if args.image:
        settings = replace(settings, trainer_image=args.image)
    if args.queue_name:
        settings = replace(settings, default_queue_name=args.queue_name)
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        docs = list(yaml.safe_load_all(text))
    except OSError as exc:
        print(f"{label}: cannot read: {exc.strerror or exc}", file=err)
        return 1
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        print(f"{label}{where}: not valid YAML: {getattr(exc, 'problem', exc)}", file=err)
        return 1
    rendered: list[dict[str, Any]] = []
    failed = False
    multi = len(docs) > 1
    for i, doc in enumerate(docs):
        if doc is None or (isinstance(doc, dict) and doc.get("kind") not in (KIND, None)):
            continue
        where = f"{label}#{i}" if multi else label
        try:
            meta, spec = parse_resource(doc)
        except InvalidSpec as exc:
            failed = True
            for p in exc.problems:
                print(f"{where}: {p.path}: {p.message}", file=err)
            continue
        owner = Owner.of(
            meta.namespace or args.namespace or "default",
            meta.resolved_name,
            meta.uid or args.uid or PLACEHOLDER_UID,
            meta.generation or args.generation or 1,
            spec,
        )
        rendered.extend(render_all(owner, spec, settings))
    if failed:
        return 1
    if not rendered:
        print(f"{label}: no {KIND} document found", file=err)
        return 1
    out.write(dump_yaml(rendered))
    return 0


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the run config JSON) as literal blocks, so reviews read them as they are."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def run(args: argparse.Namespace) -> int:
    return render_file(args, sys.stdout, sys.stderr)
