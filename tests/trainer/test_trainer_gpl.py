"""``method: gpl`` and ``training.silverLabels``: the pure parts by tables; then, against SeaweedFS, a
cross-encoder loaded from s3://, gpl end to end from documents, silver labels end to end from pairs, a
SIGTERM in the gpl stage and its resumed retry, and a cross-encoder that is not one refused with the field
named.

The cross-encoder of these tests is built from the packaged all-MiniLM-L6-v2's weights with a fresh, random
classification head (num_labels=1): PLUMBING ONLY. No real cross-encoder is on this machine, so its scores
are noise and the trained models' quality means nothing here; the tests check that the labels flow, are
counted, kept and trained on, and that the runs publish a measured model.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from documents_helpers import library_rst, pydoc_root
from test_trainer_resume import SigtermAt
from trainer_helpers import HUB_ID, env, keys, make_cfg, s3_json, stdlib_pairs, tiny_spec, upload_pairs

from eft_api.contract import ExitCode, Reason
from eft_api.spec import InvalidSpec, parse_spec
from eft_cli.run import run_config
from eft_devtools.local_s3 import LocalS3
from eft_trainer.cross_encoder import config_problem, score_stats
from eft_trainer.methods import for_spec
from eft_trainer.methods.gpl import full_rows, labelled_rows, margins
from eft_trainer.silver_labels import combinations, scored_rows

CE_PREFIX = "models/fresh-head-ce/"


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("pos", "negs", "expected"),
    [
        (3.0, [1.0], [2.0]),
        (3.0, [1.0, 4.0, 3.0], [2.0, -1.0, 0.0]),  # a negative the cross-encoder prefers: a negative margin
        (-2.0, [-5.0, -2.5], [3.0, 0.5]),  # logits may be negative: only the differences count
        (0.5, [], []),
    ],
)
def test_margins_are_the_positive_score_minus_each_negative(
    pos: float, negs: list[float], expected: list[float]
) -> None:
    assert margins(pos, negs) == pytest.approx(expected)


def test_gpl_rows_keep_queries_with_enough_negatives_and_label_each() -> None:
    rows = [
        {"anchor": "q1", "positive": "p1", "negative_1": "n1", "negative_2": "n2", "negative_3": "n3"},
        {"anchor": "q2", "positive": "p2", "negative_1": "n4"},  # too few: dropped
        {"anchor": "q3", "positive": "p3", "negative_2": "n6", "negative_1": "n5"},  # keys out of order
    ]
    kept = full_rows(rows, 2)
    assert [(r["anchor"], r["negatives"]) for r in kept] == [("q1", ["n1", "n2"]), ("q3", ["n5", "n6"])]
    scores = {("q1", "p1"): 5.0, ("q1", "n1"): 1.0, ("q1", "n2"): 6.0, ("q3", "p3"): 0.0, ("q3", "n5"): -1.0}
    scores[("q3", "n6")] = 0.25
    assert [r["label"] for r in labelled_rows(kept, scores)] == [[4.0, -1.0], [1.0, -0.25]]


def _pairs(n: int) -> list[dict[str, Any]]:
    return [{"anchor": f"q{i}", "positive": f"p{i}"} for i in range(n)]


@pytest.mark.parametrize(
    ("rows", "per_pair", "positives", "mined", "sampled"),
    [
        (_pairs(5), 0, 5, 0, 0),
        (_pairs(5), 2, 5, 0, 10),
        (_pairs(3), 5, 3, 0, 6),  # only 2 other positives per anchor
        (_pairs(1), 3, 1, 0, 0),  # no other positive at all
        ([{**r, "negative_1": "p1"} for r in _pairs(3)], 0, 3, 2, 0),  # q1's mined p1 is its own positive
        ([{"anchor": "q", "positive": "p"}, {"anchor": "q", "positive": "p2"}], 1, 2, 0, 0),  # sampled = given
    ],
)
def test_silver_label_combinations(
    rows: list[dict[str, Any]], per_pair: int, positives: int, mined: int, sampled: int
) -> None:
    c = combinations(rows, per_pair, seed=7)
    assert (c.positives, c.mined, c.sampled) == (positives, mined, sampled)
    assert len(c.pairs) == len(set(c.pairs)) == positives + mined + sampled
    assert c.pairs[:positives] == [(r["anchor"], r["positive"]) for r in rows]  # the given pairs come first
    assert all((a, b) not in {(r["anchor"], r["positive"]) for r in rows} for a, b in c.pairs[positives:])
    assert combinations(rows, per_pair, seed=7) == c  # seeded: a retry samples the same combinations


def test_scored_rows_are_scored_pairs_rows() -> None:
    assert scored_rows([("a", "b")], {("a", "b"): 0.75}) == [{"sentence1": "a", "sentence2": "b", "score": 0.75}]


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "LABEL_0"}}, None),
        ({"architectures": ["XLMRobertaForSequenceClassification"], "num_labels": 1}, None),
        ({"architectures": ["BertModel"]}, "BertModel, not a ...ForSequenceClassification"),
        ({}, "no architecture"),
        ({"architectures": ["BertForSequenceClassification"]}, "2 outputs"),  # transformers' default: 2 labels
        (
            {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "no", "1": "yes", "2": "?"}},
            "3 outputs",
        ),
    ],
)
def test_only_a_one_output_sequence_classifier_is_a_cross_encoder(config: dict[str, Any], problem: str | None) -> None:
    found = config_problem(config)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_score_statistics() -> None:
    assert score_stats([]) == {"count": 0}
    s = score_stats([1.0, 2.0, 6.0])
    assert (s["count"], s["mean"], s["min"], s["median"], s["max"]) == (3, 3.0, 1.0, 2.0, 6.0)
    assert s["std"] == pytest.approx(math.sqrt(14 / 3))


def test_gpl_is_chosen_from_the_spec_and_requires_reindexing() -> None:
    method = for_spec(parse_spec(gpl_spec("bkt", "http://127.0.0.1:1")))
    assert (method.name, method.reindex_required) == ("gpl", True)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"format": "triplets"}, "spec.training.method"),
        ({"format": "scored-pairs"}, "spec.training.method"),
        ({"loss": "MultipleNegativesRanking"}, "spec.training.loss"),
        ({"crossEncoder": None}, "spec.training.crossEncoder"),
    ],
)
def test_gpl_that_does_not_fit_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    doc = gpl_spec("bkt", "http://127.0.0.1:1")
    if "format" in change:
        doc["data"]["train"]["format"] = change["format"]
    if "loss" in change:
        doc["training"]["loss"] = change["loss"]
    if "crossEncoder" in change:
        del doc["training"]["crossEncoder"]
    with pytest.raises(InvalidSpec) as err:
        parse_spec(doc)
    assert [p.path for p in err.value.problems] == [field]


# ---------------------------------------------------------------- against SeaweedFS


def gpl_spec(bucket: str, endpoint: str, **training: Any) -> dict[str, Any]:
    return tiny_spec(
        bucket,
        endpoint,
        **{
            "method": "gpl",
            "loss": "MarginMSE",
            "crossEncoder": {"model": f"s3://{bucket}/{CE_PREFIX}", "maxLength": 96},
            "hardNegatives": {"count": 2, "rangeMax": 20},
            **training,
        },
    )


@pytest.fixture(scope="module")
def cross_encoder_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CrossEncoder from the packaged MiniLM's encoder weights and a fresh classification head (num_labels=1),
    saved as a folder: plumbing only (its scores are noise; no real cross-encoder is on this machine)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ce") / "fresh-head-ce"
    CrossEncoder(str(model_dir / HUB_ID), num_labels=1, device="cpu").save(str(folder))
    return folder


@pytest.fixture
def uploaded_cross_encoder(s3_server: LocalS3, s3_bucket: str, cross_encoder_dir: Path) -> str:
    """The test's bucket with 80 stdlib pairs and the fresh-head cross-encoder's folder (the s3:// path of
    spec.training.crossEncoder.model)."""
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(80))
    client = s3_server.client()
    for f in sorted(p for p in cross_encoder_dir.rglob("*") if p.is_file()):
        client.upload_file(str(f), s3_bucket, CE_PREFIX + f.relative_to(cross_encoder_dir).as_posix())
    return s3_bucket


def _run(s3: LocalS3, cfg: Any, **kw: Any) -> tuple[int, Any]:
    """The trainer as a Job runs it, with the S3 server's credentials."""
    with env(s3.env()):
        return run_config(cfg, **kw)


