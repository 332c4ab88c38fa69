"""End to end against SeaweedFS: documents in (real reST and HTML of python3.11-doc, a PDF made here), pairs
generated offline (inverseCloze + titles), filtered (on the text, then round trip and easiness with the base
model), published as a dataset, trained, measured, published;
a second run reuses the dataset and calls no generator; bad documents stop the run with InvalidCorpus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from documents_helpers import library_rst, make_pdf, pydoc_root
from trainer_helpers import HUB_ID, env, keys, make_cfg

from eft_api.contract import ExitCode, Reason, TerminationMessage
from eft_cli.run import run_config
from eft_devtools.local_s3 import LocalS3
from eft_trainer import generate
from eft_trainer.publish import sha256_file

# Two training runs share a module fixture: on a busy 2-core machine they take 8-12 minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

MODULES = ["json", "csv", "os.path", "pathlib", "re", "shutil", "glob", "tempfile", "textwrap", "string", "datetime"]
PDF_PAGES = [
    "The widget handbook explains how widgets are assembled from a frame and a spring. "
    "A widget that squeaks needs oil on its spring. Frames are made of steel or of aluminium.",
    "Maintenance of a widget is simple. Oil the spring every month with light machine oil. "
    "Replace the frame when it cracks, and never bend a spring by hand.",
]

FILTER = {"roundTrip": {"enabled": True, "topK": 10}, "easiness": {"dropFraction": 0.1}}
TEXT_REASONS = {"empty", "tooShort", "emptyPositive", "duplicate", "nearDuplicate"}


def documents_spec(bucket: str, endpoint: str, prefix: str = "docs/", **training: Any) -> dict[str, Any]:
    return {
        "model": {"base": HUB_ID, "maxSeqLength": 64},
        "data": {
            "train": {"uri": f"s3://{bucket}/{prefix}", "format": "documents"},
            "eval": {"heldOutFraction": 0.2, "seed": 5, "maxDistractors": 500},
            "generate": {
                "chunking": {"size": 64, "overlap": 12},
                "maxChunks": 400,
                "generator": {"inverseCloze": {}, "titles": {}},
                "filter": FILTER,
            },
        },
        "training": {"epochs": 1, "batchSize": 16, "learningRate": 1e-4, "checkpointSteps": 1000, **training},
        "evaluation": {"kValues": [1, 10], "primaryMetric": "ndcg@10", "batchSize": 64},
        "output": {"uri": f"s3://{bucket}/runs/"},
        "storage": {"endpoint": endpoint, "pathStyle": True},
        "resources": {"gpus": 0},
    }


def upload_documents(s3: LocalS3, bucket: str, tmp: Path) -> list[str]:
    root = pydoc_root()
    client = s3.client()
    names = []
    for path in library_rst(root, MODULES):
        client.upload_file(str(path), bucket, f"docs/library/{path.name}")
        names.append(path.name)
    client.upload_file(str(root / "library" / "functools.html"), bucket, "docs/html/functools.html")
    pdf = make_pdf(tmp / "widgets.pdf", "Widget Handbook", PDF_PAGES)
    client.upload_file(str(pdf), bucket, "docs/pdf/widgets.pdf")
    return names


def _get(s3: LocalS3, bucket: str, key: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


@pytest.fixture(scope="module")
def runs(s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Any]:
    bucket = "e2e-documents"
    s3_server.create_bucket(bucket)
    upload_documents(s3_server, bucket, tmp_path_factory.mktemp("pdf"))
    out: dict[str, Any] = {"bucket": bucket}
    generate.CALLS.clear()
    with env(s3_server.env()):
        cfg = make_cfg(documents_spec(bucket, s3_server.endpoint), tmp_path_factory.mktemp("work"), model_dir)
        out["first"] = (cfg, *run_config(cfg))
        out["calls_first"] = dict(generate.CALLS)
        generate.CALLS.clear()
        # Only a training setting changes: a new run, the same dataset, no generator call.
        spec2 = documents_spec(bucket, s3_server.endpoint, learningRate=5e-5)
        cfg2 = make_cfg(spec2, tmp_path_factory.mktemp("work2"), model_dir)
        out["second"] = (cfg2, *run_config(cfg2))
        out["calls_second"] = dict(generate.CALLS)
    return out


def test_first_run_generates_trains_measures_and_publishes(runs: dict[str, Any], s3_server: LocalS3) -> None:
    cfg, code, msg = runs["first"]
    assert code == ExitCode.SUCCEEDED, msg
    assert isinstance(msg, TerminationMessage) and msg.generation is not None and msg.headline is not None
    g = msg.generation
    assert not g.reused and g.documents == len(MODULES) + 2 and g.chunks <= 400
    assert g.pairs + g.dropped > 200 and g.pairs > 50  # round trip (top 10 of 400 chunks) drops about half
    assert runs["calls_first"]["inverseCloze"] == g.chunks and runs["calls_first"]["titles"] == g.chunks
    assert len(msg.to_json().encode()) <= 4096
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    report = json.loads(_get(s3_server, runs["bucket"], prefix + "report.json"))
    gen = report["generation"]
    assert gen["generators"] == ["inverseCloze", "titles"] and gen["pairs"] == g.pairs
    dropped = gen["dropped"]
    assert set(dropped) == TEXT_REASONS | {"roundTrip", "tooEasy"}
    assert gen["pairsGenerated"] == gen["pairs"] + sum(dropped.values()) and g.dropped == sum(dropped.values())
    # Round trip drops some queries whose positive the base model ranks below 10 others; easiness drops a tenth
    # of what is left, the pairs at or above the reported similarity.
    assert dropped["roundTrip"] > 0
    assert dropped["tooEasy"] == int(0.1 * (gen["pairs"] + dropped["tooEasy"]))
    assert gen["modelFilter"]["pool"] == g.chunks and 0 < gen["modelFilter"]["tooEasyAbove"] <= 1
    assert len(gen["samples"]) == 20 and all(s["query"] and s["positive"] for s in gen["samples"])
    assert gen["split"]["by"] == "documents" and gen["split"]["evalDocuments"] == 3  # 20% of 13 documents
    md = _get(s3_server, runs["bucket"], prefix + "report.md").decode()
    assert "## Generated pairs" in md and f"roundTrip {dropped['roundTrip']}" in md and "model filters: pool" in md
    assert keys(s3_server, runs["bucket"], prefix + "manifest.json")


def test_dataset_is_published_content_addressed_with_manifest_last(
    runs: dict[str, Any], s3_server: LocalS3, tmp_path: Path
) -> None:
    _cfg, _, msg = runs["first"]
    dataset = msg.generation.dataset
    assert dataset.startswith(f"s3://{runs['bucket']}/runs/ns/t/datasets/") and dataset.endswith("/")
    prefix = dataset.split("/", 3)[3]
    stored = sorted(k[len(prefix) :] for k in keys(s3_server, runs["bucket"], prefix))
    assert stored == ["datacard.json", "manifest.json", "pairs.jsonl"]
    manifest = json.loads(_get(s3_server, runs["bucket"], prefix + "manifest.json"))
    for obj in manifest["objects"]:
        s3_server.client().download_file(runs["bucket"], prefix + obj["key"], str(tmp_path / obj["key"]))
        assert sha256_file(tmp_path / obj["key"]) == obj["sha256"]
    card = json.loads((tmp_path / "datacard.json").read_text())
    assert card["hash"] in dataset and card["documentsListed"] == len(MODULES) + 2
    assert all(d["etag"] and d["bytes"] > 0 for d in card["documents"])
    assert card["generate"]["chunking"] == {"size": 64, "overlap": 12}
    assert card["generate"]["filter"]["roundTrip"] == FILTER["roundTrip"] and card["modelFilter"]["pool"] > 0
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == card["pairs"] and {"anchor", "positive", "doc", "chunk", "generator"} <= set(pairs[0])
    docs = {p["doc"] for p in pairs}
    assert (
        f"s3://{runs['bucket']}/docs/pdf/widgets.pdf" in docs
        and f"s3://{runs['bucket']}/docs/html/functools.html" in docs
    )


def test_second_run_reuses_the_dataset_and_calls_no_generator(runs: dict[str, Any]) -> None:
    cfg1, _, first = runs["first"]
    cfg2, code, msg = runs["second"]
    assert code == ExitCode.SUCCEEDED, msg
    assert cfg2.run.run_id != cfg1.run.run_id
    assert msg.generation.reused and msg.generation.dataset == first.generation.dataset
    assert msg.generation.pairs == first.generation.pairs
    assert runs["calls_second"] == {}


BAD: dict[str, tuple[str, bytes | None, str]] = {
    "corrupt-pdf": (
        "docs/broken.pdf",
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\ntrailer garbage",
        "not a readable PDF",
    ),
    "binary-as-text": ("docs/logo.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "binary file"),
    "encrypted-pdf": ("docs/secret.pdf", None, "encrypted PDF"),
    "empty-prefix": ("", None, "no documents there"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_documents_are_invalid_corpus_and_publish_nothing(
    case: str, s3_server: LocalS3, tmp_path: Path, model_dir: Path
) -> None:
    bucket = f"bad-docs-{case}"
    s3_server.create_bucket(bucket)
    key, body, words = BAD[case]
    client = s3_server.client()
    if key:
        (good,) = library_rst(pydoc_root(), ["json"])
        client.upload_file(str(good), bucket, "docs/json.rst.txt")
        if body is None:
            body = make_pdf(tmp_path / "secret.pdf", "Secret", ["hidden text"], user_password="pw").read_bytes()
        client.put_object(Bucket=bucket, Key=key, Body=body)
    else:
        client.put_object(Bucket=bucket, Key="elsewhere/readme.md", Body=b"# not under the prefix\n")
    cfg = make_cfg(documents_spec(bucket, s3_server.endpoint), tmp_path / "work", model_dir)
    with env(s3_server.env()):
        code, msg = run_config(cfg)
    assert code == ExitCode.BAD_INPUT == 2, msg
    assert msg is not None and msg.reason == Reason.INVALID_CORPUS and words in msg.message
    if key:
        assert f"s3://{bucket}/{key}" in msg.message
    assert keys(s3_server, bucket, "runs/") == []


@pytest.mark.parametrize(
    ("case", "code", "reason", "words"),
    [
        ("model-not-served", ExitCode.BAD_INPUT, Reason.GENERATOR_MISCONFIGURED, "does not serve model 'gpt-absent'"),
        ("refuses-every-call", ExitCode.RETRYABLE, Reason.GENERATION_FAILED, "more than maxFailureRate"),
    ],
)
def test_an_llm_endpoint_that_fails_stops_the_run_with_its_reason(
    case: str, code: int, reason: str, words: str, s3_server: LocalS3, tmp_path: Path, model_dir: Path
) -> None:
    from llm_standin import KEY, MODEL, StandIn

    from eft_api.contract import LLM_API_KEY_ENV

    bucket = f"llm-{case}"
    s3_server.create_bucket(bucket)
    (good,) = library_rst(pydoc_root(), ["json"])
    s3_server.client().upload_file(str(good), bucket, "docs/json.rst.txt")
    standin = StandIn().start()
    try:
        standin.refuse_all = case == "refuses-every-call"
        spec = documents_spec(bucket, s3_server.endpoint)
        llm = {"endpoint": standin.url, "model": "gpt-absent" if case == "model-not-served" else MODEL, "maxRetries": 1}
        spec["data"]["generate"]["generator"] = {"llm": llm}
        cfg = make_cfg(spec, tmp_path / "work", model_dir)
        with env({**s3_server.env(), LLM_API_KEY_ENV: KEY}):
            got, msg = run_config(cfg)
    finally:
        standin.stop()
    assert got == code, msg
    assert msg is not None and msg.reason == reason and words in msg.message and KEY not in msg.to_json()
    assert [k for k in keys(s3_server, bucket, "runs/") if k.endswith("manifest.json")] == []


def test_a_10mb_pathological_document_is_refused_and_counted(
    s3_server: LocalS3, tmp_path: Path, model_dir: Path
) -> None:
    """10 MB of "[" (hours for the old Markdown regexes) among real documents: the run finishes, the file is
    refused by the default file cap (8 MiB) before it is downloaded, and the data card and the generation
    summary count it."""
    bucket = "attack-documents"
    s3_server.create_bucket(bucket)
    client = s3_server.client()
    for path in library_rst(pydoc_root(), ["json", "csv", "os.path", "pathlib", "glob"]):
        client.upload_file(str(path), bucket, f"docs/library/{path.name}")
    client.put_object(Bucket=bucket, Key="docs/attack.md", Body=b"[" * (10 << 20))
    spec = documents_spec(bucket, s3_server.endpoint)
    spec["data"]["generate"]["maxChunks"] = 100
    spec["data"]["generate"]["filter"] = {}
    cfg = make_cfg(spec, tmp_path / "work", model_dir)
    with env(s3_server.env()):
        code, msg = run_config(cfg)
    assert code == ExitCode.SUCCEEDED, msg
    assert msg is not None and msg.generation is not None
    assert msg.generation.refused == 1 and msg.generation.documents == 5
    dataset = msg.generation.dataset.split("/", 3)[3]
    card = json.loads(_get(s3_server, bucket, dataset + "datacard.json"))
    assert card["documentsRefused"] == {"overFileLimit": 1}
    assert card["refused"] == [{"key": f"s3://{bucket}/docs/attack.md", "bytes": 10 << 20, "reason": "overFileLimit"}]
    assert card["documentsListed"] == 6 and card["documentsRead"] == 5
