"""Guards against forgetting (spec.evaluation.guards): reading a guard set, its figures, the verdict, the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eft_api.contract import Headline, Reason, TerminationMessage
from eft_api.report import Report
from eft_api.spec import EvalData, Guard
from eft_trainer.errors import InvalidCorpus
from eft_trainer.guards import GuardSet, figures, load_guard, rejection, summary, termination_figures
from eft_trainer.report import render_markdown


def guard(**kw: Any) -> Guard:
    return Guard.model_validate({"name": "faq", "uri": "s3://bkt/guards/faq.jsonl", **kw})


def pairs_file(tmp_path: Path, rows: list[dict[str, str]], name: str = "faq.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_a_pairs_guard_is_read_with_its_own_columns(tmp_path: Path) -> None:
    rows = [{"q": f"question {i}", "a": f"answer {i}"} for i in range(5)] + [{"q": "question 0", "a": "answer 0"}]
    f = pairs_file(tmp_path, rows)
    gs = load_guard(guard(columns={"anchor": "q", "positive": "a"}), 0, tmp_path, [f], EvalData())
    assert len(gs.irset.queries) == 5 and len(gs.irset.corpus) == 5  # its own positives, no distractors
    assert gs.stats["duplicatesDropped"] == 1 and gs.stats["corpusPositives"] == 5


def test_a_bad_guard_file_names_the_guard_its_uri_and_field(tmp_path: Path) -> None:
    f = pairs_file(tmp_path, [{"anchor": "a", "positive": "b"}, {"anchor": "c", "text": "d"}])
    with pytest.raises(InvalidCorpus) as info:
        load_guard(guard(), 2, tmp_path, [f], EvalData())
    msg = str(info.value)
    assert msg.startswith("guard faq (spec.evaluation.guards[2].uri) has bad rows")
    assert "s3://bkt/guards/faq.jsonl:2: missing column(s) positive" in msg
    assert "see spec.evaluation.guards[2].columns" in msg


def test_a_beir_guard_needs_only_test_qrels(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "text": f"doc {i}"}) + "\n" for i in range(4))
    )
    (tmp_path / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(2))
    )
    (tmp_path / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n")
    g = guard(uri="s3://bkt/guards/beir/", format="beir")
    gs = load_guard(g, 0, tmp_path, [], EvalData(max_distractors=1))
    assert gs.irset.relevant == {"q0": {"d0"}, "q1": {"d1"}} and len(gs.irset.corpus) == 3
    (tmp_path / "qrels/test.tsv").unlink()
    with pytest.raises(
        InvalidCorpus, match=r"guard faq \(spec\.evaluation\.guards\[0\]\.uri\): the beir corpus is incomplete"
    ):
        load_guard(g, 0, tmp_path, [], EvalData())


def gs(name: str = "faq", max_drop: float = 0.0) -> GuardSet:
    from eft_trainer.data import IRSet

    return GuardSet(guard(name=name, maxDrop=max_drop), 0, IRSet({}, {}, {}), {"queries": 4})


@pytest.mark.parametrize(
    ("base", "tuned", "max_drop", "passed"),
    [
        ([1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 0.5, 0.5], 0.0, True),  # unchanged passes a maxDrop of 0
        ([1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 0.5, 0.3], 0.0, False),  # a drop of 0.05 > 0
        ([1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 0.5, 0.3], 0.05, True),  # exactly maxDrop passes
        ([1.0, 1.0, 0.5, 0.5], [1.0, 0.8, 0.5, 0.3], 0.05, False),  # 0.1 > 0.05
        ([0.2, 0.2, 0.2, 0.2], [0.9, 0.9, 0.9, 0.9], 0.0, True),  # a gain never fails
    ],
)
def test_a_drop_larger_than_max_drop_fails(
    base: list[float], tuned: list[float], max_drop: float, passed: bool
) -> None:
    r = figures(gs(max_drop=max_drop), base, tuned, primary_metric="ndcg@10", dimension=128, seed=0)
    assert r["passed"] is passed
    assert r["delta"] == pytest.approx(sum(tuned) / 4 - sum(base) / 4)
    assert r["bootstrap"]["low"] <= r["delta"] <= r["bootstrap"]["high"] and r["bootstrap"]["queries"] == 4
    assert (rejection([r]) == "") is passed


def test_the_rejection_names_each_failing_guard_only() -> None:
    ok = figures(gs("docs", 1.0), [1.0, 0.0], [0.0, 0.0], primary_metric="ndcg@10", dimension=384, seed=0)
    bad = figures(gs("faq", 0.1), [1.0, 1.0], [0.5, 0.5], primary_metric="ndcg@10", dimension=384, seed=0)
    why = rejection([ok, bad])
    assert why == "guard faq dropped ndcg@10 by 0.5000 at 384 dims, more than its maxDrop 0.1"
    assert summary(bad).startswith("faq ndcg@10 1.0000 -> 0.5000 (-0.5000; 95% CI -0.5000 .. -0.5000; maxDrop 0.1)")


def test_eight_guards_fit_in_the_termination_message_and_the_report() -> None:
    results = [
        figures(
            gs(f"guard-{i}-" + "x" * 50, 0.01),
            [0.81234] * 300,
            [0.7734] * 300,
            primary_metric="ndcg@10",
            dimension=384,
            seed=i,
        )
        for i in range(8)
    ]
    message = "ndcg@10 at 384 dims 0.6270 -> 0.7280 (+0.1010); guards: " + "; ".join(summary(r) for r in results)
    msg = TerminationMessage(
        outcome="Failed",
        reason=Reason.PROMOTION_REJECTED,
        message=rejection(results) + f" ({message})",
        run_id="g1-abcde",
        headline=Headline(primary_metric="ndcg@10", dimension=384, base=0.627, finetuned=0.728, gain=0.101),
    )
    text = msg.to_json()
    assert len(text.encode()) <= 4096 and "[truncated]" not in text
    assert all(r["name"] in text for r in results)
    # With the figures as fields (what status.runs[] shows), the message may be shortened; the figures never are.
    full = msg.model_copy(update={"guards": [termination_figures(r) for r in results]}).to_json()
    back = TerminationMessage.parse(full)
    assert len(full.encode()) <= 4096 and back is not None and back.guards is not None
    assert [g.name for g in back.guards] == [r["name"] for r in results]
    assert back.guards[0].delta == round(0.7734 - 0.81234, 4) and not back.guards[0].passed
    from test_trainer_report import report

    md = render_markdown(Report.model_validate(report() | {"guards": results}))
    assert "## Guards" in md and "| guard-0-" in md and "**failed**" in md and "-0.0389" in md


@pytest.fixture(scope="module")
def guarded_bucket(s3_server: Any) -> str:
    """Training pairs, a pairs guard set (its own column names) and a BEIR guard set, none sharing a text."""
    from trainer_helpers import stdlib_pairs, upload_pairs

    bucket = "e2e-guards"
    s3_server.create_bucket(bucket)
    pairs = stdlib_pairs(400)
    upload_pairs(s3_server, bucket, pairs[:200])
    c = s3_server.client()
    docs = "".join(json.dumps({"q": p["question"], "a": p["answer"]}) + "\n" for p in pairs[200:260])
    c.put_object(Bucket=bucket, Key="guards/docs.jsonl", Body=docs.encode())
    held = pairs[260:330]
    corpus = "".join(json.dumps({"_id": f"d{i}", "text": p["answer"]}) + "\n" for i, p in enumerate(held))
    queries = "".join(json.dumps({"_id": f"q{i}", "text": p["question"]}) + "\n" for i, p in enumerate(held))
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(held)))
    c.put_object(Bucket=bucket, Key="guards/beir/corpus.jsonl", Body=corpus.encode())
    c.put_object(Bucket=bucket, Key="guards/beir/queries.jsonl", Body=queries.encode())
    c.put_object(Bucket=bucket, Key="guards/beir/qrels/test.tsv", Body=qrels.encode())
    return bucket


def guarded_spec(bucket: str, endpoint: str, guards: list[dict[str, Any]], **training: Any) -> dict[str, Any]:
    from trainer_helpers import spec_dict

    spec = spec_dict(bucket, endpoint, **training)
    spec["evaluation"] = {
        "kValues": [1, 10],
        "primaryMetric": "ndcg@10",
        "gate": {"minGain": -1, "dimension": 128},
        "guards": guards,
    }
    return spec


DOCS = {"name": "docs", "uri": "s3://e2e-guards/guards/docs.jsonl", "columns": {"anchor": "q", "positive": "a"}}
BEIR = {"name": "beir-faq", "uri": "s3://e2e-guards/guards/beir/", "format": "beir"}


@pytest.mark.slow
def test_a_guard_that_drops_more_than_allowed_rejects_the_model(
    s3_server: Any, guarded_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    """learningRate 0.01 wrecks MiniLM: the strict guard (maxDrop 0) rejects it, the lenient one (1) passes;
    both are measured at the gate's 128 dims and their figures go in report.json, report.md and the message."""
    from trainer_helpers import env, keys, make_cfg

    from eft_api.contract import ExitCode
    from eft_cli.run import run_config

    guards = [{**DOCS, "maxDrop": 1.0}, {**BEIR, "maxDrop": 0.0}]
    spec = guarded_spec(guarded_bucket, s3_server.endpoint, guards, learningRate=0.01)
    cfg = make_cfg(spec, tmp_path, model_dir, name="guarded")
    with env(s3_server.env()):
        code, msg = run_config(cfg)
    assert msg is not None and msg.reason == Reason.PROMOTION_REJECTED and code == ExitCode.PROMOTION_REJECTED, msg
    assert msg.message.startswith("guard beir-faq dropped ndcg@10 by ")
    assert "guard docs" not in msg.message and "docs ndcg@10 " in msg.message and "beir-faq ndcg@10 " in msg.message
    assert msg.guards is not None and [(g.name, g.passed) for g in msg.guards] == [("docs", True), ("beir-faq", False)]
    assert len(msg.to_json().encode()) <= 4096
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    published = keys(s3_server, guarded_bucket, prefix)
    assert prefix + "manifest.json" in published and not any(k.startswith(prefix + "model/") for k in published)
    rep = json.loads(s3_server.client().get_object(Bucket=guarded_bucket, Key=prefix + "report.json")["Body"].read())
    assert rep["promotion"]["rejected"] is True and rep["promotion"]["reasons"][0].startswith("guard beir-faq dropped")
    docs, beir = rep["guards"]
    assert (docs["name"], docs["passed"], beir["name"], beir["passed"]) == ("docs", True, "beir-faq", False)
    for g, queries in ((docs, 60), (beir, 70)):
        assert g["dimension"] == 128 and g["bootstrap"]["queries"] == queries
        assert g["delta"] == pytest.approx(g["finetuned"] - g["base"])
        assert g["bootstrap"]["low"] <= g["delta"] <= g["bootstrap"]["high"]
    assert beir["delta"] < 0
    assert {f["guard"] for f in rep["data"]["files"] if "guard" in f} == {"docs", "beir-faq"}
    md = s3_server.client().get_object(Bucket=guarded_bucket, Key=prefix + "report.md")["Body"].read().decode()
    assert "## Guards" in md and "| beir-faq | 70 |" in md and "**failed**" in md


@pytest.mark.slow
def test_guards_that_hold_let_the_model_through_with_their_figures(
    s3_server: Any, guarded_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    from trainer_helpers import env, make_cfg

    from eft_cli.run import run_config

    spec = guarded_spec(guarded_bucket, s3_server.endpoint, [{**DOCS, "maxDrop": 1.0}])
    cfg = make_cfg(spec, tmp_path, model_dir, name="guarded-ok")
    with env(s3_server.env()):
        code, msg = run_config(cfg, max_steps=2)
    assert code == 0 and msg is not None and msg.reason == Reason.SUCCEEDED, msg
    assert "; guards: docs ndcg@10 " in msg.message and "maxDrop 1)" in msg.message
