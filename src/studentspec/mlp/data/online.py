"""data.kind online: fresh N(0, std^2 I) inputs at every step,
no fixed training set (evaluation on a fixed Gaussian set)."""

from . import DataKind, register
from .gaussian import gaussian

ONLINE = register(
    DataKind(
        name="online",
        draw=lambda g, n, cfg, *, w, b, training, out=None: gaussian(g, n, cfg.input_dim, cfg.data.std, out=out),
        fixed=False,
    )
)
