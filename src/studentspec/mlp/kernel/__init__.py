"""The compiled SGD step (sgd_step.c): built with the system C compiler on first use, cached.

It covers the paper's hot loop (plain MLP, ReLU/Leaky ReLU, MSE/CE, plain SGD, float64 or
float32 on the CPU) and needs AVX2 + FMA. Everywhere else, or with no compiler, training takes the torch path
(backprop.py); `train.kernel: c` asks for this one and fails with a one-line reason instead (unsupported()).

The library is bound with cffi in ABI mode (ffi.cdef + ffi.dlopen, nothing compiled by cffi),
not ctypes: the contract is written once, in sgd_step.h, which sgd_step.c #includes (the C compiler
checks the definitions against it) and which ffi.cdef reads (declarations()): the exported prototypes,
the structs they take (the net, the batch, an evaluation's outputs, the correlation sums) and the enums
of objectives, activations and limits. So every call from Python is checked against the C signature
(a missing, extra or misplaced argument, or a pointer of the wrong element type, a float * for a
double *, raises TypeError instead of handing C garbage), and every number the two sides must agree on
is the header's: the loss and activation registries name enum constants (losses.KERNEL_ENUMS,
Activation.kernel), resolved here by constant().
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...config import env_choice
from ...ensemble import activations, losses, optimizers
from ...ensemble.atomic import atomic_write
from ...ensemble.corr import CorrAccumulator
from ..nets import Net

try:
    import cffi
except ImportError:  # a declared dependency; without it training takes the torch path, with the reason
    cffi = None

SOURCE = Path(__file__).with_name("sgd_step.c")
HEADER = SOURCE.with_name("sgd_step.h")  # the exported prototypes: #included by SOURCE, read by ffi.cdef
SOURCES = [
    SOURCE,
    HEADER,
    SOURCE.with_name("sgd_step_impl.h"),
    SOURCE.with_name("sgd_step_undef.h"),
]  # all hashed: a change to any rebuilds
ENUMS = ("ss_objective", "ss_activation", "ss_limits")  # the enums sgd_step.h declares (cffi lists no enum types)
SUFFIX = {torch.float64: "f64", torch.float32: "f32"}
CTYPE = {torch.float64: "double", torch.float32: "float"}
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-std=c11", "-shared", "-fPIC"]
# 512-bit vectors where the CPU has AVX-512F (same bits: see sgd_step.c); STUDENTSPEC_KERNEL_ISA=avx2 keeps 256-bit ones
AVX512_FLAGS = ["-mavx512f"]
# the environment variables read here and their documented values (unset or empty: the default); any other is refused
ENV = {"STUDENTSPEC_KERNEL": ("torch",), "STUDENTSPEC_KERNEL_ISA": ("avx2",)}


def _env(name: str) -> str | None:
    return env_choice(name, ENV[name])


def check_environment() -> None:
    """ConfigError naming the variable when an ENV variable
    holds a value it does not document: checked before any work."""
    for name in ENV:
        _env(name)


class _CompileFailed(Exception):
    """The compiler rejected the kernel source (its message is kept by the caller)."""


def declarations() -> str:
    """sgd_step.h less its preprocessor lines (include guard): the text ffi.cdef reads."""
    return "\n".join(line for line in HEADER.read_text().splitlines() if not line.lstrip().startswith("#"))


def _make_ffi() -> Any:
    if cffi is None:
        return None
    made = cffi.FFI()
    made.cdef(declarations())
    return made


ffi = _make_ffi()  # None without cffi


@functools.cache
def constant(name: str) -> int:
    """The value sgd_step.h gives the enum constant `name` (e.g. "SS_HALF_SSE"); KeyError where it declares none."""
    if ffi is None:
        raise RuntimeError("cffi is not installed: the header's constants are unknown")
    for enum in ENUMS:
        values = ffi.typeof(f"enum {enum}").relements
        if name in values:
            return int(values[name])
    raise KeyError(f"sgd_step.h declares no enum constant {name}")


def cache_dir() -> Path:
    """Where the compiled library lives: $STUDENTSPEC_CACHE,
    else $XDG_CACHE_HOME/studentspec, else ~/.cache/studentspec."""
    if os.environ.get("STUDENTSPEC_CACHE"):
        return Path(os.environ["STUDENTSPEC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "studentspec"


@functools.cache
def _cpu_flags() -> frozenset[str]:
    if platform.machine() not in ("x86_64", "AMD64"):
        return frozenset()
    try:
        return frozenset(
            next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
        )
    except (OSError, StopIteration):
        return frozenset()


def _cpu_ok() -> bool:
    return {"avx2", "fma"} <= _cpu_flags()


def isa() -> str:
    """The vector width the kernel is built for on this CPU: "avx512" (where it has AVX-512F and
    STUDENTSPEC_KERNEL_ISA is not "avx2") or "avx2"."""
    return "avx512" if "avx512f" in _cpu_flags() and _env("STUDENTSPEC_KERNEL_ISA") != "avx2" else "avx2"


def flags() -> list[str]:
    """The compiler flags of this CPU's build."""
    return FLAGS + (AVX512_FLAGS if isa() == "avx512" else [])


