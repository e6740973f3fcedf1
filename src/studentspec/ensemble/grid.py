"""The deep and two-layer recipes' 9-value grid {-1, -0.75, ..., 1} and its distinct rows (docs/model.md 4.1, 4.3),
shared by the MLP teachers (mlp/teacher.py) and the random conv teachers (conv/recipe.py)."""

from __future__ import annotations

import torch
from torch import Tensor

GRID = torch.linspace(-1.0, 1.0, 9, dtype=torch.float64)  # {-1, -0.75, ..., 1}


def distinct_rows(g: torch.Generator, count: int, length: int) -> Tensor:
    """`count` distinct, non-zero vectors of `length` grid values, [count, length] float64; the caller checks that
    9**length - 1 >= count (else this never ends)."""
    rows: list[Tensor] = []
    seen: set[bytes] = set()
    while len(rows) < count:
        cand = torch.randint(0, 9, (count - len(rows), length), generator=g)
        for row in cand:
            key = row.numpy().tobytes()
            if key in seen or bool((row == 4).all()):
                continue
            seen.add(key)
            rows.append(GRID[row])
    return torch.stack(rows)
