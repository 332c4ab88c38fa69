"""The round-trip and easiness filters of generated pairs: the pure part (embeddings in, kept pairs and drops by
reason out) by tables, the model part with the packaged MiniLM on real chunks of the Python docs, and the
dataset hash that covers both settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from documents_helpers import library_rst, pydoc_root
from trainer_helpers import HUB_ID, make_cfg

from eft_api.spec import GenerateFilter
from eft_trainer.documents import Chunk, Tokenizer, chunk_documents, read_document, sentences
from eft_trainer.generate import Pair
from eft_trainer.generate.filters import apply_embedded, round_trip_ranks, uses_model
from eft_trainer.generation import dataset_hash, filter_embedded, model_embedder


def unit(*angles_deg: float) -> np.ndarray:
    """Unit vectors in the plane at the given angles (cosine between two = cos of the angle between them)."""
    a = np.radians(np.array(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


# Three chunks at 0, 90 and 180 degrees. Each case: the pairs' query angles, their positives' angles, the row
# of each pair's own chunk, the filter, then the indices kept and the drops.
POOL = unit(0, 90, 180)
CASES: dict[str, tuple[list[float], list[float], list[int], dict[str, Any], list[int], dict[str, int]]] = {
    "off: everything kept": ([10, 80, 170], [0, 90, 180], [0, 1, 2], {}, [0, 1, 2], {"roundTrip": 0, "tooEasy": 0}),
    "round trip top 1: the query nearer another chunk goes": (
        [10, 60, 100],
        [0, 0, 90],
        [0, 0, 1],
        {"roundTrip": {"enabled": True}},
        [0, 2],
        {"roundTrip": 1, "tooEasy": 0},
    ),
    "round trip top 2 keeps the runner-up": (
        [10, 60, 100],
        [0, 0, 90],
        [0, 0, 1],
        {"roundTrip": {"enabled": True, "topK": 2}},
        [0, 1, 2],
        {"roundTrip": 0, "tooEasy": 0},
    ),
    "round trip: the own chunk's row stands for the positive (inverse cloze)": (
        [10],
        [40],  # the positive is not its chunk's text; chunk 0 (0 deg, nearer the query) does not compete
        [0],
        {"roundTrip": {"enabled": True}},
        [0],
        {"roundTrip": 0, "tooEasy": 0},
    ),
    "round trip: a tie with a distractor is not above the positive": (
        [45],
        [0],  # the same vector as chunk 0, a distractor here
        [1],
        {"roundTrip": {"enabled": True}},
        [0],
        {"roundTrip": 0, "tooEasy": 0},
    ),
    "easiness: the most similar fraction goes (floor)": (
        [0, 30, 60, 5, 89],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
        {"easiness": {"dropFraction": 0.5}},
        [1, 2, 4],
        {"roundTrip": 0, "tooEasy": 2},
    ),
    "easiness: ties, the earlier pair goes first": (
        [20, 20, 20],
        [0, 0, 0],
        [0, 0, 0],
        {"easiness": {"dropFraction": 0.34}},
        [1, 2],
        {"roundTrip": 0, "tooEasy": 1},
    ),
    "easiness: under one pair drops nothing": (
        [0, 30],
        [0, 0],
        [0, 0],
        {"easiness": {"dropFraction": 0.3}},
        [0, 1],
        {"roundTrip": 0, "tooEasy": 0},
    ),
    "both: easiness counts what round trip left": (
        [0, 10, 60, 70, 20],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
        {"roundTrip": {"enabled": True}, "easiness": {"dropFraction": 0.5}},
        [1, 4],
        {"roundTrip": 2, "tooEasy": 1},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_embedded_filters_keep_and_count(case: str) -> None:
    q, pos, own, spec, kept_expected, dropped_expected = CASES[case]
    f = GenerateFilter.model_validate(spec)
    kept, dropped, figures = apply_embedded(unit(*q), unit(*pos), POOL, np.array(own), f)
    assert kept == kept_expected and dict(dropped) == dropped_expected
    assert uses_model(f) == (case != "off: everything kept")
    if dropped["tooEasy"]:  # the threshold reported: every pair kept is below it
        sims = (unit(*q) * unit(*pos)).sum(axis=1)
        assert figures["tooEasyAbove"] >= max(sims[kept]) - 1e-6
    else:
        assert "tooEasyAbove" not in figures


def test_round_trip_ranks_do_not_depend_on_the_batch() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(300, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    pool, queries = vecs[:100], vecs[100:]
    own = rng.integers(-1, 100, size=200)
    positives = pool[np.maximum(own, 0)]
    one = round_trip_ranks(queries, positives, pool, own, batch=7)
    assert (one == round_trip_ranks(queries, positives, pool, own)).all()
    # by hand for a few rows
    for i in (0, 5, 199):
        s = pool @ queries[i]
        if own[i] >= 0:
            s[own[i]] = -np.inf
        assert one[i] == int((s > queries[i] @ positives[i]).sum())


# ---------------------------------------------------------------- with the base model


@pytest.fixture(scope="module")
def minilm(model_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir / HUB_ID))


@pytest.fixture(scope="module")
def json_chunks(minilm: Any) -> list[Chunk]:
    docs = [d for p in library_rst(pydoc_root(), ["json", "csv"]) for d in read_document(p, p.name)]
    return list(chunk_documents(docs, 128, 0, Tokenizer.of(minilm.tokenizer)))


@pytest.mark.slow
def test_base_model_round_trip_keeps_a_query_from_its_chunk_and_drops_one_about_something_else(
    minilm: Any, json_chunks: list[Chunk]
) -> None:
    chunk = next(c for c in json_chunks if "unix_dialect class defines" in c.text)
    copied = next(s for s in sentences(chunk.text) if "unix_dialect class defines" in s)
    assert sum(copied in c.text for c in json_chunks) == 1  # a sentence of this chunk only
    pairs = [
        Pair(copied, chunk.text, chunk.id, chunk.doc, "g"),
        Pair("How do I bake sourdough bread at home?", chunk.text, chunk.id, chunk.doc, "g"),
    ]
    spec = GenerateFilter.model_validate({"roundTrip": {"enabled": True}})
    kept, dropped, figures = filter_embedded(pairs, json_chunks, spec, model_embedder(minilm, 32))
    assert [p.query for p in kept] == [copied]
    assert dict(dropped) == {"roundTrip": 1, "tooEasy": 0}
    assert figures["pool"] == len(json_chunks) > 50


@pytest.mark.slow
def test_base_model_easiness_drops_the_copied_query_first(minilm: Any, json_chunks: list[Chunk]) -> None:
    c = next(c for c in json_chunks if "incoming non-ASCII" in c.text)
    pairs = [
        Pair("characters escaped in the output", c.text, c.id, c.doc, "g"),
        Pair(c.text[:300], c.text, c.id, c.doc, "g"),  # the chunk itself: the easiest pair there is
        Pair("python serialisation options", c.text, c.id, c.doc, "g"),
    ]
    spec = GenerateFilter.model_validate({"easiness": {"dropFraction": 0.34}})
    kept, dropped, figures = filter_embedded(pairs, json_chunks, spec, model_embedder(minilm, 32))
    assert [p.query for p in kept] == [pairs[0].query, pairs[2].query]
    assert dropped["tooEasy"] == 1 and figures["tooEasyAbove"] > 0.8


# ---------------------------------------------------------------- the dataset hash


def _spec(filter_: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {"base": HUB_ID},
        "data": {
            "train": {"uri": "s3://bkt/docs/", "format": "documents"},
            "generate": {"generator": {"inverseCloze": {}}, "filter": filter_},
        },
        "output": {"uri": "s3://bkt/out/"},
    }


@pytest.mark.slow
def test_dataset_hash_covers_round_trip_and_easiness(tmp_path: Path, model_dir: Path) -> None:
    listing = [("docs/a.rst", 10, "etag-a")]

    def h(filter_: dict[str, Any]) -> str:
        return dataset_hash(make_cfg(_spec(filter_), tmp_path, model_dir), listing, None)

    off = h({})
    # Off (whatever topK says) is the hash of a spec without the filters: datasets made before them are reused.
    assert off == h({"roundTrip": {"enabled": False, "topK": 5}}) == h({"easiness": {"dropFraction": 0}})
    on = {
        h({"roundTrip": {"enabled": True}}),
        h({"roundTrip": {"enabled": True, "topK": 5}}),
        h({"easiness": {"dropFraction": 0.1}}),
        h({"easiness": {"dropFraction": 0.2}}),
        h({"roundTrip": {"enabled": True}, "easiness": {"dropFraction": 0.1}}),
    }
    assert len(on) == 5 and off not in on