def _report(s3: LocalS3, bucket: str, cfg: Any) -> dict[str, Any]:
    rep: dict[str, Any] = s3_json(s3, bucket, cfg.run.output_prefix.split("/", 3)[3] + "report.json")
    return rep


@pytest.mark.slow
def test_gpl_from_documents_publishes_a_measured_model(
    s3_server: LocalS3, uploaded_cross_encoder: str, tmp_path: Path, model_dir: Path
) -> None:
    """Queries generated from real reST documents (inverseCloze, titles), negatives mined, margins scored by
    the cross-encoder (from s3://), a few MarginMSE steps; the model is measured and published."""
    s3_bucket = uploaded_cross_encoder
    client = s3_server.client()
    for path in library_rst(pydoc_root(), ["textwrap", "glob", "fnmatch"]):
        client.upload_file(str(path), s3_bucket, f"docs/{path.name}")
    spec = gpl_spec(s3_bucket, s3_server.endpoint)
    spec["data"] = {
        "train": {"uri": f"s3://{s3_bucket}/docs/", "format": "documents"},
        "eval": {"heldOutFraction": 0.2, "maxDistractors": 200},
        "generate": {
            "chunking": {"size": 32, "overlap": 4},
            "maxChunks": 120,
            "generator": {"inverseCloze": {}, "titles": {}},
        },
    }
    cfg = make_cfg(spec, tmp_path, model_dir, name="gpl-docs")
    code, msg = _run(s3_server, cfg, max_steps=4)
    assert code == 0, msg
    assert msg is not None and msg.headline is not None and msg.index is not None and msg.index.reindex_required
    rep = _report(s3_server, s3_bucket, cfg)
    labels = rep["training"]["gplLabels"]
    assert rep["config"]["method"] == "gpl" and rep["training"]["steps"] == 4
    assert labels["queriesLabelled"] > 0 and labels["negativesPerQuery"] == 2 and labels["reused"] is False
    assert labels["margins"]["count"] == 2 * labels["queriesLabelled"]
    assert labels["pairsScored"] <= 3 * labels["queriesLabelled"]
    assert rep["generation"]["generators"] and rep["generation"]["pairsGenerated"] > 0
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    assert prefix + "manifest.json" in keys(s3_server, s3_bucket, prefix)


