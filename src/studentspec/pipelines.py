"""The one seam between pipelines: build(cfg) -> Setup, train(setup, hooks) -> Result, record(result) -> RunRecord.

A config picks its pipeline by teacher.net, in one table (PIPELINES): conv nets (conv/; by default for an image
data set) or MLP ensembles (mlp/; by default for every other data kind, and on flattened images with teacher.net:
mlp). Everything above this module (cli, sweep, paper) runs pipelines only through it; the store below writes
their RunRecords without knowing them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from . import images as image_sets
from .config import Config, ConfigError
from .config import load_config as _load_config
from .conv import checkpoint as conv_checkpoint
from .conv import record as conv_record
from .conv import train as conv_train
from .ensemble.hooks import Evaluation, Hooks
from .ensemble.loop import RunResult
from .ensemble.optimizers import full_batch
from .ensemble.registry import one_of
from .mlp import checkpoint as mlp_checkpoint
from .mlp import data as mlp_data
from .mlp import kernel as mlp_kernel
from .mlp import memory as mlp_memory
from .mlp import pack as mlp_pack
from .mlp import record as mlp_record
from .mlp import train as mlp_train
from .mlp.data import images as mlp_images
from .mlp.memory import check_fits
from .store import RunRecord, StoreError, check_out, write_record
from .store.checkpoint import MARKER as CHECKPOINT_MARKER
from .store.checkpoint import checkpoint_path, read_checkpoint, remove_checkpoint, write_checkpoint
from .store.record import split_record
from .theory.metric import METRICS


def _check_mlp(cfg: Config) -> None:
    mlp_data.get(cfg.data.kind)
    # STUDENTSPEC_KERNEL, STUDENTSPEC_KERNEL_ISA: a value they do not document exits 2 here
    mlp_kernel.check_environment()
    if cfg.teacher.checkpoint is not None:
        raise ConfigError(
            f"teacher.checkpoint: a conv teacher needs image data (data.kind one of {', '.join(image_sets.READERS)}) "
            f"and a conv net (teacher.net: conv or null), not teacher.net={cfg.teacher.net}"
        )
    mlp_images.resolve_dims(cfg)  # image inputs: input_dim from the images (checked before any work), output_dim 10


def _fits_mlp(cfg: Config) -> None:
    if cfg.train.device == "cpu":  # on an accelerator the floor is checked by build(), on the device
        check_fits(cfg, metrics=METRICS.values())


def _train_mlp(setup: mlp_train.Setup, hooks: Hooks) -> mlp_train.TrainResult:
    """mlp.train.train measuring the registered metrics (theory/metric.py METRICS) the config switches on."""
    return mlp_train.train(replace(setup, metrics=METRICS.enabled(setup.cfg)), hooks)


def _fits_unknown(cfg: Config) -> None:
    """A conv run's memory depends on the image set, known only once it is loaded: no up-front floor."""


def _check_conv(cfg: Config) -> None:
    if cfg.data.kind in image_sets.READERS:
        image_sets.resolve_root(cfg.data.kind, cfg.data.root)  # data.root, or its package's folder when installed
    elif cfg.teacher.checkpoint is not None:
        raise ConfigError(
            f"teacher.checkpoint: a trained conv teacher reads an image set, not data.kind={cfg.data.kind}"
        )
    if cfg.teacher.checkpoint is None and "output_dim" not in cfg.model_fields_set:
        cfg.output_dim = 10 if cfg.data.kind in image_sets.READERS else 100  # a random teacher: the released code's
    for metric in METRICS.enabled(
        cfg
    ):  # per-evaluation metrics are the MLP pipeline's (switch-less ones: not asked for)
        if metric.switch is not None:
            raise ConfigError(f"{metric.switch}: {metric.title} are measured for MLP runs, not image data")
    if full_batch(cfg.train.optimizer):
        raise ConfigError(
            f"train.optimizer: {cfg.train.optimizer} (full batch) is not supported for image data; use sgd or adam"
        )
    if cfg.eval.dtype is not None:
        raise ConfigError("eval.dtype: image runs evaluate in train.dtype; set eval.dtype only for MLP runs")


class Restore(Protocol):
    """A checkpoint's content (store.checkpoint.Checkpoint) -> a freshly built loop, in place; errors name `file`."""

    def __call__(
        self, loop: Any, epoch: int, state: dict[str, Any], frames: dict[str, Any], *, file: Path | str = ...
    ) -> None: ...


