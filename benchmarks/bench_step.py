"""Training-step throughput on the docs/model.md 4.1 workload, next to the GEMM peak measured in the same process.

Workload: d=100 inputs, student hidden n (--hidden, default 100; built as teacher widths [n] x
multi 1, the same student shapes as the paper's [10] x 10), C=50 outputs,
batch B=16, MSE, plain SGD, S seeds trained together. The step timed is the one train() takes:
the compiled step (ckernel, float64 on an AVX2 CPU) where it applies, else the fused
hand-derived torch path; where the compiled step applies, the torch path is timed in the same
process too (compiled, torch, compiled again) and the table gives their ratio.
FLOPs per seed-step, counted explicitly (bias adds, ReLU, loss and the SGD axpy ignored):
    forward 2B(dn + nC) + weight grads 2B(dn + nC) + input grad of layer 2 2BnC = B(4dn + 6nC),
i.e. 1.12 MFLOP at d=100, n=100, C=50, B=16; GFLOP/s = seed-steps/s * that / 1e9.
GEMM peak: best of several 2048x2048 matmuls at the same dtype and thread count, 2n^3/t.
Every (S, n, dtype, threads) point runs --repeats times, each in its own subprocess (repeats are
interleaved across points, so a machine stall hits different points); the table shows medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

D, N, C, B = 100, 100, 50, 16


def flops_per_seed_step(n: int = N) -> int:
    """FLOPs of one seed-step with student hidden width n (formula in the module docstring)."""
    return B * (4 * D * n + 6 * n * C)
LR = 0.01


def gemm_peak(dtype: str, n: int = 2048, runs: int = 5) -> float:
    """Best GFLOP/s of `runs` n x n matmuls (after one warm-up) at the current thread count."""
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    c = torch.mm(a, b)
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def timed(fn: Callable[[], int], min_time: float) -> float:
    """Steps per second of repeated fn() calls (each returns its step count) over >= min_time seconds."""
    steps, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < min_time or steps == 0:
        steps += fn()
    return steps / elapsed


def peak_rss_mib() -> float:
    """This process's peak resident set size, MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(size: int, dtype: str, threads: int, steps: int, min_time: float, autograd: bool, n: int = N) -> dict[str, float]:
    """One measurement in this process: GEMM peak, step rate on pre-drawn batches, full-loop rate."""
    import torch

    torch.set_num_threads(threads)
    from studentspec.mlp import backprop
    from studentspec.mlp import kernel as ckernel
    from studentspec.ensemble import losses
    from studentspec.config import load_config
    from studentspec.ensemble.losses import per_seed_loss
    from studentspec.ensemble.optim import Optimizer
    from studentspec.mlp.train import build

    seeds = list(range(1, size + 1))
    over = [f"seeds={seeds}", f"teacher.widths=[{n}]", "student.multi=1", f"input_dim={D}", f"output_dim={C}"]
    over += [f"train.batch_size={B}", f"train.dtype={dtype}", f"train.steps_per_epoch={steps}", "data.n_eval=2"]
    s = build(load_config(None, over))
    net = s.student
    batches = list(s.stream.epoch(0))  # pre-drawn: data time excluded

    def torch_step(x: torch.Tensor, y: torch.Tensor) -> None:  # the trainer's fused SGD step on the torch path
        with torch.no_grad():
            tr = net.trace(x)
            out, hs, zs = tr.out, tr.inputs, tr.pre
            loss, g = losses.output_grad(out, y, "half_sse")
            healthy = bool(torch.isfinite(loss).all())
            backprop.backward(net, hs, zs, g, sgd_lr=LR if healthy else None)

    compiled = None if ckernel.unsupported(net, "half_sse", "sgd") else ckernel.CompiledMLP(net, "half_sse")
    alive = torch.ones(size, dtype=torch.bool)

    def c_step(x: torch.Tensor, y: torch.Tensor) -> None:  # the compiled step with the trainer's finiteness check
        assert compiled is not None
        bool(torch.isfinite(compiled(x, y, LR, alive)).all())

    step = torch_step if compiled is None else c_step

    def pass_predrawn() -> int:
        for x, y in batches:
            step(x, y)
        return len(batches)

    def pass_torch() -> int:
        for x, y in batches:
            torch_step(x, y)
        return len(batches)

    epoch = iter(range(1, 1 << 30))

    def pass_stream() -> int:  # the train() loop body including the batches: gathered in the kernel where it runs
        e = next(epoch)
        if compiled is None:
            for x, y in s.stream.epoch(e):
                step(x, y)
        else:
            for idx in s.stream.indices(e):
                bool(torch.isfinite(compiled.indexed(s.stream.x_train, s.stream.y_train, idx, lr=LR, alive=alive)).all())
        return steps

    peak = gemm_peak(dtype)
    for x, y in batches[:20]:  # warm-up
        step(x, y)
    rate = timed(pass_predrawn, min_time)
    res = {"peak": peak, "rate": rate, "full_rate": timed(pass_stream, min_time), "kernel": 0.0 if compiled is None else 1.0}
    if compiled is not None:  # compiled, torch, compiled again: the ratio of neighbours in one process
        res["torch_rate"] = timed(pass_torch, min_time)
        res["rate_again"] = timed(pass_predrawn, min_time)
    if autograd:
        params = net.parameters()
        opt = Optimizer(params, "sgd")

        def pass_autograd() -> int:  # the trainer's autograd path, same step otherwise
            for x, y in batches:
                out, _ = net.forward(x, training=True)
                loss = per_seed_loss(out, y, "half_sse")
                grads = list(torch.autograd.grad(loss.sum(), params))
                if bool(torch.isfinite(loss).all()):
                    opt.step(grads, LR)
            return len(batches)

        res["autograd_rate"] = timed(pass_autograd, min_time)
        res["manual_rate_again"] = timed(pass_predrawn, min_time)
    res["peak_rss_mib"] = peak_rss_mib()
    return res


