"""What eval.dtype: float32 changes in the stored metrics: two runs of one config, evaluated in float64 and float32.

Training runs in train.dtype either way (the same steps, bit for bit: evaluation does not touch the weights), so
every difference below is the evaluation's rounding. Printed per quantity: the largest absolute and relative
difference over every seed, evaluation and node, and how many threshold decisions (specialized, n_above_*) flip.

    python benchmarks/eval_dtype_effect.py RUN_DIR_FLOAT64 RUN_DIR_FLOAT32
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from studentspec import load_run

KEYS = {"scalars": ["seed", "step", "split"], "teachers": ["seed", "step", "split", "layer", "teacher"],
        "students": ["seed", "step", "split", "layer", "student"]}


def compare(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> list[tuple[str, float, float, int]]:
    """(column, max |a-b|, max |a-b| / |a|, rows that differ) for every numeric or boolean column."""
    a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
    if not a[keys].equals(b[keys]):
        raise SystemExit("the runs' tables do not have the same rows: not two evaluations of one config")
    rows = []
    for col in a.columns:
        if col in keys or not (pd.api.types.is_numeric_dtype(a[col]) or pd.api.types.is_bool_dtype(a[col])):
            continue
        x, y = a[col].to_numpy(np.float64), b[col].to_numpy(np.float64)
        diff = np.abs(x - y)
        rel = diff / np.where(np.abs(x) > 0, np.abs(x), 1.0)
        rows.append((col, float(np.nanmax(diff)), float(np.nanmax(rel)), int((x != y).sum())))
    return rows


def main() -> None:
    """Print the comparison of two run dirs, table by table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("float64_run")
    p.add_argument("float32_run")
    args = p.parse_args()
    ra, rb = load_run(args.float64_run), load_run(args.float32_run)
    for name, keys in KEYS.items():
        print(f"\n{name}.parquet ({len(ra.table(name))} rows)")
        print("| column | max abs diff | max rel diff | rows that differ |")
        print("|---|---|---|---|")
        for col, d, r, k in compare(ra.table(name), rb.table(name), keys):
            print(f"| {col} | {d:.3g} | {r:.3g} | {k} |")


if __name__ == "__main__":
    main()
