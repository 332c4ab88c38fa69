"""training.pretrain (TSDAE): sentences and noise (pure, by tables), then the stage end to end against SeaweedFS."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import env, keys, make_cfg, s3_json, stdlib_pairs, tiny_spec, upload_pairs
from transformers import TrainerCallback

from eft_api.spec import DataFormat
from eft_cli.run import run_config
from eft_devtools.local_s3 import LocalS3
from eft_trainer.data import Row
from eft_trainer.errors import InvalidCorpus
from eft_trainer.pretrain import (
    column_texts,
    delete_words,
    noise_batch,
    select_sentences,
    training_texts,
)

SELECTS: list[tuple[str, list[str], int, list[str], int]] = [
    ("short-dropped", ["Too short. This one is long enough."], 10, ["This one is long enough."], 1),
    ("distinct", ["Same words here. Same words here.", "Same words here."], 10, ["Same words here."], 1),
    ("order-kept", ["Third comes first here. Then the second one."], 10,
     ["Third comes first here.", "Then the second one."], 2),
    ("none", ["no", "two words"], 10, [], 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("texts", "cap", "expected", "available"), [c[1:] for c in SELECTS], ids=[c[0] for c in SELECTS]
)
def test_select_sentences(texts: list[str], cap: int, expected: list[str], available: int) -> None:
    assert select_sentences(texts, cap, seed=1) == (expected, available)


def test_select_sentences_caps_with_a_seeded_sample_in_corpus_order() -> None:
    texts = [f"Sentence number {i} is here." for i in range(100)]
    first, available = select_sentences(texts, 10, seed=7)
    assert available == 100 and len(first) == 10
    assert select_sentences(texts, 10, seed=7)[0] == first  # the same seed, the same sample
    assert select_sentences(texts, 10, seed=8)[0] != first
    assert first == sorted(first, key=texts.index)


NOISE = [
    ("no-deletion", "a b c d e", 0.0),
    ("default", "the quick brown fox jumps over the lazy dog again and again", 0.6),
    ("heavy", "one two three", 0.9),
    ("one-word", "word", 0.9),
]


@pytest.mark.parametrize(("text", "ratio"), [c[1:] for c in NOISE], ids=[c[0] for c in NOISE])
def test_delete_words_keeps_order_and_never_empties(text: str, ratio: float) -> None:
    words = text.split()
    for seed in range(50):
        out = delete_words(text, ratio, random.Random(seed)).split()
        assert out, "never empty"
        it = iter(words)
        assert all(w in it for w in out), "a subsequence of the words, in order"
        if ratio == 0:
            assert out == words


def test_deletion_ratio_is_respected_on_average() -> None:
    text = " ".join(f"w{i}" for i in range(1000))
    for ratio in (0.1, 0.6, 0.9):
        kept = len(delete_words(text, ratio, random.Random(3)).split())
        assert abs(kept / 1000 - (1 - ratio)) < 0.05, (ratio, kept)


def test_noise_is_seeded_per_row_and_the_damaged_column_comes_first() -> None:
    batch = {"text": ["alpha beta gamma delta epsilon", "one two three four five six"]}
    a = noise_batch(batch, [0, 1], ratio=0.6, seed=42)
    assert list(a) == ["noisy", "text"] and a["text"] == batch["text"]
    assert noise_batch(batch, [0, 1], ratio=0.6, seed=42) == a
    # A row's noise depends on its index, not on the batch it is in (a resumed run sees the same noise).
    assert noise_batch({"text": batch["text"][1:]}, [1], ratio=0.6, seed=42)["noisy"] == a["noisy"][1:]


TEXTS = [
    ("pairs", DataFormat.PAIRS, [{"anchor": "q", "positive": "p", "negative_1": "n"}, {"anchor": "q", "positive": "x"}],
     ["q", "p", "n", "x"]),
    ("documents", DataFormat.DOCUMENTS, [{"anchor": "query", "positive": "chunk"}], ["chunk"]),
    ("scored", DataFormat.SCORED_PAIRS, [{"sentence1": "a", "sentence2": "b", "score": 0.5}], ["a", "b"]),
    ("labeled", DataFormat.LABELED_TEXTS, [{"text": "t", "label": "l"}], ["t"]),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "rows", "expected"), [c[1:] for c in TEXTS], ids=[c[0] for c in TEXTS])
def test_training_texts(fmt: DataFormat, rows: list[dict[str, Any]], expected: list[str]) -> None:
    assert training_texts(rows, fmt) == expected


def test_a_missing_text_column_names_file_and_line() -> None:
    rows = [Row({"text": "fine"}, "s3://b/s.jsonl", 1), Row({"body": "x"}, "s3://b/s.jsonl", 2)]
    assert column_texts(rows[:1], "text", "the data") == ["fine"]
    with pytest.raises(InvalidCorpus, match=r"s3://b/s.jsonl line 2 has no column 'text'.*pretrain.data.columns.text"):
        column_texts(rows, "text", "the data")


# ---------------------------------------------------------------- end to end (SeaweedFS, the packaged MiniLM)


class SigtermAt(TrainerCallback):  # type: ignore[misc]
    """The kubelet's SIGTERM, mid-step, at ``step`` of training stage ``stage`` (1: pre-training, 2: the method)."""

    def __init__(self, stage: int, step: int) -> None:
        self.stage, self.step, self.seen = stage, step, 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.seen += 1

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.seen == self.stage and state.global_step == self.step - 1:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)


