"""The llm generator with the real `openai` client against a stand-in OpenAI-compatible server on loopback.

The stand-in (llm_standin.py) is not an LLM: no weights are reachable here. It checks each request's shape
and answers deterministically, or misbehaves on demand (429 with Retry-After, 500, timeouts, malformed
JSON, empty answers, a refused schema, an unknown model, a wrong key).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_standin import KEY, MODEL, StandIn, questions_for

from eft_api.contract import LLM_API_KEY_ENV, LLM_PROMPT_ENV, RunConfig
from eft_api.spec import LLMGenerator as LLMSpec
from eft_trainer.documents import Chunk
from eft_trainer.errors import GenerationFailed, GeneratorMisconfigured
from eft_trainer.generate import llm as llm_module
from eft_trainer.generate.llm import LLMGenerator, parse_questions


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    s = StandIn().start()
    yield s
    s.stop()


@pytest.fixture
def standin(server: StandIn, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    server.reset()
    monkeypatch.setenv(LLM_API_KEY_ENV, KEY)
    monkeypatch.delenv(LLM_PROMPT_ENV, raising=False)
    return server


def spec(s: StandIn, **kw: object) -> LLMSpec:
    return LLMSpec.model_validate({"endpoint": s.url, "model": MODEL, "temperature": 0.2, **kw})


def chunks(n: int, marker: str = "", every: int = 0) -> list[Chunk]:
    out = []
    for i in range(n):
        mark = f" {marker}" if marker and (every == 0 or i % every == 0) else ""
        text = f"Chunk {i}: the configuration loader reads settings{i} from environment variables.{mark}"
        out.append(Chunk(f"doc{i}#0", f"doc{i}", ("Guide", f"Part {i}"), text, 20))
    return out


def test_requests_have_the_openai_shape_and_answers_are_used(
    standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gen = LLMGenerator(spec(standin), seed=3)
    cs = chunks(10)
    pairs = gen.generate(cs, 2)
    assert standin.problems == []
    assert len(standin.requests) == 10
    req = standin.requests[0]
    assert req["model"] == MODEL and req["temperature"] == 0.2 and req["seed"] == 3
    assert req["response_format"]["type"] == "json_schema"
    assert (
        "write 2 different questions" in req["messages"][0]["content"]
        and "Guide > Part" in req["messages"][0]["content"]
    )
    assert [p.query for p in pairs if p.chunk == "doc4#0"] == questions_for(cs[4].text, 2)
    assert all(p.positive == next(c.text for c in cs if c.id == p.chunk) for p in pairs)
    st = gen.stats()
    assert st["requests"] == 10 and st["answers_json"] == 10 and st["tokensIn"] > 0 and st["tokensOut"] > 0
    assert KEY not in caplog.text and KEY not in str(st)


def test_prompt_from_the_config_map(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        LLM_PROMPT_ENV, "Schreibe {n} Fragen zu diesem Text, write {n} different ones. Text (aus: {path}):\n{chunk}"
    )
    LLMGenerator(spec(standin), seed=1).generate(chunks(1), 3)
    assert standin.requests[0]["messages"][0]["content"].startswith("Schreibe 3 Fragen")


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the generator waits between tries (recorded, not slept: no test reads the wall clock)."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float, *args: object) -> None:
        asked.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(llm_module.asyncio, "sleep", record)
    return asked


@pytest.mark.parametrize(
    ("marker", "counter", "min_wait"),
    [("RATE_LIMITED", "error429", 1.0), ("SERVER_ERROR", "error500", 0.0), ("SLOW_ONCE", "errorTimeout", 0.0)],
)
def test_transient_errors_are_retried_and_counted(
    standin: StandIn, waits: list[float], marker: str, counter: str, min_wait: float
) -> None:
    """Retry-After: 1 is honoured (the waits before the retries); a timeout is the client's, counted."""
    gen = LLMGenerator(spec(standin, timeoutSeconds=1), seed=1)
    pairs = gen.generate(chunks(4, marker, every=2), 1)
    st = gen.stats()
    assert len(pairs) == 4 and st[counter] == 2 and st["retries"] == 2 and st["requests"] == 6
    assert len(waits) == 2 and min(waits) >= min_wait


def test_malformed_json_falls_back_to_lines(standin: StandIn) -> None:
    gen = LLMGenerator(spec(standin), seed=1)
    cs = chunks(3, "MALFORMED")
    pairs = gen.generate(cs, 2)
    assert gen.stats()["answers_lines"] == 3 and [p.query for p in pairs[:2]] == questions_for(cs[0].text, 2)


