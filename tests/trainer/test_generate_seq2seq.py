"""The seq2seq generator's plumbing with a tiny randomly initialised T5 built here (its queries are noise:
no doc2query weights are reachable offline; this tests loading, batching, sampling and the stage only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_helpers import HUB_ID, make_cfg

from eft_api.spec import Seq2SeqGenerator as Seq2SeqSpec
from eft_trainer import generate, generation
from eft_trainer.documents import Chunk, whitespace_tokenizer
from eft_trainer.errors import ModelNotFound
from eft_trainer.generate.seq2seq import Seq2SeqGenerator
from eft_trainer.storage import LocalStore


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(str(model_dir / HUB_ID))  # a WordPiece vocabulary serves the plumbing
    config = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.sep_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("t5") / "org" / "tiny-doc2query"
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _chunks(n: int) -> list[Chunk]:
    return [Chunk(f"d{i}#0", f"d{i}", ("T",), f"The widget {i} has a spring and a frame.", 10) for i in range(n)]


@pytest.mark.slow
def test_batches_sample_n_sequences_per_chunk_seeded(tiny_t5: Path) -> None:
    spec = Seq2SeqSpec.model_validate({"model": "org/tiny-doc2query", "batchSize": 4, "maxQueryTokens": 8})
    generate.CALLS.clear()
    gen = Seq2SeqGenerator(spec, seed=7, locate=lambda _: str(tiny_t5))
    pairs = gen.generate(_chunks(10), 2)
    assert len(pairs) == 20 and generate.CALLS["seq2seq"] == 10
    assert [p.chunk for p in pairs[:4]] == ["d0#0", "d0#0", "d1#0", "d1#0"]
    assert gen.stats()["batches"] == 3 and gen.stats()["device"] in ("cpu", "cuda")
    again = Seq2SeqGenerator(spec, seed=7, locate=lambda _: str(tiny_t5)).generate(_chunks(10), 2)
    assert [p.query for p in again] == [p.query for p in pairs]


def test_a_missing_model_is_model_not_found(tmp_path: Path) -> None:
    spec = Seq2SeqSpec.model_validate({"model": "org/absent"})
    with pytest.raises(ModelNotFound, match=r"seq2seq\.model org/absent"):
        Seq2SeqGenerator(spec, seed=1, locate=lambda _: str(tmp_path / "absent")).generate(_chunks(1), 1)


@pytest.mark.slow
def test_through_the_stage_with_the_model_cache(tiny_t5: Path, tmp_path: Path, model_dir: Path) -> None:
    docs = tmp_path / "root" / "docs" / "notes"
    docs.mkdir(parents=True)
    for i in range(3):
        (docs / f"n{i}.md").write_text(f"# Note {i}\n\nThe pump {i} moves water uphill. It needs power.\n")
    spec = {
        "model": {"base": HUB_ID},
        "data": {
            "train": {"uri": "s3://docs/notes/", "format": "documents"},
            "generate": {
                "generator": {"seq2seq": {"model": "org/tiny-doc2query", "maxQueryTokens": 12}},
                "filter": {"minQueryChars": 0, "nearDuplicateThreshold": 1},
            },
        },
        "output": {"uri": "s3://docs/out/"},
    }
    cfg = make_cfg(spec, tmp_path / "work", tiny_t5.parents[1])  # modelCacheDir maps org/tiny-doc2query to the folder
    got = generation.generate_dataset(cfg, LocalStore(tmp_path / "root"), tmp_path / "work", whitespace_tokenizer())
    assert got.card["generators"] == ["seq2seq"] and got.card["pairsGenerated"] == 3
    assert got.card["generatorStats"]["seq2seq"]["sequences"] == 3