def _compiler() -> str | None:
    names = [os.environ.get("CC", ""), (sysconfig.get_config_var("CC") or "").split(" ")[0], "cc", "gcc"]
    return next((shutil.which(n) for n in names if n and shutil.which(n)), None)


def library_path() -> Path:
    """Where the library built from the current SOURCES and FLAGS is (or will be) cached."""
    source = b"".join(f.read_bytes() for f in SOURCES)
    tag = hashlib.sha256(source + " ".join(flags()).encode()).hexdigest()[:16]
    return cache_dir() / f"sgd_step-{tag}.so"


@functools.cache
def _load() -> tuple[Any, str]:
    """The library (cffi's lib object) and "" or None and why it
    is unavailable; compiled at most once per source and flags."""
    if _env("STUDENTSPEC_KERNEL") == "torch":
        return None, "STUDENTSPEC_KERNEL=torch is set"
    if ffi is None:
        return None, "cffi is not installed (pip install cffi)"
    if not _cpu_ok():
        return None, "the CPU lacks AVX2/FMA (or is not x86-64 Linux)"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC)"
    lib = library_path()
    if not lib.exists():
        failed: list[str] = []

        def compile_to(tmp: Path) -> None:
            proc = subprocess.run([cc, *flags(), "-o", str(tmp), str(SOURCE), "-lm"], capture_output=True, text=True)
            if proc.returncode != 0:
                failed.append(
                    f"compiling {SOURCE.name} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}"
                )
                raise _CompileFailed

        try:
            lib.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(lib, compile_to)  # parallel workers compiling at once all end with a whole file
        except _CompileFailed:
            return None, failed[0]
        except OSError as e:
            return None, f"cannot write the compiled step to {lib.parent} ({e.strerror}; set STUDENTSPEC_CACHE)"
    try:
        dll = ffi.dlopen(str(lib))
    except OSError as e:
        return None, f"cannot load {lib}: {e}"
    return dll, ""


def unsupported(
    net: Net, loss: str, optimizer: str | None = None, *, momentum: float = 0.0, weight_decay: float = 0.0
) -> str | None:
    """Why the compiled code cannot evaluate this net
    (optimizer None) or train it with this optimizer; None if it can."""
    why = _cannot_evaluate(net, loss)
    if why is None and optimizer is not None:
        why = _cannot_train(optimizer, momentum, weight_decay)
    return why or _load()[1] or None


def _cannot_evaluate(net: Net, loss: str) -> str | None:
    """What the compiled forward and gradient pass (and so the step) needs of the net and the objective."""
    w = net.weights[0]
    if net.batchnorm != "none":
        return "BatchNorm students take the torch path"
    if activations.get(net.activation).kernel is None:
        return f"activation {net.activation!r} is not compiled"
    if w.dtype not in SUFFIX or w.device.type != "cpu":
        return f"only float64/float32 on the CPU is compiled (got {w.dtype} on {w.device})"
    if loss not in losses.KERNEL_ENUMS:
        return f"loss {loss!r} is not compiled"
    if ffi is not None and len(net.weights) > constant("SS_MAX_LAYERS"):  # without cffi, _load says so
        return f"more than {constant('SS_MAX_LAYERS')} layers"
    return None


