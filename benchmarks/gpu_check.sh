#!/usr/bin/env bash
# The prepared GPU check (issues 15, 26): the CUDA tests; seed-steps/s on the device and the paper's two-layer grid
# projected on it ($OUT/gpu_check.json); the deep workload of 4.3 (studentspec's batched step beside a plain per-seed
# PyTorch loop, multi 2 and 5, S = 1 and 4; $OUT/deep.json); and the conv protocol of 4.4 projected from conv steps
# and evaluations timed on the device (teacher, pruned teacher, a student epoch per multi; $OUT/conv_cost.md).
# Under 8 minutes on one GPU (each step has its own timeout); on a machine without CUDA it runs the same steps on the
# CPU at small sizes, the CUDA tests skipped. Uses the repository's src/ without installing it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_check}"  # the device tool sets $OUT
mkdir -p "$OUT"
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" - <<'PYEOF'
import importlib.util, sys
missing = [m for m in ("torch", "numpy", "pandas", "pyarrow", "pydantic", "yaml", "tqdm", "filelock", "scipy", "pytest")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing Python packages: {', '.join(missing)} (carry them as wheels)")
import torch
print(f"gpu_check: torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else " (CUDA tests are skipped)"))
PYEOF
set -o pipefail
timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.txt"
timeout 180 "$PY" benchmarks/bench_gpu.py --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.md"
if "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  DEEP=(--device cuda --multis 2 5 --seeds 1 4)
else
  DEEP=(--device cpu --multis 2 --seeds 1)  # the CPU's figures are BENCHMARKS.md's; here only that it runs
fi
timeout 120 "$PY" benchmarks/bench_deep.py --repeats 1 "${DEEP[@]}" --out "$OUT/deep.json" 2>&1 | tee "$OUT/deep.md"
# configs/cifar10.yaml trains on cuda: the dry run times its conv steps there (on the CPU, with a note, elsewhere)
timeout 60 "$PY" -c 'from studentspec.cli import main; raise SystemExit(main())' reproduce cifar10 --scale paper \
  --dry-run 2>&1 | tee "$OUT/conv_cost.md"
