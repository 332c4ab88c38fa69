"""The query adapters as small torch modules that train fast, and their export to stock sentence-transformers
``Dense`` modules (so the published model loads with ``SentenceTransformer(path)`` and nothing of ours).

Every adapter is the identity before training:

* ``linear``: ``W x + b`` with ``W = I``, ``b = 0`` (``dim * dim + dim`` parameters);
* ``linear`` with ``rank r``: ``x + U (V^T x) + b`` with ``U = 0`` (``2 * dim * r + dim`` parameters), exported as
  one square Dense whose weight is ``I + U V^T``;
* ``mlp`` with ``hiddenDim h``: ``x + W2 tanh(W1 x + b1) + b2`` with ``W2 = 0``. Exported as two Dense modules:
  the first (``dim -> dim + h``, Tanh, with its residual projection) writes ``[x ; tanh(W1 x + b1)]`` (its top
  rows are zero, so ``tanh(0) = 0`` and the residual ``[I ; 0]`` carries ``x``), the second
  (``dim + h -> dim``, no activation) computes ``[I, W2] [x ; h] + b2``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from eft_api.spec import AdapterSpec


class AdapterNet(nn.Module):
    """``forward`` maps embeddings to adapted embeddings; ``export`` gives stock modules computing the same."""

    def export(self) -> list[Any]:
        raise NotImplementedError


class LinearAdapter(AdapterNet):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias

    def export(self) -> list[Any]:
        return [_dense(self.weight.detach().clone(), self.bias.detach().clone(), nn.Identity())]


class LowRankAdapter(AdapterNet):
    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.u = nn.Parameter(torch.zeros(dim, rank))
        self.v = nn.Parameter(torch.randn(dim, rank) / rank**0.5)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (x @ self.v) @ self.u.T + self.bias

    def export(self) -> list[Any]:
        dim = self.u.shape[0]
        weight = torch.eye(dim) + (self.u @ self.v.T).detach()
        return [_dense(weight, self.bias.detach().clone(), nn.Identity())]


class MlpAdapter(AdapterNet):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.inner = nn.Linear(dim, hidden)
        self.outer = nn.Linear(hidden, dim)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.outer(torch.tanh(self.inner(x)))
        return out

    def export(self) -> list[Any]:
        from sentence_transformers.sentence_transformer.modules import Dense

        hidden, dim = self.inner.weight.shape
        w1, b1 = self.inner.weight.detach(), self.inner.bias.detach()
        first = Dense(
            dim,
            dim + hidden,
            bias=True,
            activation_function=nn.Tanh(),
            init_weight=torch.cat([torch.zeros(dim, dim), w1]),
            init_bias=torch.cat([torch.zeros(dim), b1]),
            use_residual=True,
        )
        with torch.no_grad():
            first.residual.weight.copy_(torch.cat([torch.eye(dim), torch.zeros(hidden, dim)]))
        second = _dense(
            torch.cat([torch.eye(dim), self.outer.weight.detach()], dim=1),
            self.outer.bias.detach().clone(),
            nn.Identity(),
        )
        return [first, second]


def _dense(weight: torch.Tensor, bias: torch.Tensor, activation: nn.Module) -> Any:
    from sentence_transformers.sentence_transformer.modules import Dense

    out_features, in_features = weight.shape
    return Dense(
        in_features, out_features, bias=True, activation_function=activation, init_weight=weight, init_bias=bias
    )


def build(dim: int, spec: AdapterSpec) -> AdapterNet:
    """The adapter the spec asks for, the identity before training (``mlp``'s hidden layer is random)."""
    if spec.kind == "mlp":
        return MlpAdapter(dim, spec.hidden_dim)
    if spec.rank is not None and spec.rank < dim:
        return LowRankAdapter(dim, spec.rank)
    return LinearAdapter(dim)