@pytest.mark.slow
def test_silver_labels_from_pairs_publish_a_measured_model(
    s3_server: LocalS3, uploaded_cross_encoder: str, tmp_path: Path, model_dir: Path
) -> None:
    """Unlabelled pairs plus one sampled combination each, scored by the cross-encoder, trained with CoSENT."""
    s3_bucket = uploaded_cross_encoder
    spec = tiny_spec(
        s3_bucket,
        s3_server.endpoint,
        loss="CoSENT",
        silverLabels={"negativesPerPair": 1},
        crossEncoder={"model": f"s3://{s3_bucket}/{CE_PREFIX}"},
    )
    cfg = make_cfg(spec, tmp_path, model_dir, name="silver")
    code, msg = _run(s3_server, cfg, max_steps=3)
    assert code == 0, msg
    rep = _report(s3_server, s3_bucket, cfg)
    silver = rep["data"]["silverLabels"]
    train_rows = rep["data"]["trainRows"]
    assert silver["unlabelledPairs"] == silver["positivePairs"] == train_rows
    assert silver["sampledPairs"] == train_rows  # one other positive per anchor, none of them a given pair
    assert silver["scoredPairs"] == 2 * train_rows
    assert 0 <= silver["scores"]["min"] <= silver["scores"]["max"] <= 1  # the sigmoid of one output
    assert rep["config"]["loss"] == "CoSENT"
    assert rep["training"]["steps"] == 3 and rep["timings"]["label"] > 0


@pytest.mark.slow
def test_sigterm_in_the_gpl_stage_then_the_retry_resumes_on_the_same_labels(
    s3_server: LocalS3, uploaded_cross_encoder: str, tmp_path: Path, model_dir: Path
) -> None:
    """SIGTERM at step 3 of MarginMSE training: a checkpoint and the labels are kept; a fresh pod resumes at
    step 3 on the kept labels (no mining, no scoring) and publishes."""
    s3_bucket = uploaded_cross_encoder
    cfg = make_cfg(
        gpl_spec(s3_bucket, s3_server.endpoint, checkpointSteps=100), tmp_path / "pod1", model_dir, name="gpl-sigterm"
    )
    code, msg = _run(s3_server, cfg, callbacks=[SigtermAt(3)], max_steps=5)
    assert code == 1 and msg is not None and "SIGTERM at step 3" in msg.message
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    kept = prefix + "checkpoints/gpl-labels.json"
    assert kept in keys(s3_server, s3_bucket, prefix)
    first = s3_json(s3_server, s3_bucket, kept)

    cfg2 = cfg.model_copy(update={"settings": cfg.settings.model_copy(update={"work_dir": str(tmp_path / "pod2")})})
    code, msg = _run(s3_server, cfg2, max_steps=5)
    assert code == 0, msg
    rep = _report(s3_server, s3_bucket, cfg)
    assert rep["training"]["resumedFromStep"] == 3 and rep["training"]["steps"] == 5
    labels = rep["training"]["gplLabels"]
    assert labels["reused"] is True and labels["queriesLabelled"] == len(first["rows"])


@pytest.mark.slow
def test_an_embedding_model_as_the_cross_encoder_is_refused_naming_the_field(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    """The packaged MiniLM (an embedding model: BertModel) is not a cross-encoder: bad input, no retry."""
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(40))
    cfg = make_cfg(
        gpl_spec(s3_bucket, s3_server.endpoint, crossEncoder={"model": HUB_ID}), tmp_path, model_dir, name="not-ce"
    )
    code, msg = _run(s3_server, cfg, max_steps=2)
    assert msg is not None and msg.reason == Reason.INVALID_SPEC and code == int(ExitCode.BAD_INPUT)
    assert "spec.training.crossEncoder.model" in msg.message and "BertModel" in msg.message
