"""studentspec against a reference of the original per-seed loop, and the cost of evaluation.

Reference (written from docs/model.md 4.1, the original code's workload): one seed at a time, a
plain float64 nn.Sequential(Linear(d, n), ReLU, Linear(n, C)) student, torch.optim.SGD(lr 0.01)
on the paper's J (1/2 sum over outputs, mean over the batch, as the original two-layer code), batches of 16 drawn with replacement from a fixed 10k training set every step.
studentspec: the same workload for S seeds in one batched `train()` (float64); both at --threads
torch threads (default 1).

Printed, each a median over --repeats separate processes:
  - reference seed-steps/s, studentspec seed-steps/s and their ratio, for training alone (the
    step loop: setup and evaluations subtracted) and for a whole run (build + training + an
    evaluation before and after);
  - the cost of evaluation at the paper's cadence: `train()` evaluating every 1000 steps (10k
    train + 10k eval samples, all metrics) against the same run evaluating only at the ends;
  - the whole epoch (1000 steps + its evaluation at the paper's cadence), for the evaluation in
    float64 (the default) and in float32 (eval.dtype, sums in float64): seed-steps/s from the
    evaluation timestamps, (t_last - t_first) / epochs, its ratio to the reference measured in the
    same process, its GFLOP/s and the fraction of the float64 GEMM peak (a 2048^2 matmul, same process
    and threads). --isa default avx2 runs each repeat with both builds of the compiled kernel.

FLOPs per seed and epoch (bias adds, activations and the loss ignored): 1000 steps of B(4dn + 6nC)
(bench_step.py) + an evaluation: forward 2(dn + nC) on 20k samples, full-batch gradient 2(dn + 2nC)
on the 10k training samples and the correlation cross products 2mn on 20k samples; at d=100, n=100,
C=50, m=10: 1.12 + 0.60 + 0.40 + 0.04 = 2.16 GFLOP. The original code itself, run by hand on this
machine at 2 threads with its own evaluation, did 2.2k seed-steps/s (issue 15): the reference loop
below (training only) must not be slower, or the ratio flatters studentspec; both are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

D, M, MULTI, C, B, N_TRAIN, LR = 100, 10, 10, 50, 16, 10_000, 0.01
N = M * MULTI
ORIGINAL = 2200  # seed-steps/s of the original code with its evaluation, 2 threads, this machine (issue 15)
EPOCH_FLOPS = (1000 * B * (4 * D * N + 6 * N * C) + 20_000 * 2 * (D * N + N * C) + N_TRAIN * 2 * (D * N + 2 * N * C)
               + 20_000 * 2 * M * N)


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


def studentspec_run(seeds: int, epochs: int, every: int, threads: int, eval_dtype: str = "float64") -> tuple[float, float, float, float]:
    """Seconds of build(), of the batched `train()` on that setup, of its evaluations, and of one whole epoch (steps +
    evaluation, from the evaluation timestamps), for the 4.1 workload."""
    from studentspec import build, load_config
    from studentspec import train

    cfg = load_config("configs/two_layer.yaml", [f"seeds={list(range(1, seeds + 1))}", f"train.epochs={epochs}", f"eval.every={every}",
                                                 f"train.threads={threads}", f"student.multi={MULTI}", f"eval.dtype={eval_dtype}"])
    t0 = time.perf_counter()
    s = build(cfg)
    t1 = time.perf_counter()
    stamps: list[float] = []
    result = train(cfg, progress=False, setup=s, on_eval=lambda points: stamps.append(time.perf_counter()))
    return t1 - t0, time.perf_counter() - t1, result.eval_time, (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def worker(args: argparse.Namespace) -> dict[str, float]:
    """One process: reference rate, and batched run times with and without per-epoch evaluation."""
    import torch

    from bench_step import gemm_peak

    torch.set_num_threads(args.threads)
    ref = reference(args.ref_steps)
    build_s, lean, lean_eval, _ = studentspec_run(args.seeds, args.epochs, args.epochs, args.threads)  # evaluates only before and after
    _, full, full_eval, epoch = studentspec_run(args.seeds, args.epochs, 1, args.threads)  # every 1000 steps, as in the paper
    *_, epoch32 = studentspec_run(args.seeds, args.epochs, 1, args.threads, "float32")
    seed_steps = args.seeds * args.epochs * 1000
    per_eval = full_eval / (args.epochs + 1)  # timed inside train()
    loop = lean - lean_eval
    return {"reference": ref, "build_s": build_s, "lean_s": lean, "full_s": full, "eval_s": per_eval, "loop_s": loop,
            "studentspec": seed_steps / loop, "studentspec_whole": seed_steps / (build_s + lean),
            "epoch": args.seeds * 1000 / epoch, "epoch32": args.seeds * 1000 / epoch32, "gemm_peak": gemm_peak("float64"),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _cpu() -> str:
    """The CPU's model name (/proc/cpuinfo), for the table: peaks differ from machine to machine."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main() -> None:
    """Spawn --repeats worker processes per kernel build (interleaved) and print medians."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3, help="epochs of 1000 steps per batched run")
    p.add_argument("--ref-steps", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads for both the reference and studentspec")
    p.add_argument("--isa", nargs="+", default=["default"], choices=["default", "avx2"],
                   help="kernel builds to compare: default (512-bit where the CPU has AVX-512F) and/or avx2 (STUDENTSPEC_KERNEL_ISA=avx2)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    runs: dict[str, list[dict[str, float]]] = {isa: [] for isa in args.isa}
    for r in range(args.repeats):
        for isa in args.isa:
            cmd = [sys.executable, __file__, "--worker", "--seeds", str(args.seeds), "--epochs", str(args.epochs), "--ref-steps",
                   str(args.ref_steps), "--threads", str(args.threads)]
            env = os.environ | ({"STUDENTSPEC_KERNEL_ISA": "avx2"} if isa == "avx2" else {})
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            runs[isa].append(json.loads(out.strip().splitlines()[-1]))
            print(f"repeat {r + 1} ({isa}): {runs[isa][-1]}", file=sys.stderr)
    from studentspec.mlp import kernel

    builds = {"default": kernel.isa(), "avx2": "avx2"}
    print(f"{_cpu()}, {args.threads} thread(s), S={args.seeds}, medians of {args.repeats} processes per kernel build\n")
    print("| kernel | threads | reference seed-steps/s | studentspec training seed-steps/s | speed-up | whole run (build + 2 evaluations)"
          " seed-steps/s | speed-up | build (s) | one evaluation (s) | time with an evaluation every 1000 steps / training only | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for isa, rows in runs.items():
        def med(key: str) -> float:
            return statistics.median(row[key] for row in rows)

        def ratio(key: str) -> float:
            return statistics.median(row[key] / row["reference"] for row in rows)

        # paper cadence: the run evaluating every 1000 steps (epochs + 1 times) against its own step loop
        overhead = statistics.median(row["full_s"] / (row["full_s"] - (args.epochs + 1) * row["eval_s"]) for row in rows)
        print(f"| {builds[isa]} | {args.threads} | {med('reference'):.0f} | {med('studentspec'):.0f} | {ratio('studentspec'):.1f}x"
              f" | {med('studentspec_whole'):.0f} | {ratio('studentspec_whole'):.1f}x | {med('build_s'):.2f} | {med('eval_s'):.2f} | {overhead:.2f}"
              f" | {max(r['peak_rss_mib'] for r in rows):.0f} |")
    print(f"\nWhole epoch (1000 steps + its evaluation), {EPOCH_FLOPS / 1e9:.2f} GFLOP per seed; the original code: {ORIGINAL} seed-steps/s"
          " (2 threads, with its evaluation, on the issue's machine)\n")
    print("| kernel | threads | evaluation | reference seed-steps/s | studentspec seed-steps/s median [min-max] | / reference median [min-max] | / original code"
          " | GFLOP/s | % of GEMM peak | GEMM peak GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for isa, rows in runs.items():
        for key, name in (("epoch", "float64"), ("epoch32", "float32 (eval.dtype)")):
            rates = sorted(row[key] for row in rows)
            rate = statistics.median(rates)
            frac = statistics.median(100 * r[key] * EPOCH_FLOPS / 1e12 / r["gemm_peak"] for r in rows)
            ratios = sorted(r[key] / r["reference"] for r in rows)  # each process against its own reference
            print(f"| {builds[isa]} | {args.threads} | {name} | {statistics.median(r['reference'] for r in rows):.0f}"
                  f" | {rate:.0f} [{rates[0]:.0f}-{rates[-1]:.0f}] | {statistics.median(ratios):.1f}x [{ratios[0]:.1f}-{ratios[-1]:.1f}]"
                  f" | {rate / ORIGINAL:.1f}x | {rate * EPOCH_FLOPS / 1e12:.1f} | {frac:.0f} | {statistics.median(r['gemm_peak'] for r in rows):.1f} |")


if __name__ == "__main__":
    main()
