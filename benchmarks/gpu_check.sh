#!/usr/bin/env bash
# The prepared GPU check (issue 15): the CUDA tests, then seed-steps/s on the device and the paper's two-layer grid
# projected on it, as a table and $OUT/gpu_check.json. Under 8 minutes on one GPU; on a machine without CUDA it runs
# the same steps on the CPU at small sizes, the CUDA tests skipped. Uses the repository's src/ without installing it.
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
timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.txt"
timeout 300 "$PY" benchmarks/bench_gpu.py --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.md"
