"""Compare two run dirs bit for bit: the three tables, the weights and summary.json's per-seed numbers.

Usage: python tools/same_runs.py RUN_A RUN_B  (exit 1 and the first difference when they differ)
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def differences(a: Path, b: Path) -> list[str]:
    """What differs between run dirs a and b (empty when every stored number is identical)."""
    out = []
    for name in ("scalars", "teachers", "students"):
        x, y = pd.read_parquet(a / f"{name}.parquet"), pd.read_parquet(b / f"{name}.parquet")
        if not x.equals(y):
            out.append(f"{name}.parquet differs")
    with np.load(a / "weights.npz") as x, np.load(b / "weights.npz") as y:
        out += [f"weights {k} differ" for k in x.files if k not in y.files or not np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind in "fc")]
    sa, sb = (json.loads((p / "summary.json").read_text())["per_seed"] for p in (a, b))
    if sa != sb:
        out.append("summary.json per_seed differs")
    # configs as resolved by this version: a key added since (with its default) is not a difference
    from studentspec.config import build_config, read_mapping

    if build_config(read_mapping(a / "config.yaml")) != build_config(read_mapping(b / "config.yaml")):
        out.append("config.yaml differs")
    return out


if __name__ == "__main__":
    diff = differences(Path(sys.argv[1]), Path(sys.argv[2]))
    print("\n".join(diff) if diff else "identical")
    sys.exit(1 if diff else 0)
