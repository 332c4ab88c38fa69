"""Baselines (``spec.evaluation.baselines``) and the leaderboard.

Each baseline is measured on the same evaluation set and guards as the base and the fine-tuned model, with
the same metrics (:mod:`eft_trainer.evaluation`), at its own full dimension, and compared with the
fine-tuned model query by query (the paired bootstrap of :func:`eft_trainer.report.paired_bootstrap`).

* A model baseline is loaded like ``spec.model`` and encoded with its query and document routes.
* An endpoint baseline's embeddings (queries and corpus of a set, in one list) are cached under
  ``<output>/<namespace>/<name>/embeddings/<key>.npy``, the key hashing the URL, the model, the dimensions
  and every text, so that a rerun on the same evaluation set pays the API nothing again.

A baseline that cannot be measured (its endpoint fails, its model does not load) is a row of the leaderboard
with its error; a ``gate.mustBeat`` naming it then rejects the model (nothing proves it was beaten).
The leaderboard's figures and the verdicts are pure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eft_api.spec import Baseline
from eft_trainer.data import IRSet
from eft_trainer.embedding_cache import cache_key, cached_embeddings
from eft_trainer.endpoint_embedder import EndpointEmbedder, EndpointFailed
from eft_trainer.errors import TrainerError
from eft_trainer.evaluation import EvalResult, evaluate_embeddings
from eft_trainer.report import paired_bootstrap
from eft_trainer.storage import S3Uri, Store

log = logging.getLogger("eft_trainer.baselines")

EMBEDDINGS_DIR = "embeddings"


@dataclass
class Measured:
    """A baseline's results per set (``eval`` and each guard's name), its dimension and cost; or its error."""

    name: str
    kind: str
    reference: str
    results: dict[str, EvalResult] = field(default_factory=dict)
    dimension: int = 0
    cost: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class EmbeddingsCache:
    """Where an endpoint's embeddings are kept: the work dir, then ``prefix`` (None: the work dir only)."""

    own: Path
    storage: Store
    prefix: S3Uri | None = None
    publish: bool = True


def embeddings_prefix(output_uri: str, namespace: str, name: str) -> S3Uri:
    """``<output>/<namespace>/<name>/``: the cache outlives a run, like the generated datasets. Pure."""
    return S3Uri.parse(f"{output_uri.rstrip('/')}/{namespace}/{name}/")


def reference(b: Baseline) -> str:
    if b.endpoint is not None:
        return f"{b.endpoint.model} at {b.endpoint.url}"
    assert b.model is not None
    return b.model.base + (f" (maxSeqLength {b.model.max_seq_length})" if b.model.max_seq_length else "")


def endpoint_results(
    embedder: EndpointEmbedder, sets: Mapping[str, IRSet], k_values: Sequence[int], cache: EmbeddingsCache
) -> tuple[dict[str, EvalResult], bool]:
    """Each set measured from the endpoint's embeddings (cached); and whether every set came from the cache."""
    spec = embedder.spec
    out: dict[str, EvalResult] = {}
    all_cached = True
    for set_name, irset in sets.items():
        texts = [*irset.queries.values(), *irset.corpus.values()]
        key = cache_key(["endpoint", spec.url, spec.model, spec.dimensions], texts)
        emb, cached = cached_embeddings(
            lambda t: embedder.embed(t),
            texts,
            key,
            EMBEDDINGS_DIR,
            cache.own,
            cache.storage,
            cache.prefix,
            cache.publish,
        )
        all_cached = all_cached and cached
        n_q = len(irset.queries)
        out[set_name] = evaluate_embeddings(emb[:n_q], emb[n_q:], irset, [emb.shape[1]], k_values)
    return out, all_cached


def measure_endpoint(
    b: Baseline, index: int, sets: Mapping[str, IRSet], k_values: Sequence[int], cache: EmbeddingsCache
) -> Measured:
    """An endpoint baseline measured on every set; its error, not an exception, when the endpoint fails."""
    assert b.endpoint is not None
    m = Measured(b.name, "endpoint", reference(b))
    embedder = EndpointEmbedder(b.endpoint, b.name, index)
    try:
        m.results, cached = endpoint_results(embedder, sets, k_values, cache)
    except EndpointFailed as exc:
        m.error = str(exc)
        log.warning("%s", exc)
        cached = False
    m.cost = {**embedder.stats(), "cached": cached}
    m.dimension = _dimension(m.results)
    return m


def measure_model(
    b: Baseline, load: Callable[[], Any], evaluate: Callable[[Any, str, IRSet], EvalResult], sets: Mapping[str, IRSet]
) -> Measured:
    """A model baseline: ``load()`` gives the model, ``evaluate(model, set name, irset)`` measures it."""
    m = Measured(b.name, "model", reference(b))
    try:
        model = load()
    except TrainerError as exc:  # a baseline that does not load is a row with its error
        m.error = f"baseline {b.name}: {exc}"
        log.warning("%s", m.error)
        return m
    m.results = {set_name: evaluate(model, set_name, irset) for set_name, irset in sets.items()}
    m.dimension = _dimension(m.results)
    return m


