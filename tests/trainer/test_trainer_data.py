"""Preflight, cleaning, splitting, leakage and evaluation-set building (pure, by tables)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from eft_api.spec import Columns, DataFormat, EvalData
from eft_trainer import data as D
from eft_trainer.errors import InvalidCorpus


def write(tmp: Path, name: str, content: bytes) -> Path:
    p = tmp / name
    p.write_bytes(content)
    return p


def test_jsonl_tolerates_bom_and_crlf(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "a.jsonl",
        b'\xef\xbb\xbf{"anchor": "q", "positive": "p"}\r\n\r\n{"anchor": "q2", "positive": "p2"}\r\n',
    )
    rows = D.read_files([p], "jsonl", tmp_path)
    assert [r.data["anchor"] for r in rows] == ["q", "q2"]
    assert [r.line for r in rows] == [1, 3]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"anchor": "q", "positive": "p"}\n{"anchor": "q2", \n', "bad.jsonl:2: not valid JSON"),
        (b'{"anchor": "q", "positive": "p"}\n{"anchor": "\xff\xfe", "positive": "p"}\n', "bad.jsonl:2: invalid UTF-8"),
        (b'["a", "b"]\n', "bad.jsonl:1: expected a JSON object"),
        (b'{"anchor": "q\n', "bad.jsonl:1: not valid JSON (Unterminated string starting at column 12)"),
        (b"", "the corpus is empty"),
        (b"\n\n", "the corpus is empty"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path: Path, content: bytes, expected: str) -> None:
    p = write(tmp_path, "bad.jsonl", content)
    with pytest.raises(InvalidCorpus, match=re.escape(expected)):
        D.read_files([p], "jsonl", tmp_path)


def test_huge_line_is_refused(tmp_path: Path) -> None:
    big = json.dumps({"anchor": "q", "positive": "x" * (D.MAX_LINE_BYTES + 10)}).encode() + b"\n"
    p = write(tmp_path, "big.jsonl", b'{"anchor": "a", "positive": "b"}\n' + big)
    with pytest.raises(InvalidCorpus, match=r"big\.jsonl:2: line is"):
        D.read_files([p], "jsonl", tmp_path)


@pytest.mark.parametrize(("name", "file_type"), [("big.jsonl", "jsonl"), ("big.csv", "csv")])
def test_a_10mb_line_is_reported_by_file_line_and_size_and_never_held_whole(
    tmp_path: Path, name: str, file_type: str
) -> None:
    head = b"anchor,positive\n" if file_type == "csv" else b'{"anchor": "a", "positive": "b"}\n'
    p = write(tmp_path, name, head + b"x" * (10 << 20) + b"\n" + head + b"\xff\n")
    with pytest.raises(InvalidCorpus) as err:
        D.read_files([p], file_type, tmp_path)
    assert f"{name}:2: line is 10.5 MB, over the 4 MB limit" in str(err.value)
    assert f"{name}:4: invalid UTF-8" in str(err.value)  # the lines after it keep their numbers
    with p.open("rb") as f:
        sizes = [(len(line), size) for line, size in D.bounded_lines(f)]
    assert sizes[1] == (0, (10 << 20) + 1) and max(n for n, _ in sizes) <= D.MAX_LINE_BYTES + 1


def test_csv_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    c = write(tmp_path, "a.csv", b"question,answer\r\nq1,p1\r\nq2,p2\r\n")
    rows = D.read_files([c], "csv", tmp_path)
    assert [(r.data["question"], r.line) for r in rows] == [("q1", 2), ("q2", 3)]
    pq.write_table(pa.table({"anchor": ["a", "b"], "positive": ["c", "d"]}), tmp_path / "x.parquet")
    rows = D.read_files([tmp_path / "x.parquet"], "parquet", tmp_path)
    assert [r.data["positive"] for r in rows] == ["c", "d"]
    bad = write(tmp_path, "b.csv", b"question,answer\nq1,\xff\n")
    with pytest.raises(InvalidCorpus, match=r"b\.csv:2: invalid UTF-8"):
        D.read_files([bad], "csv", tmp_path)


def rows(*records: dict[str, object]) -> list[D.Row]:
    return [D.Row(dict(r), "f.jsonl", i + 1) for i, r in enumerate(records)]


@pytest.mark.parametrize(
    ("records", "fmt", "cols", "expected"),
    [
        ([{"q": "a"}], DataFormat.PAIRS, Columns(anchor="q", positive="p"), "f.jsonl:1: missing column(s) p"),
        ([{"q": "a", "p": "  "}], DataFormat.PAIRS, Columns(anchor="q", positive="p"), "f.jsonl:1: column p is empty"),
        ([{"q": "a", "p": 3}], DataFormat.PAIRS, Columns(anchor="q", positive="p"), "column p must be text"),
        (
            [{"text1": "a", "text2": "b", "score": "high"}],
            DataFormat.SCORED_PAIRS,
            Columns(),
            "column score must be a number",
        ),
        ([{"text": "a", "label": ""}], DataFormat.LABELED_TEXTS, Columns(), "(label) is empty"),
    ],
)
def test_row_checks(records: list[dict[str, object]], fmt: DataFormat, cols: Columns, expected: str) -> None:
    with pytest.raises(InvalidCorpus) as info:
        D.map_and_check(rows(*records), fmt, cols)
    assert expected in str(info.value)


def test_mapping_and_dedup() -> None:
    recs = D.map_and_check(
        rows(
            {"question": "a", "answer": "x"},
            {"question": "a", "answer": "x"},
            {"question": "b", "answer": "b "},
            {"question": "c", "answer": "y"},
        ),
        DataFormat.PAIRS,
        Columns(anchor="question", positive="answer"),
    )
    kept, stats = D.drop_duplicates(recs, DataFormat.PAIRS)
    assert kept == [{"anchor": "a", "positive": "x"}, {"anchor": "c", "positive": "y"}]
    assert (stats.rows_read, stats.duplicates_dropped, stats.same_text_dropped, stats.rows_kept) == (4, 1, 1, 2)


def test_triplet_columns_map_negatives() -> None:
    recs = D.map_and_check(
        rows({"q": "a", "r": "b", "n1": "c", "n2": "d"}),
        DataFormat.TRIPLETS,
        Columns(anchor="q", positive="r", negatives=["n1", "n2"]),
    )
    assert recs == [{"anchor": "a", "positive": "b", "negative_1": "c", "negative_2": "d"}]


def test_split_keeps_queries_on_one_side_and_is_deterministic() -> None:
    recs = [{"anchor": f"q{i % 40}", "positive": f"p{i}"} for i in range(100)]
    train, ev = D.split_held_out(recs, DataFormat.PAIRS, 0.1, 42)
    assert len({r["anchor"] for r in ev}) == 4
    assert not {r["anchor"] for r in ev} & {r["anchor"] for r in train}
    assert len(train) + len(ev) == 100
    assert D.split_held_out(recs, DataFormat.PAIRS, 0.1, 42) == (train, ev)
    with pytest.raises(InvalidCorpus):
        D.split_held_out([{"anchor": "a", "positive": "b"}], DataFormat.PAIRS, 0.1, 1)


def test_leakage_removed_and_counted() -> None:
    train = [{"anchor": "a", "positive": "1"}, {"anchor": "b", "positive": "2"}, {"anchor": " a ", "positive": "3"}]
    ev = [{"anchor": "a", "positive": "9"}]
    kept, leaked = D.remove_leakage(train, ev, DataFormat.PAIRS)
    assert kept == [{"anchor": "b", "positive": "2"}] and leaked == 2


def test_ir_from_pairs_uses_training_positives_as_capped_distractors() -> None:
    ev = [{"anchor": "q1", "positive": "p1"}, {"anchor": "q1", "positive": "p1b"}, {"anchor": "q2", "positive": "p2"}]
    train = [{"anchor": f"t{i}", "positive": f"d{i}"} for i in range(10)] + [{"anchor": "t", "positive": "p2"}]
    ir = D.ir_from_pairs(ev, train, EvalData(max_distractors=4))
    assert list(ir.queries.values()) == ["q1", "q2"]
    texts = {v: k for k, v in ir.corpus.items()}
    assert ir.relevant[next(k for k, v in ir.queries.items() if v == "q1")] == {texts["p1"], texts["p1b"]}
    assert len(ir.corpus) == 3 + 4 or len(ir.corpus) == 3 + 3  # p2 may be among the sampled distractors
    assert all(t in texts for t in ("p1", "p1b", "p2"))


def test_ir_from_triplets_adds_negatives() -> None:
    ev = [{"anchor": "q", "positive": "p", "negative_1": "n"}]
    ir = D.ir_from_pairs(ev, [], EvalData(max_distractors=0), negatives=True)
    assert sorted(ir.corpus.values()) == ["n", "p"]


def test_ir_from_scored_thresholds() -> None:
    ev = [
        {"sentence1": "a", "sentence2": "x", "score": 0.9},
        {"sentence1": "b", "sentence2": "y", "score": 0.2},
    ]
    ir = D.ir_from_scored(ev, [], EvalData(max_distractors=0))
    assert list(ir.queries.values()) == ["a"] and len(ir.corpus) == 2
    ev5 = [{"sentence1": "a", "sentence2": "x", "score": 4.0}, {"sentence1": "b", "sentence2": "y", "score": 1.0}]
    assert list(D.ir_from_scored(ev5, [], EvalData()).queries.values()) == ["a"]


def test_ir_from_labeled_excludes_self() -> None:
    ev = [{"text": "a", "label": 1}, {"text": "b", "label": 1}, {"text": "c", "label": 2}]
    ir = D.ir_from_labeled(ev)
    assert len(ir.queries) == 2  # "c" has no other text with its label
    assert ir.relevant["q0000000"] == {"d00000001"} and ir.exclude["q0000000"] == {"d00000000"}


def test_beir(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": f"d{i}", "title": "T", "text": f"doc {i}"}) for i in range(6))
    )
    (tmp_path / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) for i in range(4))
    )
    (tmp_path / "qrels/train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\nq2\td2\t0\n")
    (tmp_path / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td3\t1\n")
    b = D.read_beir(tmp_path)
    assert b.corpus["d0"] == "T. doc 0"
    pairs = D.beir_pairs(b, b.train_qrels)
    assert pairs == [{"anchor": "query 0", "positive": "T. doc 0"}, {"anchor": "query 1", "positive": "T. doc 1"}]
    assert b.test_qrels is not None
    ir = D.ir_from_beir(b.corpus, b.queries, b.test_qrels, EvalData(max_distractors=2))
    assert ir.relevant == {"q3": {"d3"}} and len(ir.corpus) == 3
    (tmp_path / "qrels/train.tsv").unlink()
    with pytest.raises(InvalidCorpus, match=r"qrels/train\.tsv"):
        D.read_beir(tmp_path)


def test_beir_qrels_with_invalid_utf8_name_file_and_line(tmp_path: Path) -> None:
    """A bad byte in qrels is bad input (InvalidCorpus, exit 2, not retried), not a crash."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d0", "text": "doc"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "query"}) + "\n")
    (tmp_path / "qrels/train.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq0\td0\t1\nq\xff1\td0\t1\n")
    with pytest.raises(InvalidCorpus, match=r"qrels/train\.tsv:3: invalid UTF-8 at byte 1"):
        D.read_beir(tmp_path)


