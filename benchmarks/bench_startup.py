"""Start-up of a run: build() of the docs/model.md 4.1 workload for S seeds, first call in a fresh process.

Prints the median over separate processes of build()'s wall time (teacher, 10k training and 10k
evaluation inputs per seed, labels, student), the import time, and the peak RSS, at 1 and 2 torch threads.

    python benchmarks/bench_startup.py [--seeds 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
from studentspec import load_config
from studentspec.mlp.train import build
t1 = time.perf_counter()
cfg = load_config("configs/two_layer.yaml", ["seeds=" + json.dumps(list(range(1, int(sys.argv[1]) + 1))), "teacher.widths=[20]",
                                             "student.multi=10", f"train.threads={sys.argv[2]}"])
t2 = time.perf_counter()
s = build(cfg)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "build_s": t3 - t2, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"build() of the 4.1 workload (d=100, m=20, multi=10, C=50, 10k+10k samples), {args.seeds} seeds, "
          f"first call in a fresh process, median of {args.repeats} processes")
    print("| threads | build() s (median) | min | max | import s | peak RSS GiB |")
    print("|---|---|---|---|---|---|")
    for threads in (1, 2):
        runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, str(args.seeds), str(threads)], capture_output=True, text=True,
                                          check=True).stdout.strip().splitlines()[-1]) for _ in range(args.repeats)]
        b = [r["build_s"] for r in runs]
        print(f"| {threads} | {statistics.median(b):.2f} | {min(b):.2f} | {max(b):.2f} | {statistics.median(r['import_s'] for r in runs):.2f} | "
              f"{max(r['peak_rss_gb'] for r in runs):.2f} |")


if __name__ == "__main__":
    main()
