"""Import studentspec first, so its MKL reproducibility setting precedes any GEMM."""

import studentspec  # noqa: F401