def _local_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train: str, held: str) -> tuple[Any, Any]:
    """A run config reading s3://bkt/corpus/pairs.jsonl and s3://bkt/eval/held.jsonl from a local data root."""
    from trainer_helpers import make_cfg, spec_dict

    from eft_trainer.stages.source import fetch_data
    from eft_trainer.storage import LocalStore

    root = tmp_path / "root"
    (root / "bkt" / "corpus").mkdir(parents=True, exist_ok=True)
    (root / "bkt" / "eval").mkdir(parents=True, exist_ok=True)
    (root / "bkt" / "corpus" / "pairs.jsonl").write_text(train)
    (root / "bkt" / "eval" / "held.jsonl").write_text(held)
    spec = spec_dict("bkt", "http://127.0.0.1:1")
    spec["data"]["eval"]["uri"] = "s3://bkt/eval/held.jsonl"
    cfg = make_cfg(spec, tmp_path / "work", tmp_path / "models")
    return cfg, fetch_data(cfg, LocalStore(root), tmp_path / "work")


def _lines(*rows: dict[str, str]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_evaluation_data_errors_name_its_uri_and_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eft_trainer.stages.check import load_and_check

    train = _lines(*({"question": f"q{i}", "answer": f"a{i}"} for i in range(5)))
    held = _lines({"question": "e0", "answer": "x"}, {"question": "e1", "reply": "y"})
    cfg, fetched = _local_run(tmp_path, monkeypatch, train, held)
    with pytest.raises(InvalidCorpus) as info:
        load_and_check(cfg, fetched)
    msg = str(info.value)
    assert msg.startswith("the evaluation data (spec.data.eval.uri) has bad rows")
    assert "s3://bkt/eval/held.jsonl:2: missing column(s) answer" in msg
    assert "see spec.data.train.columns (the evaluation data is read with the training data's columns)" in msg

    bad_train = train + '{"question": "q9", \n'
    cfg, fetched = _local_run(tmp_path, monkeypatch, bad_train, held)
    with pytest.raises(
        InvalidCorpus, match=re.escape("the corpus is malformed: 1 problem(s): s3://bkt/corpus/pairs.jsonl:6")
    ):
        load_and_check(cfg, fetched)


def test_evaluation_duplicates_and_corpus_composition_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eft_trainer.stages.check import build_evaluation, load_and_check

    train = _lines(
        *({"question": f"q{i}", "answer": f"a{i}"} for i in range(6)),
        {"question": "e0", "answer": "another answer to e0"},  # leaked: e0 is an evaluation query
    )
    held = _lines(
        {"question": "e0", "answer": "x0"},
        {"question": "e0", "answer": "x0"},  # duplicate
        {"question": "e1", "answer": "e1"},  # positive equals the anchor
        {"question": "e2", "answer": "x2"},
    )
    cfg, fetched = _local_run(tmp_path, monkeypatch, train, held)
    prep = load_and_check(cfg, fetched)
    assert {k: v for k, v in prep.stats.items() if k.startswith("eval")} == {
        "evalRowsRead": 4,
        "evalDuplicatesDropped": 1,
        "evalSameTextDropped": 1,
        "evalRowsKept": 2,
    }
    rows, ir, stats = build_evaluation(cfg, prep)
    assert stats["leakedRowsRemoved"] == 1 and len(rows) == 6
    assert "another answer to e0" not in ir.corpus.values()
    assert stats["leakedPositivesLeftOut"] == 1
    assert stats["evalCorpusPositives"] == 2 and stats["evalCorpusDistractors"] == 6
    assert stats["evalCorpusNegatives"] == 0 and stats["evalDistractorsAvailable"] == 6
    assert stats["evalCorpus"] == 2 + 6
