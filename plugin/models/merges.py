"""How a residual block joins its branch and its shortcut."""

from __future__ import annotations

import torch
from torch import nn


class Sum(nn.Module):
    """``branch + shortcut``: the plain residual merge."""

    def forward(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return branch + shortcut


class ConvexMerge(nn.Module):
    """``w0 * branch + w1 * shortcut`` with learned weights kept on the simplex by whoever
    trains them (Parseval networks); 0.5 / 0.5 at first, as in the authors' code."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((2,), 0.5))

    def forward(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return self.weight[0] * branch + self.weight[1] * shortcut


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` (..., n) onto {w >= 0, sum w = 1}.

    Sort-based (torch has none), and free of host synchronization: the test u_j > theta_j
    holds for a prefix of the sorted row, so its length is a sum, not a search.
    """
    u, _ = torch.sort(v, dim=-1, descending=True)
    cumulative = torch.cumsum(u, dim=-1) - 1
    ranks = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    count = (u - cumulative / ranks > 0).sum(dim=-1, keepdim=True)
    theta = cumulative.gather(-1, count - 1) / count
    return torch.clamp(v - theta, min=0)