def _pod(cfg: Any, tmp_path: Path, name: str) -> Any:
    return cfg.model_copy(update={"settings": cfg.settings.model_copy(update={"work_dir": str(tmp_path / name)})})


@pytest.mark.slow
def test_tsdae_then_full_publishes_a_measured_adapted_model(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    upload_pairs(s3_server, s3_bucket, stdlib_pairs(130))
    # Sentences of their own (column body): the answers' docstrings, as one text per module.
    bodies = [{"body": p["answer"]} for p in stdlib_pairs(130)]
    upload_pairs(s3_server, s3_bucket, bodies, key="raw/sentences.jsonl")  # type: ignore[arg-type]
    pre = {"maxSentences": 24, "batchSize": 8, "data": {"uri": f"s3://{s3_bucket}/raw/", "columns": {"text": "body"}}}
    cfg = make_cfg(tiny_spec(s3_bucket, s3_server.endpoint, pretrain=pre), tmp_path / "pod", model_dir, name="tsdae")
    with env(s3_server.env()):
        code, msg = run_config(cfg, max_steps=6)
    assert code == 0, msg
    assert msg is not None and msg.index is not None and msg.index.reindex_required
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    rep = s3_json(s3_server, s3_bucket, prefix + "report.json")
    section = rep["pretrain"]
    assert section["method"] == "tsdae" and section["source"] == f"s3://{s3_bucket}/raw/"
    assert section["sentences"] == 24 and section["sentencesAvailable"] > 24
    # max_steps (a test's step limit) bounds both stages: 6 steps are 2 passes over the 24 sentences.
    assert section["steps"] == 6 and section["finalLoss"] > 0 and not section["reused"]
    assert rep["training"]["steps"] == 6  # the method trained after it
    assert "pretrain" in rep["timings"] and rep["index"]["reindexRequired"] is True
    assert any(f.get("stage") == "pretrain" for f in rep["data"]["files"])
    assert s3_json(s3_server, s3_bucket, prefix + "manifest.json")["index"]["reindexRequired"] is True
    # The base model was measured as it is: the adapted model's weights differ from it.
    done = keys(s3_server, s3_bucket, prefix + "checkpoints/pretrain/")
    assert prefix + "checkpoints/pretrain/done.json" in done
    adapted = tmp_path / "pod" / cfg.run.run_id / "pretrain" / "adapted"
    base = SentenceTransformer(str(model_dir / "sentence-transformers/all-MiniLM-L6-v2"))
    probe = "Return the base name of pathname path."
    assert not np.allclose(SentenceTransformer(str(adapted)).encode(probe), base.encode(probe), atol=1e-4)
    body = s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "report.md")["Body"].read().decode()
    assert "## Pre-training" in body


@pytest.mark.slow
def test_sigterm_resumes_pretraining_and_a_later_stop_does_not_pretrain_again(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    upload_pairs(s3_server, s3_bucket, stdlib_pairs(130))
    spec = tiny_spec(s3_bucket, s3_server.endpoint, pretrain={"maxSentences": 40, "batchSize": 4})
    cfg = make_cfg(spec, tmp_path / "pod1", model_dir, name="tsdae-resume")
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    pre = prefix + "checkpoints/pretrain/"
    # Pod 1: SIGTERM at step 3 of pre-training: a checkpoint with the decoder's own weights is mirrored.
    with env(s3_server.env()):
        code, msg = run_config(cfg, callbacks=[SigtermAt(1, 3)], max_steps=6)
    assert code == 1 and msg is not None and "SIGTERM at step 3" in msg.message
    assert s3_json(s3_server, s3_bucket, pre + "latest.json") == {"checkpoint": "checkpoint-3"}
    assert pre + "checkpoint-3/tsdae-decoder.safetensors" in keys(s3_server, s3_bucket, pre)
    assert pre + "done.json" not in keys(s3_server, s3_bucket, pre)
    # Pod 2: resumes pre-training at step 3, finishes it, then SIGTERM at step 2 of the main stage.
    with env(s3_server.env()):
        code, msg = run_config(_pod(cfg, tmp_path, "pod2"), callbacks=[SigtermAt(2, 2)], max_steps=6)
    assert code == 1 and msg is not None and "SIGTERM at step 2" in msg.message
    done = s3_json(s3_server, s3_bucket, pre + "done.json")["section"]
    assert done["resumedFromStep"] == 3 and done["steps"] == 6
    assert s3_json(s3_server, s3_bucket, prefix + "checkpoints/latest.json") == {"checkpoint": "checkpoint-2"}
    # Pod 3: loads the adapted model (no pre-training again) and resumes the method at step 2.
    with env(s3_server.env()):
        code, msg = run_config(_pod(cfg, tmp_path, "pod3"), callbacks=[SigtermAt(1, 1)], max_steps=6)
    assert code == 0, msg
    rep = s3_json(s3_server, s3_bucket, prefix + "report.json")
    assert rep["pretrain"]["reused"] is True and rep["pretrain"]["steps"] == 6
    assert rep["training"]["resumedFromStep"] == 2 and rep["training"]["steps"] == 6
    assert keys(s3_server, s3_bucket, prefix).count(prefix + "manifest.json") == 1
