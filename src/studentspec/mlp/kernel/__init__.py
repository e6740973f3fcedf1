"""The compiled SGD step (csrc/sgd_step.c): built with the system C compiler on first use, cached.

It covers the paper's hot loop (plain MLP, ReLU/Leaky ReLU, MSE/CE, plain SGD, float64 or
float32 on the CPU) and needs AVX2 + FMA. Everywhere else, or with no compiler, training takes the torch path
(backprop.py); `train.kernel: c` asks for this one and fails with a one-line reason instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
from pathlib import Path

import torch
from torch import Tensor

from ...ensemble import activations
from ...ensemble.atomic import atomic_write
from ...ensemble.losses import KERNEL_IDS
from ..nets import Net

SOURCE = Path(__file__).with_name("sgd_step.c")
SOURCES = [SOURCE, SOURCE.with_name("sgd_step_impl.h")]  # the second is #included by the first
SUFFIX = {torch.float64: "f64", torch.float32: "f32"}
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-std=c11", "-shared", "-fPIC"]
MAX_LAYERS = 63  # the C side keeps one pointer per layer in a fixed array


class _CompileFailed(Exception):
    """The compiler rejected the kernel source (its message is kept by the caller)."""


def cache_dir() -> Path:
    """Where the compiled library lives: $STUDENTSPEC_CACHE, else $XDG_CACHE_HOME/studentspec, else ~/.cache/studentspec."""
    if os.environ.get("STUDENTSPEC_CACHE"):
        return Path(os.environ["STUDENTSPEC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "studentspec"


def _cpu_ok() -> bool:
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "avx2" in flags and "fma" in flags


def _compiler() -> str | None:
    names = [os.environ.get("CC", ""), (sysconfig.get_config_var("CC") or "").split(" ")[0], "cc", "gcc"]
    return next((shutil.which(n) for n in names if n and shutil.which(n)), None)


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    """The library and "" or None and why it is unavailable; compiled at most once per source and flags."""
    if os.environ.get("STUDENTSPEC_KERNEL") == "torch":
        return None, "STUDENTSPEC_KERNEL=torch is set"
    if not _cpu_ok():
        return None, "the CPU lacks AVX2/FMA (or is not x86-64 Linux)"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC)"
    source = b"".join(f.read_bytes() for f in SOURCES)
    tag = hashlib.sha256(source + " ".join(FLAGS).encode()).hexdigest()[:16]
    lib = cache_dir() / f"sgd_step-{tag}.so"
    if not lib.exists():
        failed: list[str] = []

        def compile_to(tmp: Path) -> None:
            proc = subprocess.run([cc, *FLAGS, "-o", str(tmp), str(SOURCE), "-lm"], capture_output=True, text=True)
            if proc.returncode != 0:
                failed.append(f"compiling {SOURCE.name} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
                raise _CompileFailed

        try:
            lib.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(lib, compile_to)  # parallel workers compiling at once all end with a whole file
        except _CompileFailed:
            return None, failed[0]
        except OSError as e:
            return None, f"cannot write the compiled step to {lib.parent} ({e.strerror}; set STUDENTSPEC_CACHE)"
    try:
        dll = ctypes.CDLL(str(lib))
    except OSError as e:
        return None, f"cannot load {lib}: {e}"
    p, i, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    for sfx in SUFFIX.values():
        step, fwd = getattr(dll, f"ss_sgd_step_{sfx}"), getattr(dll, f"ss_forward_grad_{sfx}")
        step.argtypes = [i, i, p, i, p, p, p, ctypes.c_long, p, p, i, d, i, d, p, p, p, i]
        fwd.argtypes = [i, i, p, i, p, p, ctypes.c_long, p, p, i, d, i, p, p, p, p, p, d, p, i]
        step.restype = fwd.restype = None
    dll.ss_workspace.argtypes = [i, p, i]
    dll.ss_workspace.restype = ctypes.c_long
    return dll, ""


def unsupported(net: Net, loss: str, optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0) -> str:
    """Why the compiled code cannot train (or evaluate) this setup ("" when it can)."""
    w = net.weights[0]
    if net.batchnorm != "none":
        return "BatchNorm students take the torch path"
    if activations.get(net.activation).kernel_id is None:
        return f"activation {net.activation!r} is not compiled"
    if optimizer not in ("sgd", "gd") or momentum or weight_decay:
        return "only plain SGD (no momentum, no weight decay) is compiled"
    if w.dtype not in SUFFIX or w.device.type != "cpu":
        return f"only float64/float32 on the CPU is compiled (got {w.dtype} on {w.device})"
    if loss not in KERNEL_IDS:
        return f"loss {loss!r} is not compiled"
    if len(net.weights) > MAX_LAYERS:
        return f"more than {MAX_LAYERS} layers"
    return _load()[1]


def _seed_rows(t: Tensor) -> int | None:
    """Rows from one seed's block to the next when t [S, B, w] has contiguous rows (a slice along B), else None."""
    S, _, w = t.shape
    if t.stride(2) != 1 or t.stride(1) != w or t.stride(0) % max(w, 1):
        return None
    return t.stride(0) // max(w, 1) if S > 1 else t.shape[1]