@dataclass(frozen=True)
class Pipeline:
    """How one family of runs is built, trained and recorded."""

    name: str
    check: Callable[[Config], None]  # ConfigError (one line) for a config this pipeline cannot run, before any work
    build: Callable[[Config], Any]
    train: Callable[[Any, Hooks], RunResult]  # the one epoch loop (ensemble/loop.py) with the pipeline's steps
    record: Callable[[Any], RunRecord]
    check_memory: Callable[[Config], None]  # ConfigError if a job of these seeds cannot fit in this machine's memory
    snapshot: Callable[
        [Any], tuple[int, dict[str, Any], dict[str, Any]]
    ]  # the loop between epochs -> a checkpoint's content
    restore: Restore  # a checkpoint's content -> a freshly built loop


PIPELINES = {
    "mlp": Pipeline(
        "mlp",
        _check_mlp,
        mlp_train.build,
        _train_mlp,
        mlp_record.record,
        _fits_mlp,
        mlp_checkpoint.snapshot,
        mlp_checkpoint.restore,
    ),
    "conv": Pipeline(
        "conv",
        _check_conv,
        conv_train.build,
        conv_train.train,
        conv_record.record,
        _fits_unknown,
        conv_checkpoint.snapshot,
        conv_checkpoint.restore,
    ),
}


def kind_names() -> list[str]:
    """Every data.kind a run may name: the MLP kinds (image sets among them), then any image set MLPs do not read."""
    return list(dict.fromkeys([*mlp_data.KINDS.names(), *image_sets.READERS]))


def name_of(cfg: Config) -> str:
    """The pipeline of a config ('mlp' or 'conv'), chosen by teacher.net (null: conv for an image data set, mlp for
    every other data kind); ConfigError for an unknown data.kind, listing the known ones, or one conv cannot read."""
    kind = cfg.data.kind
    net = cfg.teacher.net or ("conv" if kind in image_sets.READERS else "mlp")
    if net == "conv":
        if kind in image_sets.READERS or kind == "gaussian":
            return "conv"
        raise ConfigError(
            f"teacher.net: conv runs on an image data set ({', '.join(image_sets.READERS)}) or on Gaussian images "
            f"(data.kind gaussian), not data.kind={kind}"
        )
    if kind in mlp_data.KINDS:
        return "mlp"
    raise ConfigError(f"data.kind: {one_of(kind_names())}, got {kind!r}")


def pipeline(cfg: Config) -> Pipeline:
    """The pipeline that runs `cfg`, after its checks (ConfigError before any work)."""
    p = PIPELINES[name_of(cfg)]
    p.check(cfg)
    return p


def require(cfg: Config, supported: tuple[str, ...], what: str) -> None:
    """ConfigError unless `cfg` runs on one of the `supported` pipelines: commands declare what they support."""
    name = name_of(cfg)
    if name not in supported:
        raise ConfigError(
            f"{what} supports {' and '.join(supported)} runs, not {name} runs (data.kind={cfg.data.kind})"
        )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """config.load_config, then the names only the pipelines know (data.kind) and the chosen pipeline's checks."""
    cfg = _load_config(path, overrides)
    pipeline(cfg)
    return cfg


def build(cfg: Config) -> Any:
    """The Setup of `cfg` on its pipeline."""
    return pipeline(cfg).build(cfg)


def train(
    cfg: Config,
    progress: bool = True,
    *,
    on_eval: Callable[[Evaluation], None] | None = None,
    setup: Any = None,
    out: str | Path | None = None,
    resume: bool = False,
) -> RunResult:
    """Build (unless `setup` is given) and train every seed of `cfg` in one batched pass; the pipeline's Result.

    `on_eval` is called with every evaluation as it is made (ensemble.hooks.Evaluation, the same for every pipeline).

    With `out` (the run dir it will be written to) and train.checkpoint_every, a checkpoint is kept beside `out`
    (store/checkpoint.py); with `resume`, training continues from that checkpoint when there is one.
    """
    p = pipeline(cfg)
    hooks = Hooks(progress, on_eval)
    if out is not None and cfg.train.checkpoint_every:
        check_out(checkpoint_path(out), True, "checkpoint")  # before any work: a checkpoint we may not replace
        hooks = replace(hooks, checkpoint=_checkpointer(out, cfg, p))
    found = read_checkpoint(out, cfg) if out is not None and resume else None
    if found is not None:
        epoch, state, tables, file = found
        hooks = replace(hooks, resume=lambda loop: p.restore(loop, epoch, state, tables, file=file))
    return p.train(setup if setup is not None else p.build(cfg), hooks)


