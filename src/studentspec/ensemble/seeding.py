"""Per-seed, per-purpose random generators: seed s draws the same numbers alone or in any ensemble."""

from __future__ import annotations

import numpy as np
import torch

PURPOSES = ("teacher", "data", "student", "sampler")


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU torch.Generator keyed by (seed, purpose), independent of every other pair."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown generator purpose {purpose!r}")
    state = np.random.SeedSequence([seed, PURPOSES.index(purpose)]).generate_state(1, np.uint64)[0]
    g = torch.Generator(device="cpu")
    g.manual_seed(int(state) & ((1 << 63) - 1))
    return g


def generators(seeds: list[int], purpose: str) -> list[torch.Generator]:
    """One generator per seed for the given purpose."""
    return [generator(s, purpose) for s in seeds]
