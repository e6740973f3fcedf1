"""studentspec against a reference of the original per-seed loop, and the cost of evaluation.

Reference (written from science.md 4.1, the original code's workload): one seed at a time, a
plain float64 nn.Sequential(Linear(d, n), ReLU, Linear(n, C)) student, torch.optim.SGD(lr 0.01)
on the paper's J (1/2 sum over outputs, mean over the batch, as the original two-layer code), batches of 16 drawn with replacement from a fixed 10k training set every step.
studentspec: the same workload for S seeds in one batched `train()` (float64); both at --threads
torch threads (default 1).

Printed, each a median over --repeats separate processes:
  - reference seed-steps/s, studentspec seed-steps/s and their ratio, for training alone (the
    step loop: setup and evaluations subtracted) and for a whole run (build + training + an
    evaluation before and after);
  - the cost of evaluation at the paper's cadence: `train()` evaluating every 1000 steps (10k
    train + 10k eval samples, all metrics) against the same run evaluating only at the ends.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

D, M, MULTI, C, B, N_TRAIN, LR = 100, 10, 10, 50, 16, 10_000, 0.01


def reference(steps: int) -> float:
    """Seed-steps/s of the original-style per-seed loop."""
    import torch

    torch.manual_seed(1)
    x = torch.randn(N_TRAIN, D, dtype=torch.float64) * 1.5
    teacher = torch.nn.Sequential(torch.nn.Linear(D, M), torch.nn.ReLU(), torch.nn.Linear(M, C)).double()
    with torch.no_grad():
        y = teacher(x)
    student = torch.nn.Sequential(torch.nn.Linear(D, M * MULTI), torch.nn.ReLU(), torch.nn.Linear(M * MULTI, C)).double()
    opt = torch.optim.SGD(student.parameters(), lr=LR)

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # J: train.loss=half_sse
        return 0.5 * (out - target).square().sum(dim=1).mean()

    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, N_TRAIN, (B,))
        opt.zero_grad()
        loss_fn(student(x[idx]), y[idx]).backward()
        opt.step()
    return steps / (time.perf_counter() - t0)


def studentspec_run(seeds: int, epochs: int, every: int, threads: int) -> tuple[float, float, float]:
    """Seconds of build(), of the batched `train()` on that setup, and of its evaluations, for the 4.1 workload."""
    from studentspec import build, load_config
    from studentspec import train

    cfg = load_config("configs/two_layer.yaml", [f"seeds={list(range(1, seeds + 1))}", f"train.epochs={epochs}", f"eval.every={every}",
                                                 f"train.threads={threads}", "student.multi=10"])
    t0 = time.perf_counter()
    s = build(cfg)
    t1 = time.perf_counter()
    result = train(cfg, progress=False, setup=s)
    return t1 - t0, time.perf_counter() - t1, result.eval_time


def worker(args: argparse.Namespace) -> dict[str, float]:
    """One process: reference rate, and batched run times with and without per-epoch evaluation."""
    import torch

    torch.set_num_threads(args.threads)
    ref = reference(args.ref_steps)
    build_s, lean, lean_eval = studentspec_run(args.seeds, args.epochs, args.epochs, args.threads)  # evaluates only before and after
    _, full, full_eval = studentspec_run(args.seeds, args.epochs, 1, args.threads)  # every 1000 steps, as in the paper
    seed_steps = args.seeds * args.epochs * 1000
    per_eval = full_eval / (args.epochs + 1)  # timed inside train()
    loop = lean - lean_eval
    return {"reference": ref, "build_s": build_s, "lean_s": lean, "full_s": full, "eval_s": per_eval, "loop_s": loop,
            "studentspec": seed_steps / loop, "studentspec_whole": seed_steps / (build_s + lean),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    """Spawn --repeats worker processes and print medians."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3, help="epochs of 1000 steps per batched run")
    p.add_argument("--ref-steps", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads for both the reference and studentspec")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    rows = []
    for r in range(args.repeats):
        cmd = [sys.executable, __file__, "--worker", "--seeds", str(args.seeds), "--epochs", str(args.epochs), "--ref-steps", str(args.ref_steps),
               "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"repeat {r + 1}: {rows[-1]}", file=sys.stderr)

    def med(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    def ratio(key: str) -> float:
        return statistics.median(row[key] / row["reference"] for row in rows)

    # paper cadence: the run evaluating every 1000 steps (epochs + 1 times) against its own step loop
    overhead = statistics.median(row["full_s"] / (row["full_s"] - (args.epochs + 1) * row["eval_s"]) for row in rows)
    print(f"| threads | reference seed-steps/s | studentspec S={args.seeds} training seed-steps/s | speed-up | whole run (build + 2 evaluations) seed-steps/s"
          " | speed-up | build (s) | one evaluation (s) | time with an evaluation every 1000 steps / training only | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.threads} | {med('reference'):.0f} | {med('studentspec'):.0f} | {ratio('studentspec'):.1f}x | {med('studentspec_whole'):.0f} | {ratio('studentspec_whole'):.1f}x"
          f" | {med('build_s'):.2f} | {med('eval_s'):.2f} | {overhead:.2f} | {max(r['peak_rss_mib'] for r in rows):.0f} |")


if __name__ == "__main__":
    main()
