"""The deep workload (docs/model.md 4.3) side by side: studentspec's step against a plain per-seed PyTorch loop.

Workload: teacher [50, 75, 100, 125] (d = 20, C = 100), students multi x those widths, float32, batch 64, shuffled
epochs of a fixed 20,000-sample Gaussian (std 10) training set, lr 0.1, the original multi-layer code's objective
nn.MSELoss (mean over batch and outputs = (2/C) J, losses.py `mse`).

- plain loop: one seed at a time, nn.Sequential of nn.Linear + ReLU, nn.MSELoss, torch.optim.SGD, a torch.randperm
  order per epoch, labels from a random teacher net of the same shape (its numbers do not change the cost);
- studentspec: S seeds in one batched `train()`, timed by the cost model's `measure` (sweep/cost.py: seconds per
  step of the ensemble over a span of ~0.3 s, and per evaluation: the four layers' correlations and losses on the
  10,240-sample eval set and the training set).

Printed per (multi, S), medians over --repeats separate processes, both at --threads threads in the same process:
seed-steps/s of each and their ratio, GFLOP/s and the fraction of the float32 GEMM peak (a 2048^2 matmul, same
process and threads), and the cost of one evaluation against one training epoch (20,000 / 64 steps).

On a GPU (--device cuda; benchmarks/gpu_check.sh runs it) both sides run on the device, timed to a synchronize, and the
peak is a float32 4096^2 matmul there.

    python benchmarks/bench_deep.py [--repeats 3] [--threads 1] [--multis 2 5] [--seeds 1 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

D, C, WIDTHS, BATCH, N_TRAIN, N_EVAL, LR = 20, 100, [50, 75, 100, 125], 64, 20_000, 10_240, 0.1


def sync(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def gemm_peak(device: str = "cpu") -> float:
    """Float32 GFLOP/s of a square matmul on `device` (2048^2 on the CPU, 4096^2 on a GPU; best of 5)."""
    import torch

    n = 4096 if device.startswith("cuda") else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def plain_loop(multi: int, seeds: int, steps: int, device: str = "cpu") -> float:
    """Seed-steps/s of the per-seed loop the original multi-layer code runs."""
    import torch
    from torch import nn

    def mlp(widths: list[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        for a, b in zip([D, *widths], widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(widths[-1], C))

    total = 0.0
    for seed in range(seeds):
        torch.manual_seed(seed)
        x = torch.randn(N_TRAIN, D, device=device) * 10
        with torch.no_grad():
            y = mlp(WIDTHS).to(device)(x)
        student = mlp([w * multi for w in WIDTHS]).to(device)
        opt, loss_fn = torch.optim.SGD(student.parameters(), lr=LR), nn.MSELoss()
        order = torch.randperm(N_TRAIN, device=device)
        sync(device)
        t0 = time.perf_counter()
        for i in range(steps):
            j = (i * BATCH) % (N_TRAIN - BATCH + 1)
            if j < BATCH:
                order = torch.randperm(N_TRAIN, device=device)
            idx = order[j : j + BATCH]
            opt.zero_grad()
            loss_fn(student(x[idx]), y[idx]).backward()
            opt.step()
        sync(device)
        total += time.perf_counter() - t0
    return seeds * steps / total


def studentspec_rates(multi: int, seeds: int, device: str = "cpu") -> tuple[float, float, float]:
    """(seed-steps/s, GFLOP per ensemble step, seconds per evaluation) of studentspec's batched step."""
    from studentspec.config import build_config
    from studentspec.sweep.cost import measure

    cfg = build_config(
        {
            "seeds": list(range(1, seeds + 1)),
            "input_dim": D,
            "output_dim": C,
            "teacher": {"widths": WIDTHS, "activation": "relu", "recipe": "deep", "tune": True},
            "student": {"multi": float(multi), "init_std": None},
            "data": {"kind": "gaussian", "std": 10.0, "n_train": N_TRAIN, "n_eval": N_EVAL},
            "train": {
                "lr": LR,
                "batch_size": BATCH,
                "sampling": "shuffle",
                "steps_per_epoch": None,
                "epochs": 1,
                "loss": "mse",
                "dtype": "float32",
                "device": device,
            },
            "eval": {"grad_norm": False},
        }
    )
    s = measure(cfg)
    return seeds / s.t_step, s.cost.step_flops / 1e9, s.t_eval


def worker(multi: int, seeds: int, threads: int, device: str) -> dict[str, float]:
    """One process's figures."""
    import torch

    torch.set_num_threads(threads)
    peak = gemm_peak(device)
    ours, gflop_step, t_eval = studentspec_rates(multi, seeds, device)
    plain = plain_loop(multi, seeds, steps=600, device=device)
    epoch = N_TRAIN // BATCH * seeds / ours  # seconds of one training epoch of the ensemble
    gflops = ours / seeds * gflop_step
    return {"plain": plain, "ours": ours, "gflops": gflops, "peak": peak, "eval_s": t_eval, "epoch_s": epoch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--multis", type=int, nargs="+", default=[2, 5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (both sides on the GPU)")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--worker", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.device)))
        return
    print(f"device {args.device}, threads {args.threads}, medians of {args.repeats} processes")
    rows = []
    print("multi  S  plain seed-steps/s  studentspec  ratio  GFLOP/s  of fp32 peak  evaluation / epoch")
    for multi in args.multis:
        for seeds in args.seeds:
            runs = []
            for _ in range(args.repeats):
                cmd = [sys.executable, __file__, "--worker", str(multi), str(seeds), str(args.threads)]
                cmd += ["--device", args.device]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                runs.append(json.loads(out.strip().splitlines()[-1]))
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            ratio = statistics.median(r["ours"] / r["plain"] for r in runs)
            share = statistics.median(r["gflops"] / r["peak"] for r in runs)
            print(
                f"{multi:>5} {seeds:>2} {med['plain']:>19.0f} {med['ours']:>12.0f} {ratio:>6.2f} {med['gflops']:>8.1f} "
                f"{share:>13.0%} {med['eval_s']:>8.3f} s / {med['epoch_s']:.2f} s"
            )
            rows.append({"multi": multi, "seeds": seeds, "ratio": ratio, "share_of_peak": share, **med})
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": args.device, "threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