def test_a_server_that_refuses_json_schema_is_read_line_by_line(standin: StandIn) -> None:
    standin.schema_unsupported = True
    gen = LLMGenerator(spec(standin), seed=1)
    pairs = gen.generate(chunks(5), 1)
    st = gen.stats()
    assert len(pairs) == 5 and st["responseFormatRefused"] >= 1 and st["responseFormat"] == "lines"
    assert "response_format" not in standin.requests[-1]


def test_broken_bodies_and_empty_answers_count_as_failures_within_the_bound(standin: StandIn) -> None:
    gen = LLMGenerator(spec(standin, maxRetries=1, maxFailureRate=0.25), seed=1)
    cs = chunks(8) + chunks(1, "BROKEN_BODY") + [Chunk("e#0", "e", ("E",), "nothing to say EMPTY", 4)]
    pairs = gen.generate(cs, 1)
    st = gen.stats()
    assert len(pairs) == 8 and st["chunksFailed"] == 2
    assert st["errorMalformedResponse"] == 2 and st["errorEmptyAnswer"] == 2


def test_failure_rate_over_the_bound_stops_with_a_reason(standin: StandIn) -> None:
    gen = LLMGenerator(spec(standin, maxRetries=1, maxFailureRate=0.1), seed=1)
    with pytest.raises(GenerationFailed, match=r"of 10 chunks got no usable answer .* more than maxFailureRate 0.1"):
        gen.generate(chunks(10, "EMPTY", every=3), 1)


def test_an_endpoint_that_refuses_every_call_stops_early(standin: StandIn, waits: list[float]) -> None:
    standin.refuse_all = True
    gen = LLMGenerator(spec(standin, maxRetries=2, maxFailureRate=0.1, maxConcurrency=4), seed=1)
    with pytest.raises(GenerationFailed, match="error503"):
        gen.generate(chunks(200), 1)
    assert len(standin.requests) < 200  # stops once the bound is passed, not after every chunk


def test_nothing_listening_is_a_connection_failure(standin: StandIn) -> None:
    gen = LLMGenerator(
        LLMSpec.model_validate(
            {"endpoint": "http://127.0.0.1:9/v1", "model": MODEL, "maxRetries": 0, "maxFailureRate": 0}
        ),
        seed=1,
    )
    with pytest.raises(GenerationFailed, match="errorConnection"):
        gen.generate(chunks(3), 1)