class CompiledMLP:
    """The compiled step and evaluation pass bound to one ensemble: call it with a batch, get the per-seed loss [S]."""

    def __init__(self, net: Net, loss: str) -> None:
        dll, why = _load()
        if dll is None:
            raise RuntimeError(why)
        self.dll, self.net, self.obj = dll, net, KERNEL_IDS[loss]
        for t in (*net.weights, *net.biases):
            if not t.is_contiguous():
                raise ValueError("the compiled step needs contiguous parameters")
        widths = [net.weights[0].shape[1]] + [w.shape[2] for w in net.weights]
        self.depth = len(net.weights)
        self.widths = (ctypes.c_int * len(widths))(*widths)
        self.act = activations.get(net.activation).kernel_id
        self.dtype = net.weights[0].dtype
        sfx = SUFFIX[self.dtype]
        self._step, self._forward_grad = getattr(dll, f"ss_sgd_step_{sfx}"), getattr(dll, f"ss_forward_grad_{sfx}")
        self.workspace: Tensor | None = None
        self.loss = torch.empty(net.weights[0].shape[0], dtype=torch.float64)

    def __call__(self, x: Tensor, y: Tensor, lr: float, alive: Tensor) -> Tensor:
        """SGD step on (x [S, B, w0], y [S, B, wL]) for every alive seed; seeds whose loss is not finite keep their parameters."""
        return self._run(x.contiguous(), y.contiguous(), None, lr, alive)

    def indexed(self, x_train: Tensor, y_train: Tensor, idx: Tensor, lr: float, alive: Tensor) -> Tensor:
        """The same step on the batch x_train[s, idx[s]], y_train[s, idx[s]], gathered inside the kernel.

        idx [S, B] int64 must lie in [0, x_train.shape[1]): check_indices() once per epoch, not per step.
        """
        if x_train.dtype != self.dtype or y_train.dtype != self.dtype or not (x_train.is_contiguous() and y_train.is_contiguous()):
            raise ValueError(f"the compiled step needs contiguous {self.dtype} training sets")
        return self._run(x_train, y_train, idx.to(torch.int64).contiguous(), lr, alive)

    def forward_grad(self, x: Tensor, y: Tensor, hidden: bool, grads: list[Tensor] | None, gscale: float) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Per-seed loss [S], sum of squared errors [S] and hidden activations ([S, B, w_l] each, if `hidden`) on (x, y).

        With `grads` ([dW_1, db_1, ...] shaped like the parameters), adds gscale * the gradient to them.
        Parameters are not touched.
        """
        S, B, _ = x.shape
        seed_rows = _seed_rows(x)
        if seed_rows is None or seed_rows != _seed_rows(y):  # else a slice of bigger [S, N, w] sets, read in place
            x, y, seed_rows = x.contiguous(), y.contiguous(), B
        self._check_dtype(x, y)
        net = self.net
        hs = [torch.empty(S, B, w.shape[2], dtype=self.dtype) for w in net.weights[:-1]] if hidden else []
        loss, sq = torch.empty(S, dtype=torch.float64), torch.empty(S, dtype=torch.float64)
        threads, work = self._workspace(S, B)
        if grads is not None and not all(g.is_contiguous() and g.dtype == self.dtype for g in grads):
            raise ValueError(f"gradient buffers must be contiguous {self.dtype}")
        self._forward_grad(S, self.depth, self.widths, B, x.data_ptr(), y.data_ptr(), seed_rows, self._ptrs(net.weights),
                           self._ptrs(net.biases), self.act, float(net.slope), self.obj, self._ptrs(hs), loss.data_ptr(),
                           sq.data_ptr(), self._ptrs(grads[0::2] if grads else []), self._ptrs(grads[1::2] if grads else []),
                           float(gscale), work.data_ptr(), threads)
        return loss, sq, hs

    @staticmethod
    def check_indices(idx: Tensor, n_rows: int) -> None:
        """IndexError unless every row number lies in [0, n_rows): the kernel reads memory unchecked."""
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_rows):
            raise IndexError(f"batch indices must lie in [0, {n_rows})")

    def _run(self, x: Tensor, y: Tensor, idx: Tensor | None, lr: float, alive: Tensor) -> Tensor:
        self._check_dtype(x, y)
        S = x.shape[0]
        B = x.shape[1] if idx is None else idx.shape[1]
        threads, work = self._workspace(S, B)
        alive_u8 = alive.to(torch.uint8).contiguous()
        self._step(S, self.depth, self.widths, B, x.data_ptr(), y.data_ptr(), None if idx is None else idx.data_ptr(),
                   x.shape[1], self._ptrs(self.net.weights), self._ptrs(self.net.biases), self.act, float(self.net.slope),
                   self.obj, float(lr), alive_u8.data_ptr(), self.loss.data_ptr(), work.data_ptr(), threads)
        return self.loss

    def _check_dtype(self, x: Tensor, y: Tensor) -> None:
        if x.dtype != self.dtype or y.dtype != self.dtype:
            raise ValueError(f"inputs must be {self.dtype} like the parameters")

    def _ptrs(self, ts: list[Tensor]) -> ctypes.Array | None:
        """A C array of the tensors' data pointers, looked up per call (safe if a tensor is replaced); None for none."""
        return (ctypes.c_void_p * len(ts))(*[t.data_ptr() for t in ts]) if ts else None

    def _workspace(self, S: int, batch: int) -> tuple[int, Tensor]:
        """Threads to share the seeds over (torch's, at most S) and a workspace for them, grown as needed and reused."""
        threads = max(1, min(torch.get_num_threads(), S))
        need = threads * int(self.dll.ss_workspace(self.depth, self.widths, batch))
        if self.workspace is None or self.workspace.shape[0] < need:
            self.workspace = torch.empty(need, dtype=self.dtype)
        return threads, self.workspace