@contextmanager
def interrupt_after() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block is done: a write begun is finished whole
    (no staging dir or half-removed old version left), then the KeyboardInterrupt is raised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    handler = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler if handler is not None else signal.SIG_DFL)
        if held:
            signal.raise_signal(signal.SIGINT)  # delivered to the handler put back (Python's raises KeyboardInterrupt)


def _checkpointer(out: str | Path, cfg: Config, p: Pipeline) -> Callable[[Any], None]:
    """The checkpoint hook: a checkpoint that cannot be written (a
    full disk, ...) costs a warning, never the run it protects."""

    def save(loop: Any) -> None:
        try:
            with interrupt_after():
                epoch, state, tables = p.snapshot(loop)
                write_checkpoint(out, cfg, epoch=epoch, state=state, tables=tables)
        except (
            OSError,
            StoreError,
        ) as err:  # a failed write leaves the previous checkpoint as it was (store.write_dir)
            why = os.strerror(err.errno) if isinstance(err, OSError) and err.errno else str(err)[:200]
            kept = (
                "the previous checkpoint is kept"
                if (checkpoint_path(out) / CHECKPOINT_MARKER).is_file()
                else "there is no checkpoint yet"
            )
            tqdm.write(f"warning: checkpoint after epoch {loop.epoch} not written ({why}); {kept}", file=sys.stderr)

    return save


def record(result: Any) -> RunRecord:
    """The RunRecord of a finished Result."""
    return pipeline(result.setup.cfg).record(result)


def write_run(result: Any, out: str | Path, overwrite: bool = False) -> Path:
    """Write a finished Result to the run dir `out` atomically (store.write_record), then drop its checkpoint."""
    path = write_record(record(result), out, overwrite)
    remove_checkpoint(out)
    return path


# Packing (mlp/pack.py): sweep jobs whose configs differ only in build-only keys train as one ensemble.
PACKABLE = ("mlp",)


def pack_key(cfg: Config) -> str | None:
    """Jobs whose configs have equal keys may train as one ensemble; None: this config trains alone
    (a pipeline other than PACKABLE's, or train.checkpoint_every)."""
    return mlp_pack.pack_key(cfg) if name_of(cfg) in PACKABLE else None


def packed_config(cfgs: list[Config]) -> Config:
    """The config of the ensemble that packs `cfgs` (seeds =
    positions 0..N-1): what its memory floor is estimated on."""
    return mlp_pack.packed_config(cfgs)


def memory_floor(cfg: Config) -> int | None:
    """Bytes an MLP run of `cfg` holds at least (mlp/memory.py); None where the pipeline has no up-front estimate."""
    return sum(mlp_memory.estimate(cfg, METRICS.values()).values()) if name_of(cfg) == "mlp" else None


def train_packed(cfgs: list[Config], progress: bool = False) -> Any:
    """Build every member config, pack them into one ensemble and train it; the packed Result (see write_packed)."""
    if len({pack_key(c) for c in cfgs} - {None}) != 1 or any(pack_key(c) is None for c in cfgs):
        raise ConfigError(
            "packing: these configs cannot train as one ensemble (they differ in more than build-only keys)"
        )
    setups = [build(c) for c in cfgs]
    packed = mlp_pack.pack(setups)
    del setups  # the members' tensors now live in the packed ensemble
    return train(packed.cfg, progress=progress, setup=packed)


def write_packed(
    result: Any, cfgs: list[Config], outs: list[str | Path], note: dict[str, Any] | None = None
) -> list[Path]:
    """Write each member of a packed Result to its own run dir (its own config, seeds, tables, weights, summary;
    `note` added to every summary), replacing a run dir of ours; each is bitwise the member trained alone."""
    members = split_record(record(result), cfgs, note)
    return [write_record(rec, out, overwrite=True) for rec, out in zip(members, outs)]
