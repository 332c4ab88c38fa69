"""Merging against forgetting (``training.merge``): WiSE-FT weight interpolation between the base and the
fine-tuned model, ``merged = base + ratio * (fine-tuned - base)`` for every floating-point weight.

* ``torch.lerp`` computes it, exact at the ends: ratio 0 gives the base weights and ratio 1 the fine-tuned
  weights bit for bit (so their embeddings are equal too).
* ``queryAdapter``: the base model is frozen, so only the adapter is merged, with the identity (the
  adapter before training): a linear adapter's ``W`` towards ``I`` and ``b`` towards 0, a residual one's
  ``W`` and ``b`` towards 0.
* Ratios: the given ones (``training.merge.ratios``), or a search: 1, then bisection between the largest
  ratio that passes every guard and the smallest that fails (3 steps: a resolution of 1/8).
* The choice (pure): among the points that pass every guard and the gate, the best primary metric (the
  larger ratio on a tie); none passing: no choice, and the best trade-off found is named.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SEARCH_STEPS = 3


@dataclass
class Point:
    """One ratio measured: the primary metric on the evaluation set, each guard's figure and verdicts."""

    ratio: float
    primary: float
    guards: dict[str, float] = field(default_factory=dict)
    guards_passed: bool = True
    gate_passed: bool = True

    @property
    def passed(self) -> bool:
        return self.guards_passed and self.gate_passed

    def to_json(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "primary": self.primary,
            "guards": self.guards,
            "guardsPassed": self.guards_passed,
            "gatePassed": self.gate_passed,
        }


def lerp_state(base: dict[str, Any], tuned: dict[str, Any], ratio: float) -> dict[str, Any]:
    """Interpolated state dict: floating-point tensors by ``torch.lerp``, the rest (counters, ids) as tuned."""
    import torch

    if set(base) != set(tuned):
        missing = sorted(set(base) ^ set(tuned))[:5]
        raise ValueError(f"the base and the fine-tuned model differ in their weights ({missing}): cannot merge")
    out: dict[str, Any] = {}
    for k, t in tuned.items():
        b = base[k]
        if torch.is_floating_point(t) and b.shape == t.shape:
            out[k] = torch.lerp(b.to(t.dtype), t, ratio) if 0 < ratio < 1 else (t if ratio == 1 else b).clone()
        else:
            out[k] = t.clone()
    return out


def merged_model(base: Any, tuned: Any, ratio: float) -> Any:
    """A new model: ``tuned``'s architecture with weights interpolated towards ``base`` (full weights)."""
    model = copy.deepcopy(tuned)
    model.load_state_dict(lerp_state(base.state_dict(), tuned.state_dict(), ratio))
    return model


def identity_state(module: Any) -> dict[str, Any]:
    """The state of an adapter ``Dense`` that makes it the identity (what merging interpolates towards).

    A square weight is the identity and its bias zero (linear, low-rank). The mlp adapter exports two Dense
    modules: the first (``dim -> dim + h``, with its residual projection) writes ``[x ; tanh(W1 x + b1)]`` and is
    kept as trained, since the second (``dim + h -> dim``, weight ``[I | W2]``) ignores the hidden part once its
    ``W2`` is zero: that second module's identity is ``[I | 0]`` with a zero bias."""
    import torch

    state = module.state_dict()
    if getattr(module, "use_residual", False):
        return {k: v.clone() for k, v in state.items()}
    out: dict[str, Any] = {}
    for k, v in state.items():
        if k.endswith("weight") and v.ndim == 2 and v.shape[1] >= v.shape[0]:
            out[k] = torch.cat([torch.eye(v.shape[0], dtype=v.dtype), torch.zeros_like(v[:, v.shape[0] :])], dim=1)
        else:
            out[k] = torch.zeros_like(v)
    return out


# ---------------------------------------------------------------- ratios and the choice (pure)


def next_ratio(points: Sequence[Point], given: Sequence[float]) -> float | None:
    """The next ratio to measure, or None when done: the given ratios (largest first), else the search."""
    done = {p.ratio for p in points}
    if given:
        return next((r for r in sorted(given, reverse=True) if r not in done), None)
    if 1.0 not in done:
        return 1.0
    if len(points) > SEARCH_STEPS:
        return None
    ok = [p.ratio for p in points if p.guards_passed]
    bad = [p.ratio for p in points if not p.guards_passed]
    if not bad:
        return None  # the fine-tuned model passes every guard: nothing to repair
    lo, hi = max(ok, default=0.0), min(bad)
    mid = round((lo + hi) / 2, 6)
    return None if mid in done or mid <= 0 else mid


def choose(points: Sequence[Point]) -> Point | None:
    """The best primary metric among the points passing every guard and the gate (larger ratio on a tie)."""
    passing = [p for p in points if p.passed]
    return max(passing, key=lambda p: (p.primary, p.ratio)) if passing else None


def best_trade_off(points: Sequence[Point]) -> Point | None:
    """When none passes: the best primary metric among those passing the guards, else among all."""
    guarded = [p for p in points if p.guards_passed] or list(points)
    return max(guarded, key=lambda p: (p.primary, p.ratio)) if guarded else None


def describe(points: Sequence[Point], chosen: Point | None, pm: str) -> str:
    """One line for the log, the report and a rejection."""
    if chosen is not None:
        return f"merge ratio {chosen.ratio:g} chosen ({pm} {chosen.primary:.4f}; {len(points)} ratios measured)"
    best = best_trade_off(points)
    if best is None:
        return "no merge ratio was measured"
    why = "a guard" if not best.guards_passed else "the gate"
    return (
        f"no merge ratio passes every guard and the gate ({len(points)} measured); the best trade-off was ratio "
        f"{best.ratio:g} ({pm} {best.primary:.4f}), which fails {why}"
    )
