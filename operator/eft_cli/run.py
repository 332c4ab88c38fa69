"""``eft run FILE``: run the trainer locally on a resource, through exactly the path a Job takes.

The resource is parsed with the same typed model as the operator uses, resolved into a run config
(:func:`eft_api.contract.build_run_config`), written to a file that ``EFT_RUN_CONFIG`` names, and the
trainer's ``main()`` runs with the S3 credentials of this environment (``AWS_ACCESS_KEY_ID`` ...). Its exit
code is the trainer's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from eft_api.contract import (
    RUN_CONFIG_ENV,
    TERMINATION_LOG_ENV,
    RunConfig,
    TerminationMessage,
    TrainerSettings,
    build_run_config,
    output_prefix,
)
from eft_api.spec import InvalidSpec, dump_spec, parse_resource, parse_spec


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the trainer locally on a resource (the same path as a Job)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="a YAML file with one EmbeddingFinetune resource")
    p.add_argument("--s3-endpoint", help="override spec.storage.endpoint (e.g. http://127.0.0.1:8333)")
    p.add_argument("--work-dir", default=".eft-work", help="local work directory (default .eft-work)")
    p.add_argument("--model-dir", help="offline model folder: hub ids resolve to <dir>/<org>/<name>")
    p.add_argument("--run-id", help="override the run id (default derived from uid and generation)")
    p.add_argument("--uid", help="resource uid to derive the run id from (default local-<namespace>-<name>)")
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port (0 = off)")
    p.set_defaults(handler=run)


def resolve(
    doc: dict[str, Any],
    *,
    s3_endpoint: str | None = None,
    work_dir: str = ".eft-work",
    model_dir: str | None = None,
    run_id: str | None = None,
    uid: str | None = None,
    metrics_port: int = 0,
) -> RunConfig:
    """The run config a Job for ``doc`` would get, with the local overrides applied (pure)."""
    meta, spec = parse_resource(doc)
    if s3_endpoint:
        raw = dump_spec(spec)
        raw.setdefault("storage", {})["endpoint"] = s3_endpoint
        raw["storage"]["pathStyle"] = True
        spec = parse_spec(raw)
    namespace = meta.namespace or "default"
    cfg = build_run_config(
        namespace=namespace,
        name=meta.resolved_name,
        uid=uid or meta.uid or f"local-{namespace}-{meta.resolved_name}",
        generation=meta.generation or 1,
        spec=spec,
        settings=TrainerSettings(
            work_dir=str(Path(work_dir).resolve()),
            metrics_port=metrics_port,
            model_cache_dir=str(Path(model_dir).resolve()) if model_dir else None,
        ),
    )
    if run_id:
        ident = cfg.run.model_copy(
            update={
                "run_id": run_id,
                "output_prefix": output_prefix(spec.output.uri, namespace, meta.resolved_name, run_id),
            }
        )
        cfg = cfg.model_copy(update={"run": ident})
    return cfg


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_config(
    cfg: RunConfig, callbacks: Sequence[Any] = (), max_steps: int = -1
) -> tuple[int, TerminationMessage | None]:
    """Write the run config file and run the trainer's main() as a Job would; return (exit code, message)."""
    from eft_trainer.entrypoint import main as trainer_main

    work = Path(cfg.settings.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{cfg.run.run_id}-run-config.json"
    path.write_text(cfg.to_json())
    term = work / f"{cfg.run.run_id}-termination-log"
    with environ({RUN_CONFIG_ENV: str(path), TERMINATION_LOG_ENV: str(term)}):
        code = trainer_main(callbacks=callbacks, max_steps=max_steps)
    return code, TerminationMessage.parse(term.read_text() if term.exists() else None)


def _load(file: str) -> dict[str, Any]:
    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    docs = [d for d in yaml.safe_load_all(text) if d]
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ValueError(f"{file}: expected exactly one EmbeddingFinetune document, found {len(docs)}")
    return docs[0]


def run(args: argparse.Namespace) -> int:
    try:
        cfg = resolve(
            _load(args.file),
            s3_endpoint=args.s3_endpoint,
            work_dir=args.work_dir,
            model_dir=args.model_dir,
            run_id=args.run_id,
            uid=args.uid,
            metrics_port=args.metrics_port,
        )
    except InvalidSpec as exc:
        for p in exc.problems:
            print(f"{args.file}: {p.path}: {p.message}", file=sys.stderr)
        return 2
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"eft run: {exc}", file=sys.stderr)
        return 2
    print(f"eft run: {cfg.run.namespace}/{cfg.run.name} run {cfg.run.run_id} -> {cfg.run.output_prefix}")
    code, msg = run_config(cfg)
    print(summary(code, msg))
    return code


def summary(code: int, msg: TerminationMessage | None) -> str:
    if msg is None:
        return f"eft run: the trainer exited with {code} and left no termination message"
    lines = [f"eft run: {msg.outcome} ({msg.reason}), exit code {code}: {msg.message}"]
    if msg.headline:
        h = msg.headline
        lines.append(f"  {h.primary_metric} at {h.dimension} dims: {h.base:.4f} -> {h.finetuned:.4f} ({h.gain:+.4f})")
    if msg.artifacts:
        for k in ("model", "report", "manifest"):
            v = getattr(msg.artifacts, k)
            if v:
                lines.append(f"  {k}: {v}")
    return "\n".join(lines)