def test_a_model_the_endpoint_does_not_serve_and_a_wrong_key_are_misconfiguration(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(GeneratorMisconfigured, match="does not serve model 'gpt-nope'"):
        LLMGenerator(spec(standin, model="gpt-nope"), seed=1).generate(chunks(3), 1)
    monkeypatch.setenv(LLM_API_KEY_ENV, "sk-wrong")
    with pytest.raises(GeneratorMisconfigured, match="refused the API key") as err:
        LLMGenerator(spec(standin), seed=1).generate(chunks(3), 1)
    assert "sk-wrong" not in str(err.value)


def test_max_requests_caps_the_cost(standin: StandIn) -> None:
    gen = LLMGenerator(spec(standin, maxRequests=5, maxConcurrency=1), seed=1)
    pairs = gen.generate(chunks(10), 1)
    st = gen.stats()
    assert len(standin.requests) == 5 and len(pairs) == 5 and st["chunksOverMaxRequests"] == 5


def test_max_concurrency_8_keeps_8_requests_in_flight_and_answers_every_chunk(standin: StandIn) -> None:
    """The stand-in counts the requests it holds at once: 1 with maxConcurrency 1, exactly 8 with 8 (never more).
    The time this saves is a benchmark, not a test: bench/bench_llm_concurrency.py."""
    standin.delay = 0.05
    LLMGenerator(spec(standin, maxConcurrency=1), seed=1).generate(chunks(24), 1)
    assert standin.max_in_flight == 1
    # Each answer held 0.5 s: long enough for the client to open all 8 even on a loaded machine.
    standin.delay, standin.max_in_flight = 0.5, 0
    pairs = LLMGenerator(spec(standin, maxConcurrency=8), seed=1).generate(chunks(40), 1)
    assert len(pairs) == 40 and standin.max_in_flight == 8


def test_parse_questions() -> None:
    assert parse_questions('{"questions": ["How is it read?", " "]}') == (["How is it read?"], "json")
    assert parse_questions('```json\n["Where are settings kept?"]\n```') == (["Where are settings kept?"], "json")
    assert parse_questions("Questions:\n1. How is it read?\n- Where do settings go?\n") == (
        ["How is it read?", "Where do settings go?"],
        "lines",
    )
    assert parse_questions("") == ([], "none") and parse_questions("{") == ([], "none")


# ---------------------------------------------------------------- through the generate stage


def _llm_cfg(standin: StandIn, work: Path, model_dir: Path) -> RunConfig:
    from trainer_helpers import HUB_ID, make_cfg

    spec = {
        "model": {"base": HUB_ID},
        "data": {
            "train": {"uri": "s3://docs/handbook/", "format": "documents"},
            "generate": {
                "chunking": {"size": 40, "overlap": 0},
                "queriesPerChunk": 2,
                "generator": {"llm": {"endpoint": standin.url, "model": MODEL, "apiKeySecret": {"name": "k"}}},
            },
        },
        "output": {"uri": "s3://docs/out/"},
    }
    return make_cfg(spec, work, model_dir)


def _handbook(root: Path) -> None:
    folder = root / "docs" / "handbook"
    folder.mkdir(parents=True)
    for d in range(4):
        parts = [f"# Handbook part {d}\n"]
        for s in range(3):
            parts.append(
                f"## Topic {d}.{s}\n\nThe assembly procedure{d}{s} fastens the bracket{s} to the housing{d}. "
                f"Tighten every screw{s} by hand before the torque wrench{d} is used.\n\n"
                f"Inspection{d}{s} follows: look for cracks along the weld seam{s} and record them.\n"
            )
        (folder / f"part{d}.md").write_text("\n".join(parts))


@pytest.mark.slow
def test_stage_publishes_resumes_and_reuses_without_calling_the_endpoint(
    standin: StandIn, tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eft_trainer import generate, generation
    from eft_trainer.documents import whitespace_tokenizer
    from eft_trainer.storage import LocalStore

    _handbook(tmp_path / "root")
    store = LocalStore(tmp_path / "root")
    monkeypatch.setattr(generation, "PART_CHUNKS", 4)
    cfg = _llm_cfg(standin, tmp_path / "work", model_dir)
    tok = whitespace_tokenizer()
    generate.CALLS.clear()
    first = generation.generate_dataset(cfg, store, tmp_path / "work", tok)
    chunks = first.card["chunksUsed"]
    assert not first.reused and generate.CALLS["llm"] == chunks == len(standin.requests) and chunks >= 8
    card = first.card
    assert card["requests"] == chunks and card["generatorStats"]["llm"]["tokensIn"] > 0
    assert card["prompt"].startswith("You write search queries") and card["pairsGenerated"] == 2 * chunks
    assert KEY not in json.dumps(card)
    local = tmp_path / "work" / "datasets" / card["hash"]
    assert sorted(p.name for p in (local / "parts").iterdir()) == [
        f"llm-{i:05d}.jsonl" for i in range((chunks + 3) // 4)
    ]
    _assert_manifest_lists_the_parts(local)

    # The same documents and settings: the dataset is reused, the endpoint is not called.
    generate.CALLS.clear()
    again = generation.generate_dataset(cfg, store, tmp_path / "work", tok)
    assert again.reused and again.pairs == first.pairs and generate.CALLS == {} and len(standin.requests) == chunks

    # A pod killed after its second part (no manifest, parts 3.. missing) resumes from the saved parts.
    stored = store.path(generation.dataset_prefix(cfg, card["hash"]))
    (stored / "manifest.json").unlink()
    for part in sorted((stored / "parts").iterdir())[2:]:
        part.unlink()
    generate.CALLS.clear()
    resumed = generation.generate_dataset(cfg, store, tmp_path / "work", tok)
    assert not resumed.reused and resumed.pairs == first.pairs
    assert generate.CALLS["llm"] == chunks - 8 and resumed.card["generatorStats"]["llm"]["partsResumed"] == 2
    _assert_manifest_lists_the_parts(local)  # the resumed parts as well as the new ones


def _assert_manifest_lists_the_parts(local: Path) -> None:
    """The raw parts (every generated pair, before the filters) are part of the artifact: listed with checksums."""
    import hashlib

    manifest = json.loads((local / "manifest.json").read_text())
    listed = {o["key"]: o for o in manifest["objects"]}
    parts = sorted((local / "parts").iterdir())
    assert sorted(listed) == sorted(["pairs.jsonl", "datacard.json"] + [f"parts/{p.name}" for p in parts])
    for p in parts:
        data = p.read_bytes()
        assert listed[f"parts/{p.name}"] == {
            "key": f"parts/{p.name}",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