def _dimension(results: Mapping[str, EvalResult]) -> int:
    return max(next(iter(results.values())).metrics) if results else 0


# ---------------------------------------------------------------- the leaderboard (pure)


def at(result: EvalResult, dim: int) -> int:
    """The dimension of ``result`` to compare at: ``dim`` when measured, else its largest."""
    return dim if dim in result.metrics else max(result.metrics)


def row(
    name: str, kind: str, result: EvalResult, dim: int, pm: str, tuned: EvalResult, tuned_dim: int, seed: int
) -> dict[str, Any]:
    """One leaderboard row of one set: every metric at its dimension, and the fine-tuned model minus it (CI)."""
    d = at(result, dim)
    return {
        "name": name,
        "kind": kind,
        "dimension": d,
        "metrics": dict(result.metrics[d]),
        "primary": result.metrics[d][pm],
        "finetunedMinus": paired_bootstrap(result.per_query[d][pm], tuned.per_query[tuned_dim][pm], seed=seed),
    }


def leaderboard(
    base: Mapping[str, EvalResult],
    tuned: Mapping[str, EvalResult],
    measured: Sequence[Measured],
    pm: str,
    dim: int,
    seed: int,
) -> dict[str, Any]:
    """Per set (``eval`` and each guard): base, fine-tuned and each baseline, best primary metric first."""
    sets: dict[str, Any] = {}
    for set_name, t in tuned.items():
        td = at(t, dim)
        rows = [row("base", "base", base[set_name], dim, pm, t, td, seed)]
        rows.append(row("fine-tuned", "fine-tuned", t, dim, pm, t, td, seed))
        for m in measured:
            if m.error is None and set_name in m.results:
                rows.append(row(m.name, m.kind, m.results[set_name], m.dimension, pm, t, td, seed))
        rows.sort(key=lambda r: -r["primary"])
        sets[set_name] = rows
    failed = {m.name: m.error for m in measured if m.error is not None}
    costs = {m.name: m.cost for m in measured if m.kind == "endpoint"}
    return {"primaryMetric": pm, "dimension": dim, "sets": sets, "failed": failed, "cost": costs}


def beaten(board: dict[str, Any], name: str, decide_by: str) -> bool:
    """Whether the fine-tuned model beat baseline ``name`` on the evaluation set (estimate, or CI lower end)."""
    r = next((r for r in board["sets"].get("eval", []) if r["name"] == name), None)
    if r is None:
        return False
    diff = r["finetunedMinus"]
    return bool((diff["low"] if decide_by == "ciLower" else diff["gain"]) > 0)


def must_beat_rejection(board: dict[str, Any], names: Sequence[str], decide_by: str) -> str:
    """Why ``gate.mustBeat`` rejects the model ('' when it does not). Pure."""
    why = []
    for name in names:
        if name in board["failed"]:
            why.append(f"baseline {name} could not be measured ({board['failed'][name]})")
        elif not beaten(board, name, decide_by):
            how = "the lower end of the 95% CI of" if decide_by == "ciLower" else ""
            why.append(
                f"the fine-tuned model did not beat baseline {name} ({how} {board['primaryMetric']})".replace("( ", "(")
            )
    return "; ".join(why)


def short_form(board: dict[str, Any]) -> list[dict[str, Any]]:
    """``status.results.baselines[]``: each baseline's primary metric on the evaluation set and the CI. Pure."""
    out = []
    for r in board["sets"].get("eval", []):
        if r["kind"] in ("base", "fine-tuned"):
            continue
        diff = r["finetunedMinus"]
        out.append(
            {
                "name": r["name"],
                "primary": round(r["primary"], 4),
                "finetunedMinus": round(diff["gain"], 4),
                "ciLow": round(diff["low"], 4),
                "ciHigh": round(diff["high"], 4),
            }
        )
    out += [{"name": n, "error": e[:200]} for n, e in board["failed"].items()]
    return out


def plot(board: dict[str, Any], path: Path) -> Path:
    """A bar per model of the primary metric on the evaluation set, with each baseline's CI against the
    fine-tuned model drawn from the fine-tuned bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = board["sets"].get("eval", [])
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(rows))))
    names = [r["name"] for r in rows]
    values = [r["primary"] for r in rows]
    colors = [
        "tab:green" if r["kind"] == "fine-tuned" else "tab:gray" if r["kind"] == "base" else "tab:blue" for r in rows
    ]
    ax.barh(names, values, color=colors)
    for y, r in enumerate(rows):
        if r["kind"] != "fine-tuned":
            d = r["finetunedMinus"]
            ax.text(r["primary"], y, f" fine-tuned {d['gain']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]", va="center")
    ax.invert_yaxis()
    ax.set_xlabel(f"{board['primaryMetric']} on the evaluation set (fine-tuned minus the row, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
