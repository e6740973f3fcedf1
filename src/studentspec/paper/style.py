"""The one figure style of studentspec: every figure (a run dir's, the paper's, CIFAR-10's) is drawn and saved here.

- type: small serif, light grid, no top/right spines (`STYLE`, applied by `paper_style()` or `@styled`);
- colour: a fixed colour per `student.multi` (`multi_color`), the same in every figure, so figures
  read together; ordered curves (layers, teacher index, strength) from one colour map
  (`ordered_cmap`, `ordered_color`); seeds told apart by marker (`seed_marker`), not colour;
- size: `figsize(rows, cols, panel)` from three panel sizes, `SMALL` (small multiples), `PANEL`, `SINGLE`;
- files: `save` writes NAME.png and NAME.pdf at `DPI`, each atomically, and closes the figure.
- titles: `config_title` names a run's config (shared by the run figures and the order figure).

Importing this module imports matplotlib (Agg) and nothing of the trainer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Colormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..ensemble.atomic import atomic_write  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

    from ..store import Run

DPI = 150
FORMATS = ("png", "pdf")
SERIF = ["DejaVu Serif", "Bitstream Vera Serif", "Computer Modern Roman", "Times New Roman", "Times", "serif"]
STYLE: dict[RcKeyType, Any] = {
    "font.family": "serif",
    "font.serif": SERIF,
    "mathtext.fontset": "dejavuserif",
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "figure.titlesize": 9.5,
    "figure.labelsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "legend.frameon": False,
    "lines.linewidth": 1.4,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "savefig.bbox": "standard",  # a saved PNG is figsize * DPI pixels
}

MULTI_COLORS = {1.0: "#1f77b4", 2.0: "#ff7f0e", 3.0: "#8c564b", 5.0: "#2ca02c", 10.0: "#d62728"}
_FALLBACK = ("#9467bd", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
ORDERED_CMAP = "viridis"
SEED_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

SMALL = (2.3, 2.0)  # inches per panel of the paper's small multiples
PANEL = (3.4, 2.8)  # inches per panel of a figure with few panels (a run's layers, a CIFAR-10 multi)
SINGLE = (5.4, 3.7)  # inches of a figure's only panel
MARGIN = (0.6, 0.5)  # inches added for a figure's title, supxlabel and outside legend


def multi_color(multi: float) -> str:
    """The colour of one multi, the same in every figure (an unlisted multi gets a fixed fallback by value)."""
    m = float(multi)
    return MULTI_COLORS.get(m, _FALLBACK[int(m * 7) % len(_FALLBACK)])


def ordered_cmap() -> Colormap:
    """The colour map of ordered curves: layers, teacher index, teacher strength."""
    return matplotlib.colormaps[ORDERED_CMAP]


def ordered_color(i: int, n: int) -> tuple[float, float, float, float]:
    """Colour of item i of n ordered items (0 = first end of `ordered_cmap`)."""
    return ordered_cmap()(i / max(1, n - 1))


def seed_marker(i: int) -> str:
    """Marker of the i-th seed shown in a figure."""
    return SEED_MARKERS[i % len(SEED_MARKERS)]


def config_title(run: Run) -> str:
    """One-line summary of a run's config for figure titles (its diverged seeds named)."""
    c = run.config
    text = f"m={c.teacher.widths} multi={c.student.multi:g} p={c.teacher.decay:g}"
    diverged = run.summary.get("diverged") or {}
    return f"{text} (diverged seeds: {', '.join(map(str, diverged))})" if diverged else text


def figsize(rows: int, cols: int, panel: tuple[float, float] = PANEL) -> tuple[float, float]:
    """Figure size in inches: rows x cols panels plus the fixed margin."""
    return (panel[0] * cols + MARGIN[0], panel[1] * rows + MARGIN[1])


def subplots(rows: int, cols: int, panel: tuple[float, float] = PANEL, **kw: Any) -> tuple[Figure, np.ndarray]:
    """A figure of rows x cols panels (axes always 2-D), constrained layout, sized by `figsize`."""
    return plt.subplots(rows, cols, figsize=figsize(rows, cols, panel), squeeze=False, layout="constrained", **kw)


@contextmanager
def paper_style() -> Iterator[None]:
    """Apply the style (matplotlib rc settings) inside the block."""
    with matplotlib.rc_context(STYLE):
        yield


P = ParamSpec("P")
R = TypeVar("R")


def styled(make: Callable[P, R]) -> Callable[P, R]:
    """Decorator: draw the figure under `paper_style()` (fonts and sizes are fixed when artists are created)."""

    @functools.wraps(make)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with paper_style():
            return make(*args, **kwargs)

    return wrapper


def save(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write out_dir/NAME.png and NAME.pdf at DPI (each atomically), close the figure, return the paths."""
    from ..store import claim_figures

    out_dir = Path(out_dir)
    try:
        paths = [out_dir / f"{name}.{ext}" for ext in FORMATS]
        claim_figures(out_dir, [p.name for p in paths])  # a figure folder studentspec owns, never over another file
        with paper_style():
            for path in paths:
                atomic_write(path, functools.partial(fig.savefig, dpi=DPI, format=path.suffix[1:]))
        return paths
    finally:
        plt.close(fig)