def spawn(size: int, dtype: str, threads: int, n: int, args: argparse.Namespace) -> dict[str, float]:
    """Run one worker in a fresh subprocess with the thread count pinned; its JSON result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", "--sizes", str(size), "--dtypes", dtype, "--threads", str(threads), "--hidden", str(n)]
    cmd += ["--steps", str(args.steps), "--min-time", str(args.min_time)] + (["--autograd"] if args.autograd else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fmt(values: list[float], spread: bool = True) -> str:
    """Median, with [min-max] when spread."""
    med = statistics.median(values)
    return f"{med:.4g} [{min(values):.4g}-{max(values):.4g}]" if spread else f"{med:.4g}"


def main() -> None:
    """Parse the CLI; run a worker, or the whole grid and print a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", help="ensemble sizes S (default 1 8 32 128)")
    p.add_argument("--hidden", type=int, nargs="+", help="student hidden widths n (default 100)")
    p.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], help="default both")
    p.add_argument("--threads", type=int, nargs="+", help="torch thread counts (default 1 2)")
    p.add_argument("--repeats", type=int, help="subprocesses per point (default 5)")
    p.add_argument("--steps", type=int, default=200, help="batches pre-drawn per pass (and steps per stream epoch)")
    p.add_argument("--min-time", type=float, help="seconds each timed loop runs at least (default 1.0)")
    p.add_argument("--autograd", action="store_true", help="also time the autograd step (same process)")
    p.add_argument("--quick", action="store_true", help="smoke test: S in {1, 32}, float64, 1 thread, 2 repeats")
    p.add_argument("--merge", nargs="+", metavar="LOG", help="only print the table of earlier runs' stderr logs")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.merge:
        table(merge(a.merge), a.autograd)
        return
    q = a.quick
    a.sizes = a.sizes or ([1, 32] if q else [1, 8, 32, 128])
    a.dtypes = a.dtypes or (["float64"] if q else ["float32", "float64"])
    a.threads = a.threads or ([1] if q else [1, 2])
    a.repeats = a.repeats or (2 if q else 5)
    a.min_time = a.min_time or (0.3 if q else 1.0)
    if a.worker:
        print(json.dumps(worker(a.sizes[0], a.dtypes[0], a.threads[0], a.steps, a.min_time, a.autograd, (a.hidden or [N])[0])))
        return
    a.hidden = a.hidden or [N]
    points = [(s, d, t, n) for t in a.threads for d in a.dtypes for n in a.hidden for s in a.sizes]
    runs: dict[tuple[int, str, int, int], list[dict[str, float]]] = {pt: [] for pt in points}
    for r in range(a.repeats):  # interleaved: repeat r of every point before repeat r+1
        for pt in points:
            res = spawn(*pt, a)
            runs[pt].append(res)
            print(f"repeat {r + 1}/{a.repeats} S={pt[0]} {pt[1]} threads={pt[2]} n={pt[3]}: {json.dumps(res)}", file=sys.stderr, flush=True)
    table(runs, a.autograd)


