"""The online-learning ODE engine (theory/ode): seconds to integrate, medians over separate processes.

Cases (one seed, Euler, dt = 0.01, B = 1, output times 0 and t_end only; eta 0.5, ReLU 0.2):
  erf soft committee machine K = 8, M = 4 (C = 1, second layer frozen at 1) to t = 100 (target: under 1.75 s on
  2 cores, the time of a compiled C++ integrator of the same equations);
  erf K = 20, M = 10 (C = 1, frozen) to t = 100;
  ReLU K = 8, M = 4 with the Monte Carlo second-order term (mc_samples draws) to t = 10.
Each repeat is a fresh process; the timing is OdeSolution.seconds after a warm-up call (imports, and numba's compile or
cache load, excluded; "first" is the warm-up's seconds). The erf cases run with numba (theory/ode/fast.py, the extra
`fast`) where it is installed, and the K = 8 one also without it (STUDENTSPEC_ODE_NUMBA=0: the numpy form).

    .venv/bin/python benchmarks/bench_ode.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CASES = {
    "erf_scm_K8_M4_t100": dict(act="erf", K=8, M=4, t_end=100.0, mc=20000, eta=0.5),
    "erf_K20_M10_t100": dict(act="erf", K=20, M=10, t_end=100.0, mc=20000, eta=0.5),
    # eta 0.2: at 0.5 the unbounded ReLU committee of 8 diverges (so does the linear one, whose ODE is exact)
    "relu_mc20000_K8_M4_t10": dict(act="relu", K=8, M=4, t_end=10.0, mc=20000, eta=0.2),
}


def worker(act: str, K: int, M: int, t_end: float, mc: int, eta: float) -> dict[str, float]:
    """Integrate one case; seconds and right-hand-side evaluations per second."""
    import numpy as np

    from studentspec.theory import ode

    rng = np.random.default_rng(0)
    d = 1000
    W = rng.standard_normal((1, d, K)) / np.sqrt(d) * 0.5
    Wt = rng.standard_normal((1, d, M)) / np.sqrt(d)

    def tr(a: np.ndarray) -> np.ndarray:
        return np.swapaxes(a, 1, 2)

    state = ode.OdeState(tr(W) @ W, tr(W) @ Wt, tr(Wt) @ Wt, np.ones((1, K, 1)), np.ones((1, M, 1)))
    s = ode.OdeSettings(
        act, 0.0, eta=eta, eta_v=0.0, train_first=True, batch=1, input_dim=d, loss="half_sse", mc_samples=mc
    )
    first = ode.solve(state, s, t_end=s.dt).seconds  # one step: numba's compile or cache load, first-call costs
    sol = ode.solve(state, s, t_end=t_end, t_eval=np.array([0.0, t_end]))
    evals = round(t_end / s.dt)
    return {"seconds": sol.seconds, "rhs_per_s": evals / sol.seconds, "J_end": float(sol.J[-1, 0]), "first": first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (OMP/OPENBLAS/MKL_NUM_THREADS)")
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases (default: all)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(**CASES[a.worker])))
        return
    env = {**os.environ, **{k: str(a.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    print(f"threads={a.threads} repeats={a.repeats} (separate processes; median)")
    from studentspec.theory.ode import fast

    variants = [(name, "1") for name in a.case or CASES]
    if fast.available() and "erf_scm_K8_M4_t100" in (a.case or CASES):
        variants.append(("erf_scm_K8_M4_t100", "0"))
    for name, numba in variants:
        runs = []
        for _ in range(a.repeats):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", name],
                env={**env, "STUDENTSPEC_ODE_NUMBA": numba},
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(out.stdout))
        sec = statistics.median(r["seconds"] for r in runs)
        rate = statistics.median(r["rhs_per_s"] for r in runs)
        each = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        mc = f"; mc_samples {CASES[name]['mc']}" if CASES[name]["act"] == "relu" else ""
        path = "numpy" if numba == "0" or not fast.available() or CASES[name]["act"] != "erf" else "numba"
        print(
            f"{name:24s} {path:5s} {sec:8.2f} s  {rate:7.0f} RHS evals/s  (runs: {each}; first call "
            f"{statistics.median(r['first'] for r in runs):.2f} s; J_end {runs[0]['J_end']:.4g}{mc})"
        )


if __name__ == "__main__":
    main()