def _cannot_train(optimizer: str, momentum: float, weight_decay: float) -> str | None:
    """What the compiled step needs of the optimizer besides what evaluation needs."""
    if not optimizers.plain_sgd(optimizer, momentum, weight_decay):
        return "only plain SGD (no momentum, no weight decay) is compiled"
    return None


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
        refused = unsupported(net, loss)
        if refused is not None:
            raise ValueError(f"the compiled pass cannot run this net: {refused}")
        for t in (*net.weights, *net.biases):
            if not t.is_contiguous():
                raise ValueError("the compiled step needs contiguous parameters")
        self.dll, self.net, self.S = dll, net, net.weights[0].shape[0]
        self.dtype = net.weights[0].dtype
        self.depth = len(net.weights)
        self.widths = ffi.new("int[]", [net.weights[0].shape[1]] + [w.shape[2] for w in net.weights])
        sfx, ctype = SUFFIX[self.dtype], CTYPE[self.dtype]
        self._step, self._forward_grad = getattr(dll, f"ss_sgd_step_{sfx}"), getattr(dll, f"ss_forward_grad_{sfx}")
        self._steps = getattr(dll, f"ss_sgd_steps_{sfx}")
        self._corr_update = getattr(dll, f"ss_corr_update_{sfx}")
        self._real = ffi.typeof(f"{ctype} *")  # ctype objects: cheaper to cast to than strings
        self._f64, self._i64, self._u8 = ffi.typeof("double *"), ffi.typeof("long *"), ffi.typeof("unsigned char *")
        self._arrays = ffi.typeof(f"{ctype} *[]")
        # the parameters' pointers, filled in per call (a tensor may be replaced between calls)
        self._W, self._bias = ffi.new(self._arrays, self.depth), ffi.new(self._arrays, self.depth)
        act = activations.get(net.activation)
        slope = float(act.leaky_slope(net.slope)) if act.leaky_slope is not None else float(net.slope)  # linear: 1
        self._net = ffi.new(
            f"struct ss_net_{sfx} *",
            {
                "S": self.S,
                "L": self.depth,
                "widths": self.widths,
                "W": self._W,
                "bias": self._bias,
                "act": constant(act.kernel),
                "slope": slope,
                "obj": constant(losses.KERNEL_ENUMS[loss]),
            },
        )
        self._batch, self._out = ffi.new(f"struct ss_batch_{sfx} *"), ffi.new(f"struct ss_eval_{sfx} *")
        self.workspace: Tensor | None = None
        self.loss = torch.empty(self.S, dtype=torch.float64)
        self._loss_ptr = ffi.cast(self._f64, self.loss.data_ptr())

    def __call__(self, x: Tensor, y: Tensor, lr: float, alive: Tensor) -> Tensor:
        """SGD step on (x [S, B, w0], y [S, B, wL]) for every alive
        seed; seeds whose loss is not finite keep their parameters."""
        x, y = x.contiguous(), y.contiguous()
        self._check_batch(x, y)
        return self._run(x, y, None, x.shape[1], lr, alive)

    def indexed(self, x_train: Tensor, y_train: Tensor, idx: Tensor, *, lr: float, alive: Tensor) -> Tensor:
        """The same step on the batch x_train[s, idx[s]], y_train[s, idx[s]], gathered inside the kernel.

        idx [S, B] int64 must lie in [0, x_train.shape[1]): check_indices() once per epoch, not per step.
        """
        self._check_training_sets(x_train, y_train, idx)
        return self._run(x_train, y_train, idx.to(torch.int64).contiguous(), idx.shape[1], lr, alive)

    def indexed_steps(self, x_train: Tensor, y_train: Tensor, idx: Tensor, *, lr: float, alive: Tensor) -> Tensor:
        """len(idx) consecutive indexed() steps (idx [T, S, B]),
        each seed's back to back while its parameters sit in cache.

        Returns the losses [T, S]: a seed whose loss turns non-finite keeps its parameters from then on and its later
        losses are NaN, as if marked dead after that step; the numbers are those of T indexed() calls.
        """
        self._check_training_sets(x_train, y_train, idx)
        T, S, B = idx.shape
        idx = idx.to(torch.int64).contiguous()
        threads = self._workspace(S, B)
        alive_u8 = alive.to(torch.uint8).contiguous()
        loss = torch.empty(T, S, dtype=torch.float64)
        batch = self._set_batch(x_train, y_train, idx, B)
        self._steps(
            T,
            self._net_now(),
            batch,
            float(lr),
            ffi.cast(self._u8, alive_u8.data_ptr()),
            ffi.cast(self._f64, loss.data_ptr()),
            self._work_ptr,
            threads,
        )
        return loss

    def forward_grad(
        self,
        x: Tensor,
        y: Tensor,
        *,
        hidden: bool,
        grads: list[Tensor] | None,
        gscale: float,
        storage: list[Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Per-seed loss [S], sum of squared errors [S] and
        hidden activations ([S, B, w_l] each, if `hidden`) on (x, y).

        With `grads` ([dW_1, db_1, ...] shaped like the parameters), adds gscale * the gradient to them.
        Parameters are not touched. `storage` (one flat tensor of the run's dtype per hidden layer, at least S * B * w_l
        long) holds the activations instead of fresh tensors: a chunked pass reuses it rather than fault in new pages.
        """
        S, B, _ = x.shape
        seed_rows = _seed_rows(x)
        if seed_rows is None or seed_rows != _seed_rows(y):  # else a slice of bigger [S, N, w] sets, read in place
            x, y, seed_rows = x.contiguous(), y.contiguous(), B
        self._check_batch(x, y)
        shapes = [(S, B, w.shape[2]) for w in self.net.weights[:-1]] if hidden else []
        if storage is not None and not all(
            t.dtype == self.dtype and t.is_contiguous() and t.numel() >= math.prod(shape)
            for t, shape in zip(storage, shapes, strict=True)
        ):
            raise ValueError(
                f"storage: one contiguous {self.dtype} tensor of at least S * B * w_l elements per hidden layer"
            )
        hs = (
            [torch.empty(shape, dtype=self.dtype) for shape in shapes]
            if storage is None
            else [t.view(-1)[: math.prod(shape)].view(shape) for t, shape in zip(storage, shapes)]
        )
        loss, sq = torch.empty(S, dtype=torch.float64), torch.empty(S, dtype=torch.float64)
        threads = self._workspace(S, B)
        if grads is not None and not all(g.is_contiguous() and g.dtype == self.dtype for g in grads):
            raise ValueError(f"gradient buffers must be contiguous {self.dtype}")
        # the pointer arrays live in these locals until the call returns: the struct holds only their addresses
        g_w, g_b = (grads[0::2], grads[1::2]) if grads else ([], [])
        hidden_p, gw_p, gb_p = self._pointers(hs), self._pointers(g_w), self._pointers(g_b)
        out = self._out
        out.loss, out.sq = ffi.cast(self._f64, loss.data_ptr()), ffi.cast(self._f64, sq.data_ptr())
        out.hidden, out.gW, out.gb, out.gscale = hidden_p, gw_p, gb_p, float(gscale)
        batch = self._set_batch(x, y, None, B, rows=seed_rows)
        self._forward_grad(self._net_now(), batch, out, self._work_ptr, threads)
        return loss, sq, hs

    def corr_update(self, acc: CorrAccumulator, t: Tensor, h: Tensor) -> None:
        """Add a chunk (teacher t [S, B, m], student h [S, B, n], in the run's dtype) to `acc`, a CorrAccumulator past
        its first chunk (which set its shifts), in one pass per seed instead of torch's five over h (sums in
        float64)."""
        if acc.n == 0:
            raise ValueError("the first chunk sets the accumulator's shifts: give it to acc.update")
        S, B, m = t.shape
        n = h.shape[2]
        if h.shape[:2] != t.shape[:2]:  # the kernel reads B rows of both, unchecked
            raise ValueError(
                f"teacher and student chunks must share seeds and rows (got {tuple(t.shape)}, {tuple(h.shape)})"
            )
        t_rows, h_rows = _seed_rows(t), _seed_rows(h)
        if t_rows is None:
            t, t_rows = t.contiguous(), B
        if h_rows is None:
            h, h_rows = h.contiguous(), B
        self._check_dtype(t, h)
        state = (acc.shift_t, acc.shift_s, acc.sum_t, acc.sq_t, acc.sum_s, acc.sq_s, acc.cross)
        if not all(a.dtype == torch.float64 and a.is_contiguous() for a in state):
            raise ValueError("the accumulator's sums must be contiguous float64")
        threads = max(1, min(torch.get_num_threads(), S))
        work = torch.empty(threads * B * (m + n), dtype=torch.float64)
        cast, real, f64 = ffi.cast, self._real, self._f64
        names = ("shift_t", "shift_s", "sum_t", "sq_t", "sum_s", "sq_s", "cross")
        fields = {name: cast(f64, a.data_ptr()) for name, a in zip(names, state, strict=True)}
        sums = ffi.new("struct ss_corr *", {"m": m, "n": n, **fields})
        self._corr_update(
            S,
            B,
            cast(real, t.data_ptr()),
            t_rows,
            cast(real, h.data_ptr()),
            h_rows,
            sums,
            cast(f64, work.data_ptr()),
            threads,
        )
        acc.n += B

    @staticmethod
    def check_indices(idx: Tensor, n_rows: int) -> None:
        """IndexError unless every row number lies in [0, n_rows): the kernel reads memory unchecked."""
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_rows):
            raise IndexError(f"batch indices must lie in [0, {n_rows})")

    def _run(self, x: Tensor, y: Tensor, idx: Tensor | None, B: int, lr: float, alive: Tensor) -> Tensor:
        threads = self._workspace(x.shape[0], B)
        alive_u8 = alive.to(torch.uint8).contiguous()
        self._step(
            self._net_now(),
            self._set_batch(x, y, idx, B),
            float(lr),
            ffi.cast(self._u8, alive_u8.data_ptr()),
            self._loss_ptr,
            self._work_ptr,
            threads,
        )
        return self.loss

    def _net_now(self) -> Any:
        """The net's struct with its parameters' data pointers, looked up per call (a tensor may have been replaced)."""
        cast, real = ffi.cast, self._real
        for l, (w, b) in enumerate(zip(self.net.weights, self.net.biases, strict=True)):
            self._W[l] = cast(real, w.data_ptr())
            self._bias[l] = cast(real, b.data_ptr())
        return self._net

    def _set_batch(self, x: Tensor, y: Tensor, idx: Tensor | None, B: int, *, rows: int | None = None) -> Any:
        """The batch struct pointed at x, y (rows per seed: x.shape[1] unless given) and idx (None: NULL)."""
        batch, cast = self._batch, ffi.cast
        batch.B, batch.rows = B, x.shape[1] if rows is None else rows
        batch.x, batch.y = cast(self._real, x.data_ptr()), cast(self._real, y.data_ptr())
        batch.idx = ffi.NULL if idx is None else cast(self._i64, idx.data_ptr())
        return batch

    def _check_training_sets(self, x_train: Tensor, y_train: Tensor, idx: Tensor) -> None:
        if (
            x_train.dtype != self.dtype
            or y_train.dtype != self.dtype
            or not (x_train.is_contiguous() and y_train.is_contiguous())
        ):
            raise ValueError(f"the compiled step needs contiguous {self.dtype} training sets")
        self._check_seeds(x_train, y_train)
        if idx.shape[-2] != self.S:
            raise ValueError(f"batch indices must hold the net's {self.S} seeds (got {idx.shape[-2]})")

    def _check_batch(self, x: Tensor, y: Tensor) -> None:
        self._check_dtype(x, y)
        self._check_seeds(x, y)

    def _check_seeds(self, x: Tensor, y: Tensor) -> None:
        if x.shape[0] != self.S or y.shape[0] != self.S:
            raise ValueError(f"inputs must hold the net's {self.S} seeds (got {x.shape[0]} and {y.shape[0]})")

    def _check_dtype(self, x: Tensor, y: Tensor) -> None:
        if x.dtype != self.dtype or y.dtype != self.dtype:
            raise ValueError(f"inputs must be {self.dtype} like the parameters")

    def _pointers(self, ts: list[Tensor]) -> Any:
        """A C array of the tensors' data pointers, typed (keep it alive while C may read it); NULL for none."""
        if not ts:
            return ffi.NULL
        return ffi.new(self._arrays, [ffi.cast(self._real, t.data_ptr()) for t in ts])

    def _workspace(self, S: int, batch: int) -> int:
        """Threads to share the seeds over (torch's, at most S), with a workspace for them, grown as needed, reused."""
        threads = max(1, min(torch.get_num_threads(), S))
        need = threads * int(self.dll.ss_workspace(self.depth, self.widths, batch))
        if self.workspace is None or self.workspace.shape[0] < need:
            self.workspace = torch.empty(need, dtype=self.dtype)
            self._work_ptr = ffi.cast(self._real, self.workspace.data_ptr())  # kept alive by self.workspace
        return threads
