"""One evaluation of the 4.1 workload (10k training samples, every metric): compiled pass against the torch path.

Each repeat is a separate process that builds the setup (S seeds, teacher [m], student multi)
and times `metrics.evaluate` on the training split with and without the full-batch gradient,
alternating kernel "auto" (the compiled pass, ckernel) and "torch" in the same process; the
table gives medians over processes of each process's best of 3 and the torch / compiled ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def worker(seeds: int, m: int, multi: int) -> dict[str, float]:
    """Best-of-3 seconds for (kernel, with_grad) in {auto, torch} x {False, True}."""
    import torch

    torch.set_num_threads(1)
    from studentspec import build, load_config
    from studentspec.mlp.evaluate import evaluate

    cfg = load_config("configs/two_layer.yaml", [f"seeds={list(range(1, seeds + 1))}", f"teacher.widths=[{m}]", f"student.multi={multi}"])
    s = build(cfg)
    x, y = s.stream.x_train, s.stream.y_train
    out: dict[str, float] = {}
    for _ in range(3):
        for kernel in ("auto", "torch"):
            for grad in (False, True):
                t0 = time.perf_counter()
                evaluate(s.teacher_run, s.student, x, y, loss_kind="half_sse", chunk=cfg.eval.batch_size, with_grad=grad, kernel=kernel)
                key = f"{kernel}_{'grad' if grad else 'forward'}"
                out[key] = min(out.get(key, float("inf")), time.perf_counter() - t0)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    """Spawn --repeats workers per (m, multi) and print a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--points", nargs="+", default=["10x10", "20x10"], help="teacher width x multi, e.g. 10x10")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", nargs=3, type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(*a.worker)))
        return
    print(f"| m | multi | n | S | with gradient: compiled (s) | torch (s) | torch / compiled | forward only: compiled (s) | torch (s) | torch / compiled | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for point in a.points:
        m, multi = (int(v) for v in point.split("x"))
        rows = []
        for _ in range(a.repeats):
            cmd = [sys.executable, __file__, "--worker", str(a.seeds), str(m), str(multi)]
            rows.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)

        def med(key: str) -> float:
            return statistics.median(r[key] for r in rows)

        def ratio(kind: str) -> float:
            return statistics.median(r[f"torch_{kind}"] / r[f"auto_{kind}"] for r in rows)

        print(f"| {m} | {multi} | {m * multi} | {a.seeds} | {med('auto_grad'):.2f} | {med('torch_grad'):.2f} | {ratio('grad'):.2f}x"
              f" | {med('auto_forward'):.2f} | {med('torch_forward'):.2f} | {ratio('forward'):.2f}x | {max(r['peak_rss_mib'] for r in rows):.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
