"""LLM generator: 100 chunks against the loopback stand-in server answering in 0.25 s, maxConcurrency 1 vs 8.

Prints both times and their ratio (the ideal is 8; the client's own per-request work does not overlap).
The stand-in (tests/trainer/llm_standin.py) is not an LLM: it answers deterministically from the chunk.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "trainer"))

from llm_standin import KEY, MODEL, StandIn  # noqa: E402

from eft_api.spec import LLMGenerator as LLMSpec  # noqa: E402
from eft_trainer.documents import Chunk  # noqa: E402
from eft_trainer.generate.llm import LLM_API_KEY_ENV, LLMGenerator  # noqa: E402

N, DELAY = 100, 0.25


def chunks(n: int) -> list[Chunk]:
    return [
        Chunk(f"doc{i}#0", f"doc{i}", ("Guide", f"Part {i}"), f"Chunk {i}: the loader reads settings{i}.", 12)
        for i in range(n)
    ]


def timed(server: StandIn, concurrency: int) -> float:
    spec = LLMSpec.model_validate({"endpoint": server.url, "model": MODEL, "maxConcurrency": concurrency})
    t0 = time.perf_counter()
    LLMGenerator(spec, seed=1).generate(chunks(N), 1)
    return time.perf_counter() - t0


def main() -> int:
    server = StandIn().start()
    os.environ[LLM_API_KEY_ENV] = KEY
    try:
        server.delay = DELAY
        serial = timed(server, 1)
        server.reset()
        server.delay = DELAY
        parallel = timed(server, 8)
    finally:
        server.stop()
    print(f"{N} chunks, answers in {DELAY} s: maxConcurrency 1 {serial:.1f} s, 8 {parallel:.1f} s")
    print(f"ratio {serial / parallel:.1f} (ideal 8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
