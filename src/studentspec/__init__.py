"""studentspec: teacher-student specialization in deep ReLU / Leaky ReLU networks, batched over seeds."""

import os

# MKL's conditional numerical reproducibility: without it a GEMM's rounding depends on where
# a matrix sits in memory, so a seed would not give the same bits alone and inside an ensemble.
# Read at MKL's first GEMM, so setting it here works even after `import torch`.
os.environ.setdefault("MKL_CBWR", "AUTO")
# Transparent huge pages for PyTorch's large CPU buffers: an ensemble's weights span thousands of
# 4 KiB pages, and the TLB misses cost a large ensemble's step ~20 % (BENCHMARKS.md).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .config import Config, ConfigError, load_config
from .store import Run, StoreError, load_run, write_run
from .sweep.grid import load_sweep
from .mlp.train import TrainResult, build, train

__all__ = ["Config", "ConfigError", "Run", "StoreError", "TrainResult", "build", "load_config", "load_run", "load_sweep", "train", "write_run"]
__version__ = "0.1.0"
