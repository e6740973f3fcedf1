"""Seed-steps/s of the docs/model.md 4.1 workload on a device, and the paper's two-layer grid projected on it.

For S in --sizes and each precision: build, one evaluation (without gradient norms) and one training step timed in
this process on d=100, m=10, multi=5 (the grid's middle size), C=50, batch 16, the torch path (the compiled step
is CPU-only). An ensemble of more than 32 seeds is PACKED grid points, as `sweep --pack` trains them: S / 32 members
of 32 seeds each (seeds 1..32, 33..64, ...), teacher.decay cycling through the grid's six p values, built one by one
and concatenated (mlp/pack.py). Projection: the grid's 72 configurations x 32 seeds x 1e5 steps + 101 evaluations
each, trained as one pack per (m, multi) point (its 6 p values x 32 seeds = 192 seeds, the most that pack), timed
at S = 192 and scaled by each point's FLOPs (sweep/cost.py), the 12 packs one after another.

    python benchmarks/bench_gpu.py [--device cuda] [--sizes 32,192,256,2048] [--steps 300] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch

from studentspec import load_config
from studentspec import pipelines
from studentspec.mlp.pack import pack
from studentspec.sweep.cost import job_cost

GRID = [(m, multi, p) for m in (5, 10, 20) for multi in (1, 2, 5, 10) for p in (0, 0.5, 1, 1.5, 2, 2.5)]  # docs/model.md 4.1


def workload(device: str, dtype: str, seeds: int, m: int = 10, multi: float = 5.0, steps: int = 1000) -> list[str]:
    """Overrides of configs/two_layer.yaml for one ensemble of `seeds` seeds on `device`."""
    return [f"seeds={list(range(1, seeds + 1))}", f"teacher.widths=[{m}]", f"student.multi={multi}", f"train.device={device}",
            f"train.dtype={dtype}", "train.kernel=torch", f"train.steps_per_epoch={steps}"]


def members(over: list[str], seeds: int) -> list[list[str]]:
    """The overrides of the packed grid points making up an ensemble of `seeds` seeds (one member if <= 32)."""
    per = min(32, seeds)
    return [[*over, f"seeds={list(range(1 + k * per, 1 + (k + 1) * per))}", f"teacher.decay={GRID[k % 6][2]}"] for k in range(seeds // per)]


def timed(over: list[str], steps: int, seeds: int) -> tuple[float, float, float]:
    """(build s, one evaluation s, one step s): two runs of one epoch, `steps` and 3 x `steps` long, evaluated at the start
    and the end only; their spans from the first to the last evaluation differ by 2 x `steps` steps exactly."""
    spans, t_build = [], 0.0
    for k in (steps, 3 * steps):
        cfgs = [load_config("configs/two_layer.yaml", [*m, "train.epochs=1", f"train.steps_per_epoch={k}", "eval.grad_norm=false"])
                for m in members(over, seeds)]
        t0 = time.perf_counter()
        setup = pack([pipelines.build(c) for c in cfgs]) if len(cfgs) > 1 else pipelines.build(cfgs[0])
        t_build = time.perf_counter() - t0
        stamps: list[float] = []
        pipelines.train(setup.cfg, progress=False, on_eval=lambda pts: stamps.append(time.perf_counter()), setup=setup)  # .item() syncs
        spans.append((stamps[0] - t0 - t_build, stamps[-1] - stamps[0]))
    t_step = (spans[1][1] - spans[0][1]) / (2 * steps)
    return t_build, spans[0][0], t_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default=None, help="ensemble sizes (default 32,192,256,2048 on a GPU, 4,16 on a CPU); above 32: packed grid points")
    ap.add_argument("--steps", type=int, default=300, help="training steps per timed span")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    sizes = [int(s) for s in (args.sizes or ("32,192,256,2048" if gpu else "4,16")).split(",")]
    card = torch.cuda.get_device_name(args.device) if gpu else platform.processor() or platform.machine()
    rows = []
    for dtype in ("float32", "float64"):
        for S in sizes:
            t_build, t_eval, t_step = timed(workload(args.device, dtype, S), args.steps, S)
            rows.append({"dtype": dtype, "seeds": S, "seed_steps_per_s": S / t_step if t_step else float("inf"), "t_step_ms": t_step * 1e3,
                         "t_eval_s": t_eval, "t_build_s": t_build})
            print(f"{dtype} S={S}: {rows[-1]['seed_steps_per_s']:.3g} seed-steps/s, {t_step * 1e3:.3f} ms/step, "
                  f"{t_eval:.2f} s/evaluation, build {t_build:.2f} s", flush=True)
    projections = {}
    for dtype in ("float32", "float64"):
        # the packed grid trains one pack of 6 x 32 = 192 seeds per (m, multi): the measured size closest to it
        ref = min((r for r in rows if r["dtype"] == dtype), key=lambda r: abs(r["seeds"] - 192))
        S = ref["seeds"]
        ref_cost = job_cost(load_config("configs/two_layer.yaml", workload(args.device, dtype, S)))
        seconds = 0.0
        for m, multi, p in GRID:  # 32 seeds per configuration, S at a time (packs of the same (m, multi))
            c = job_cost(load_config("configs/two_layer.yaml", [*workload(args.device, dtype, 32, m, multi), f"teacher.decay={p}"]))
            seconds += (c.seed_steps / 32 * ref["t_step_ms"] / 1e3 * c.step_flops / ref_cost.step_flops * 32 / S
                        + c.evals * ref["t_eval_s"] * c.eval_flops / ref_cost.eval_flops * 32 / S)
        projections[dtype] = seconds
        print(f"paper two-layer grid (72 configs x 32 seeds x 1e5 steps, evaluated every 1000), {dtype}, ensembles of {S}: "
              f"projected {seconds / 60:.1f} min on {card}")
    result = {"device": args.device, "card": card, "torch": torch.__version__, "rows": rows, "grid_minutes": {k: v / 60 for k, v in projections.items()},
              "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
              "peak_device_gb": torch.cuda.max_memory_allocated() / 2**30 if gpu else None, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    print("| dtype | S | seed-steps/s | ms/step | s/evaluation |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['seeds']} | {r['seed_steps_per_s']:.3g} | {r['t_step_ms']:.3f} | {r['t_eval_s']:.2f} |")
    print(f"peak RSS {result['peak_rss_gb']:.2f} GiB" + (f", peak device memory {result['peak_device_gb']:.2f} GiB" if gpu else ""))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
