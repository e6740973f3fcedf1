"""How fast big inputs are answered: `sweep --dry-run` of large grids, and the refusal of oversized configs.

Each case is one `studentspec` process (wall time from the shell, imports included); prints the median of
--repeats processes per case and the exit code. The grids take K values of teacher.decay times K values of
teacher.bias (times 10 of train.lr for the largest), one job each; the dry run also times its cost calibration
(one evaluation and 300 steps of the first job).

    python benchmarks/bench_inputs.py [--repeats 3] [--sizes 100,316]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["seeds=[1]", "input_dim=4", "output_dim=3", "teacher.widths=[2]", "student.multi=2", "data.n_train=40",
        "data.n_eval=20", "train.steps_per_epoch=5", "train.epochs=1"]


def timed(argv: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and exit code of one `studentspec` process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "studentspec.cli", *argv], cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc.returncode


def values(k: int, start: float, step: float) -> str:
    """k distinct comma-separated numbers."""
    return ",".join(f"{start + i * step:.6g}" for i in range(k))


def cases(k_values: list[int], tmp: Path) -> dict[str, list[str]]:
    """The command line of every case."""
    config = str(ROOT / "configs" / "two_layer_quick.yaml")
    out = {}
    for k in k_values:
        grid = [f"teacher.decay={values(k, 0.0, 0.01)}", f"teacher.bias={values(k, -0.5, 0.001)}"]
        out[f"dry run, {k * k} points"] = ["sweep", config, *TINY, *grid, "--dry-run", "--out", str(tmp / "sw")]
    big = tmp / "big.yaml"
    big.write_text("seeds: [" + ", ".join(map(str, range(6_300_000))) + "]\n")  # ~50 MB
    many = tmp / "many_seeds.yaml"
    many.write_text("seeds: [" + ", ".join(map(str, range(1_000_000))) + "]\n")  # ~6.6 MB
    out["refuse a 50 MB config"] = ["run", str(big), "--out", str(tmp / "r")]
    out["refuse 10^6 seeds"] = ["run", str(many), "--out", str(tmp / "r")]
    out["missing config (imports only)"] = ["run", str(tmp / "nope.yaml"), "--out", str(tmp / "r")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="100,316", help="K values: grids of K x K points")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, argv in cases([int(k) for k in args.sizes.split(",")], tmp).items():
            runs = [timed(argv, tmp) for _ in range(args.repeats)]
            print(f"{name:<32} median {statistics.median(t for t, _ in runs):7.2f} s over {args.repeats} processes "
                  f"(exit {sorted({rc for _, rc in runs})})", flush=True)


if __name__ == "__main__":
    main()