def merge(logs: list[str]) -> dict[tuple[int, str, int, int], list[dict[str, float]]]:
    """Results from the stderr logs of earlier runs ('repeat i/k S=.. dtype threads=.. n=..: {json}' lines)."""
    runs: dict[tuple[int, str, int, int], list[dict[str, float]]] = {}
    for log in logs:
        for line in open(log):
            m = re.match(r"repeat \S+ S=(\d+) (\w+) threads=(\d+) n=(\d+): (\{.*\})$", line.strip())
            if m:
                runs.setdefault((int(m[1]), m[2], int(m[3]), int(m[4])), []).append(json.loads(m[5]))
    return dict(sorted(runs.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][3], kv[0][0])))


def table(runs: dict[tuple[int, str, int, int], list[dict[str, float]]], autograd: bool) -> None:
    """Print the markdown table of medians [min-max] over each point's processes."""
    head = ("| S | n | dtype | threads | step | processes | seed-steps/s median [min-max] | GFLOP/s | GEMM peak GFLOP/s | % of peak"
            " | full-loop seed-steps/s | torch-path seed-steps/s | compiled / torch | peak RSS MiB |")
    print(head + (" autograd seed-steps/s | hand-derived / autograd |" if autograd else ""))
    print("|" + "---|" * (head.count("|") - 1 + (2 if autograd else 0)))
    rss = lambda rs: f" {max(r.get('peak_rss_mib', float('nan')) for r in rs):.0f} |"  # noqa: E731
    for (size, dtype, threads, n), rs in runs.items():
        ss = [size * r["rate"] for r in rs]
        gf = [x * flops_per_seed_step(n) / 1e9 for x in ss]
        frac = [100 * g / r["peak"] for g, r in zip(gf, rs)]
        kernel = "compiled" if all(r.get("kernel") for r in rs) else "torch"
        row = f"| {size} | {n} | {dtype} | {threads} | {kernel} | {len(rs)} | {fmt(ss)} | {fmt(gf, False)} | {fmt([r['peak'] for r in rs])} | {fmt(frac)} | {fmt([size * r['full_rate'] for r in rs])} |"
        if kernel == "compiled":
            ratio = [(r["rate"] + r["rate_again"]) / 2 / r["torch_rate"] for r in rs]
            row += f" {fmt([size * r['torch_rate'] for r in rs])} | {fmt(ratio)} |"
        else:
            row += " | |"
        row += rss(rs)
        if autograd:
            ratio = [(r["rate"] + r["manual_rate_again"]) / 2 / r["autograd_rate"] for r in rs]
            row += f" {fmt([size * r['autograd_rate'] for r in rs])} | {fmt(ratio)} |"
        print(row)


if __name__ == "__main__":
    main()
