"""studentspec: teacher-student specialization in deep ReLU / Leaky ReLU networks, batched over seeds.

The public API is loaded on first use (PEP 562), so `import studentspec.paper.figures` does not
pull in the trainer or the compiled kernel.
"""

import importlib
import os
from typing import Any

# MKL's conditional numerical reproducibility: without it a GEMM's rounding depends on where
# a matrix sits in memory, so a seed would not give the same bits alone and inside an ensemble.
# Read at MKL's first GEMM, so setting it here works even after `import torch`.
os.environ.setdefault("MKL_CBWR", "AUTO")
# PyTorch's transparent huge pages (THP_MEM_ALLOC_ENABLE=1) are left to the user: on a VM whose kernel compacts
# memory on a huge-page fault they made start-up 1-3x slower and the step ~8 % slower (BENCHMARKS.md, start-up).

__version__ = "0.1.0"

_API = {
    "Config": "config",
    "ConfigError": "config",
    "load_config": "pipelines",
    "build": "pipelines",
    "train": "pipelines",
    "record": "pipelines",
    "write_run": "pipelines",
    "Run": "store",
    "RunRecord": "store",
    "StoreError": "store",
    "load_run": "store",
    "write_record": "store",
    "load_sweep": "sweep.grid",
    "run_sweep": "sweep.grid",
    "SweepOptions": "sweep.grid",
    "TrainResult": "mlp.train",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'studentspec' has no attribute {name!r}")
