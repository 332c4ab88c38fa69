"""The run's report: report.json's content (built as a mapping, read back as :class:`eft_api.report.Report`),
report.md (text, in words) and the metric-vs-dimension plot. Pure except plot()."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eft_api.contract import PUBLISHED_PLOT
from eft_api.report import REPORT_VERSION, GuardResult, Report, ReportHeadline, TeacherFigures


def camel_keys(obj: Any) -> Any:
    """``obj`` with every dict key in camelCase (``rows_read`` -> ``rowsRead``), recursively. Pure."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            head, *rest = k.split("_")
            out[head + "".join(r.title() for r in rest)] = camel_keys(v)
        return out
    if isinstance(obj, list):
        return [camel_keys(v) for v in obj]
    return obj


def deltas(base: dict[int, dict[str, float]], tuned: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    return {d: {m: tuned[d][m] - base[d][m] for m in base[d] if m in tuned.get(d, {})} for d in base if d in tuned}


def paired_bootstrap(
    base: Sequence[float], tuned: Sequence[float], n: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean gain of ``tuned`` over ``base`` (paired per query) with a percentile bootstrap interval."""
    if len(base) != len(tuned):
        raise ValueError("paired bootstrap needs the same queries on both sides")
    m = len(base)
    if m == 0:
        return {"gain": 0.0, "low": 0.0, "high": 0.0, "queries": 0, "resamples": 0, "level": level}
    diff = [t - b for b, t in zip(base, tuned, strict=True)]
    rng = random.Random(seed)
    means = sorted(sum(diff[rng.randrange(m)] for _ in range(m)) / m for _ in range(n))
    lo = means[int((1 - level) / 2 * (n - 1))]
    hi = means[int((1 + level) / 2 * (n - 1))]
    return {"gain": sum(diff) / m, "low": lo, "high": hi, "queries": m, "resamples": n, "level": level}


def teacher_figures(teacher: Any, tuned: Any, pm: str, pdim: int, seed: int) -> dict[str, Any]:
    """The report's ``teacher`` section (method distillation) from the teacher's and the student's evaluation
    results: the teacher's metrics, its primary metric at ``pdim`` (at its own full dimension when it has no
    ``pdim``), and the student's per-query gap to it (paired bootstrap) when both have that dimension."""
    tdim = pdim if pdim in teacher.metrics else max(teacher.metrics)
    out: dict[str, Any] = {
        "metrics": {str(k): v for k, v in teacher.metrics.items()},
        "dimension": tdim,
        "primary": teacher.metrics[tdim][pm],
    }
    if tdim in tuned.per_query:
        out["studentMinusTeacher"] = paired_bootstrap(teacher.per_query[tdim][pm], tuned.per_query[tdim][pm], seed=seed)
    return out


def build_report(
    *,
    config: dict[str, Any],
    data: dict[str, Any],
    base: dict[int, dict[str, float]],
    tuned: dict[int, dict[str, float]],
    primary_metric: str,
    primary_dim: int,
    bootstrap: dict[str, float],
    timings: dict[str, float],
    training: dict[str, Any],
    hardware: dict[str, Any],
) -> dict[str, Any]:
    d = deltas(base, tuned)
    return {
        "reportVersion": REPORT_VERSION,
        "config": config,
        "data": data,
        "primaryMetric": primary_metric,
        "primaryDimension": primary_dim,
        "headline": {
            "base": base[primary_dim][primary_metric],
            "finetuned": tuned[primary_dim][primary_metric],
            "gain": d[primary_dim][primary_metric],
            "bootstrap": bootstrap,
        },
        "metrics": {
            "base": {str(k): v for k, v in base.items()},
            "finetuned": {str(k): v for k, v in tuned.items()},
            "delta": {str(k): v for k, v in d.items()},
        },
        "timings": timings,
        "training": training,
        "hardware": hardware,
    }


def words(key: str) -> str:
    """A report key for people: ``trainRowsRead`` -> ``train rows read``. Pure."""
    out = "".join(f" {c.lower()}" if c.isupper() else c for c in key)
    return out.replace("_", " ").strip()


def listed(section: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """A section's entries as Markdown list items, each key in words."""
    return [f"- {words(k)}: {value(v)}" for k, v in section.items() if k not in skip]


def render_markdown(report: Report, plot_name: str | None = PUBLISHED_PLOT) -> str:
    pm, h = report.primary_metric, report.headline
    b = h.bootstrap
    lines = [
        f"# Fine-tuning report: {report.config.name}",
        "",
        f"Base model `{report.config.base_model}`, loss {report.config.loss}.",
        "",
        f"**{pm} at {report.primary_dimension} dims: {h.base:.4f} -> {h.finetuned:.4f} "
        f"({h.gain:+.4f}; {int(b.level * 100)}% CI {b.low:+.4f} .. {b.high:+.4f} "
        f"over {b.queries} queries, paired bootstrap)**",
        "",
        "## Metrics per dimension (base -> fine-tuned)",
        "",
    ]
    lines += metric_tables(report.metrics.base, report.metrics.finetuned)
    if report.guards:
        lines += guard_table(report.guards)
    if report.teacher:
        lines += teacher_markdown(report.teacher, pm, h)
    lines += ["", "## Data", "", *listed(report.data.model_extra or {})]
    if report.data.files:
        lines += ["- files:"]
        lines += [f"  - `{f.uri}` ({f.bytes:,} bytes, sha256 `{f.sha256}`)" for f in report.data.files]
    if report.generation:
        lines += generation_markdown(report.generation)
    if report.pretrain:
        lines += ["", "## Pre-training", "", *listed(report.pretrain)]
    lines += ["", "## Training", "", *listed(report.training, skip=("oomFallback", "validationCurve"))]
    if fb := report.training.get("oomFallback"):  # eft_trainer.oom
        lines += [
            f"- out of memory before: attempt {fb['attempt']} trained with {fb['toLoss']} (mini-batch "
            f"{fb['miniBatchSize']}, batch {fb['batchSize']}) instead of {fb['fromLoss']}, after "
            f"{len(fb['outOfMemory'])} out-of-memory failure(s)"
        ]
    if curve := report.training.get("validationCurve"):  # the query-side methods' early stopping
        lines += validation_curve_table(curve)
    lines += ["", "## Timings (seconds)", "", *(f"- {words(k)}: {v:.1f}" for k, v in report.timings.items())]
    lines += ["", "## Hardware", "", *listed(report.hardware)]
    if plot_name:
        lines += ["", f"![{pm} per dimension]({plot_name})"]
    return "\n".join(lines) + "\n"


def validation_curve_table(curve: list[dict[str, Any]]) -> list[str]:
    """The query side's validation score after each epoch (per learning rate tried), as a Markdown table."""
    lines = [
        "",
        "## Validation curve (held-out training rows, NDCG@10)",
        "",
        "| learning rate | epoch | loss | NDCG@10 |",
    ]
    lines += ["|---|---|---|---|"]
    for p in curve:
        loss = f"{p['loss']:.4f}" if "loss" in p else "-"
        lines += [f"| {p.get('learningRate', 0):.2g} | {p['epoch']} | {loss} | {p.get('validationNdcg@10', 0):.4f} |"]
    return lines


def value(v: Any) -> str:
    """A value for people: floats to 4 significant digits, lists and mappings spelled out, not Python reprs."""
    if isinstance(v, bool) or v is None:
        return ("yes" if v else "no") if v is not None else "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{words(k)} {value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, (list, tuple)):
        return ", ".join(value(x) for x in v) or "-"
    return str(v)


def teacher_markdown(teacher: TeacherFigures, pm: str, headline: ReportHeadline) -> list[str]:
    """Method distillation: the teacher beside the base model and the student, on the same evaluation."""
    lines = [
        "",
        "## Teacher (method distillation)",
        "",
        f"{pm} of the teacher at {teacher.dimension} dims: {teacher.primary:.4f} "
        f"(base {headline.base:.4f}, student {headline.finetuned:.4f}).",
    ]
    gap = teacher.student_minus_teacher
    if gap:
        lines.append(
            f"Student minus teacher: {gap.gain:+.4f} ({int(gap.level * 100)}% CI {gap.low:+.4f} .. "
            f"{gap.high:+.4f} over {gap.queries} queries, paired bootstrap)."
        )
    return [*lines, ""]


def guard_table(guards: list[GuardResult]) -> list[str]:
    """The guard sets (spec.evaluation.guards): base -> fine-tuned with the bootstrap CI, and the verdict."""
    g0 = guards[0]
    lines = [
        "## Guards (other evaluation sets the model must not get worse on)",
        "",
        f"{g0.primary_metric} at {g0.dimension} dims; a drop larger than maxDrop rejects the model.",
        "",
        "| guard | queries | base | fine-tuned | delta | 95% CI | maxDrop | verdict |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for g in guards:
        b = g.bootstrap
        verdict = "passed" if g.passed else "**failed**"
        lines.append(
            f"| {g.name} | {b.queries} | {g.base:.4f} | {g.finetuned:.4f} | {g.delta:+.4f} | "
            f"{b.low:+.4f} .. {b.high:+.4f} | {g.max_drop:g} | {verdict} |"
        )
    return [*lines, ""]


def metric_tables(base: dict[str, dict[str, float]], tuned: dict[str, dict[str, float]]) -> list[str]:
    """One Markdown table per metric (ndcg, mrr, ...): a row per dimension, a column per k."""
    dims = sorted(base, key=int, reverse=True)
    names = list(next(iter(base.values())))
    order = ["ndcg", "mrr", "recall", "map", "accuracy"]
    families = sorted(
        dict.fromkeys(n.split("@")[0] for n in names),
        key=lambda f: (f not in order, order.index(f) if f in order else 0, f),
    )
    lines: list[str] = []
    for family in families:
        cols = [n for n in names if n.split("@")[0] == family]
        lines += [f"### {family}", "", "| dim | " + " | ".join("@" + n.split("@")[1] for n in cols) + " |"]
        lines.append("|---:|" + "---:|" * len(cols))
        for dim in dims:
            cells = [f"{base[dim][n]:.3f} -> {tuned[dim][n]:.3f} ({tuned[dim][n] - base[dim][n]:+.3f})" for n in cols]
            lines.append(f"| {dim} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot(report: Report, path: Path) -> Path:
    import matplotlib  # heavy: only publishing plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pm = report.primary_metric
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, series in (("base", report.metrics.base), ("fine-tuned", report.metrics.finetuned)):
        dims = sorted(series, key=int)
        ax.plot([int(d) for d in dims], [series[d][pm] for d in dims], marker="o", label=label)
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel(pm)
    ax.set_title(f"{pm} against dimension")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def generation_markdown(gen: dict[str, Any]) -> list[str]:
    """The report's section on pairs generated from documents: counts, drops by reason, sample pairs."""
    reused = " (reused: no generator was called)" if gen.get("reused") else ""
    lines = ["", "## Generated pairs", "", f"Dataset `{gen['dataset']}`{reused}.", ""]
    for key in ("generators", "documentsListed", "documentsRead", "chunks", "chunksUsed", "pairsGenerated", "pairs"):
        lines.append(f"- {words(key)}: {value(gen.get(key))}")
    if gen.get("documentsRefused"):  # files over data.generate.limits, or too deeply nested
        refused = ", ".join(f"{words(k)} {v}" for k, v in gen["documentsRefused"].items())
        lines.append(f"- documents refused: {refused}")
    lines.append("- dropped: " + ", ".join(f"{k} {v}" for k, v in gen.get("dropped", {}).items()))
    if "modelFilter" in gen:  # roundTrip / easiness: what the base model's embeddings were compared with
        lines.append("- model filters: " + ", ".join(f"{k} {v}" for k, v in gen["modelFilter"].items()))
    lines += ["", "| query | positive (start) |", "|---|---|"]
    for s in gen.get("samples", []):
        q, p = (str(s[k]).replace("|", "\\|").replace("\n", " ") for k in ("query", "positive"))
        lines.append(f"| {q[:160]} | {p[:200]} |")
    return lines
