"""Typed, validated experiment configuration: YAML file + dotted `key=value` overrides."""

from __future__ import annotations

import copy
import errno
import math
import os
import re
import reprlib
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode
from yaml.resolver import Resolver


class ConfigError(ValueError):
    """A bad configuration; the message is one line naming the key and the problem."""


QUOTE_CHARS = (
    100  # an error message quotes at most this many characters of a value (a 300 MB value once became one line)
)


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text`, cut to `limit` characters with "..." where it was longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 12, 12, 8, 8
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = QUOTE_CHARS


def quote(value: Any) -> str:
    """repr(value) for an error message: at most QUOTE_CHARS characters, and bounded work however large the value."""
    return clip(_REPR.repr(value))


# Limits of what a config may hold. A config file is refused by size before it is read (a 50 MB file took 34 s to
# fail); 4 MB leaves room for the largest config studentspec writes itself (a run of MAX_SEEDS seeds of 19 digits
# each, one per line, about 2.3 MB). Within it, collections are bounded so that no file takes more than about two
# seconds to read: MAX_ITEMS values in one list (or keys in one mapping), MAX_NODES values in all, MAX_DEPTH levels.
MAX_CONFIG_BYTES = 4 * 2**20
MAX_SEEDS = 100_000
SEEDS_WHY = (
    f"at most {MAX_SEEDS} per config: reading and validating more takes seconds before any work, and a larger "
    "study runs better as several sweeps"
)
MAX_ITEMS = MAX_SEEDS
MAX_NODES = 2 * MAX_SEEDS
MAX_DEPTH = 64


class YAMLRefused(yaml.YAMLError):
    """YAML that parses but that configs do not accept: duplicate keys, aliases, deep nesting, too many values."""


try:  # libyaml's scanner and parser (the composer and constructor below stay in Python): a long list reads 4x faster
    from yaml.cyaml import CParser as _Parser
except ImportError:  # PyYAML without libyaml: the pure-Python parser, same results
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class _Loader(Composer, _Parser, SafeConstructor, Resolver):
    """Safe YAML with limits (no aliases, duplicate keys refused, bounded depth and size), and 1e-3 and 2E6 read as
    floats (YAML 1.1 reads them as strings without a dot)."""

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._path: list[
            Any
        ] = []  # the keys (str), list positions (int) or None (a key itself) down to the node composed
        self._nodes = 0

    def _keys(self) -> str:
        """The dotted key path of the node being composed."""
        return ".".join(k for k in self._path if isinstance(k, str))

    def _where(self) -> str:
        """The dotted key path of the node being composed, and its line."""
        line = self.peek_event().start_mark.line + 1
        return f"{clip(self._keys())} (line {line})" if self._keys() else f"line {line}"

    def _check(self, parent: Any, index: Any) -> None:
        """YAMLRefused for an alias or a node past the limits, before it is read further."""
        if self.check_event(
            yaml.AliasEvent
        ):  # an alias repeats a value: ten of them nested expand a 300-byte file 10^9 times
            raise YAMLRefused(
                f"{self._where()}: YAML aliases "
                f"(*{clip(self.peek_event().anchor, 40)}) are not accepted; write the value out"
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise YAMLRefused(f"{self._where()}: more than {MAX_NODES} values in one YAML document")
        if isinstance(index, int) and index >= MAX_ITEMS:
            if self._keys().rpartition(".")[2] == "seeds":
                raise YAMLRefused(f"{self._where()}: more than {MAX_SEEDS} seeds ({SEEDS_WHY})")
            raise YAMLRefused(f"{self._where()}: more than {MAX_ITEMS} items in one list")
        if index is None and isinstance(parent, MappingNode) and len(parent.value) >= MAX_ITEMS:
            raise YAMLRefused(f"{self._where()}: more than {MAX_ITEMS} keys in one mapping")
        if len(self._path) > MAX_DEPTH:
            raise YAMLRefused(f"{self._where()}: nested more than {MAX_DEPTH} levels deep")

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node, refusing aliases and any node past the limits (_check)."""
        self._path.append(clip(index.value, 60) if isinstance(index, ScalarNode) else index)
        try:
            self._check(parent, index)
            return super().compose_node(parent, index)
        finally:
            self._path.pop()

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        """A mapping whose keys are distinct: a second `train:` section used to replace the first without a word."""
        if isinstance(node, MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)  # cached: the base class gets the same object
                try:
                    seen = first.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base class names it
                    continue
                if seen is not key_node:
                    raise YAMLRefused(
                        f"line {key_node.start_mark.line + 1}: duplicate key {quote(key)} "
                        f"(first at line {seen.start_mark.line + 1}); give each key once"
                    )
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text safely, exponent floats without a dot included: the one YAML reader of configs and overrides.

    Raises yaml.YAMLError (YAMLRefused past the limits: aliases, duplicate keys, MAX_DEPTH, MAX_ITEMS, MAX_NODES)."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except RecursionError:  # a safety net: MAX_DEPTH keeps the composer far from the interpreter's limit
        raise YAMLRefused(f"nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line on why YAML was not read: the refusal, or the parser's problem and where."""
    if isinstance(err, YAMLRefused):
        return clip(str(err), 300)
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or err.__class__.__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return clip(f"{where}{problem}", 200)


def _known(registry: Any, name: str) -> str:
    """`name` if the registry (ensemble.registry.Registry) holds it; a ValueError listing its names otherwise."""
    if name not in registry:
        raise ValueError(registry.one_of())
    return name


# Sizes and counts: the compiled step (mlp/kernel) takes widths, batch sizes and ensemble sizes as C ints, and an epoch
# or step count beyond one would never finish; every such key lies in [1, INT_MAX].
INT_MAX = 2**31 - 1
SEED_MAX = 2**63 - 1  # seeds are stored as int64
MAX_THREADS = 1024  # more than any CPU has cores; torch would try to start them all
NAME_CHARS = 100  # registry names, data kinds and devices: longer ones are no name of anything


def _path_text(v: str) -> str:
    if "\x00" in v:
        raise ValueError("a path cannot contain a NUL character")
    return v


Count = Annotated[int, Field(ge=1, le=INT_MAX)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_CHARS)]
PathText = Annotated[str, Field(min_length=1, max_length=4095), AfterValidator(_path_text)]  # PATH_MAX less the NUL
Unit = Annotated[float, Field(ge=0.0, lt=1.0)]  # a fraction below 1: momentum, betas, prune ratios


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False)


class TeacherConfig(_Section):
    widths: list[Count] = Field(
        default_factory=lambda: [10],
        min_length=1,
        max_length=1000,
        description=(
            "Hidden widths m_l of the teacher, bottom to top; [10] is a two-layer net. The student's are round(multi x "
            "m_l)."
        ),
    )
    activation: Name = Field(
        "relu",
        description=(
            "psi for teacher AND student, a registered activation (ensemble/activations/): relu, leaky_relu (max(z, a "
            "z)), linear (identity: deep linear nets, the released two-layer code's nonlinear: false) or erf. relu, "
            "leaky_relu and linear run in the compiled kernel, erf on the torch path; converge and the theory "
            "diagnostics need a piecewise-linear one (not erf)."
        ),
    )
    leaky_slope: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="a of leaky_relu, psi(z) = max(z, a z); ignored by the other activations.",
    )
    recipe: Literal["two_layer", "deep"] = Field(
        "two_layer",
        description=(
            "How the teacher is drawn: two_layer (docs/model.md 4.1: unit-norm grid rows, fixed bias, fan-out row j "
            "divided by (j+1)^p) or deep (4.3: grid rows, U(-0.5, 0.5) biases, column decay, rows normalized)."
        ),
    )
    net: Literal["mlp", "conv"] | None = Field(
        None,
        description=(
            "The network family of teacher and student, which picks the pipeline: mlp (fully connected; image inputs "
            "are flattened) or conv (3x3 valid convolutions and a linear head, docs/images.md). null: conv for an "
            "image data set (cifar10, mnist, fashion_mnist), mlp for every other data kind."
        ),
    )
    decay: float = Field(
        1.0,
        ge=0.0,
        description=(
            "The fan-out decay p: two_layer divides the fan-out of hidden node j by (j+1)^p, deep divides column i of "
            "every layer above the first by (1+i)^p."
        ),
    )
    bias: float = Field(-0.1, description="The fixed hidden and output bias of the two_layer recipe.")
    tune: bool = Field(
        False,
        description=(
            "Tune the teacher on the evaluation set: each hidden bias shifted by its median pre-activation (every node "
            "active about half the time), then every output standardized (docs/model.md 4.3)."
        ),
    )
    batchnorm: Literal["none", "before", "after"] = Field(
        "none",
        description=(
            "BatchNorm before or after each hidden activation, in teacher and student; the teacher's is a fixed affine "
            "map set from the evaluation set (docs/model.md 1.10)."
        ),
    )
    batchnorm_affine: bool = Field(False, description="Whether the BatchNorm layers have a learned scale and shift.")
    checkpoint: PathText | None = Field(
        None,
        description=(
            "A trained conv teacher (`studentspec teacher train` or `prune`) whose outputs conv students learn; image "
            "data only, and the other teacher keys must describe it."
        ),
    )
    no_bias: bool = Field(
        False,
        description=(
            "The released code's no_bias (docs/model.md 4.5): nets without biases. The teacher's are 0 (its weights "
            "are the same seed's as with biases: drawn, then dropped; teacher.bias is not used); the student's start "
            "at 0 and are set back to 0 after every step. Not with teacher.tune, which sets biases."
        ),
    )

    @field_validator("activation")
    @classmethod
    def _registered(cls, v: str) -> str:
        from ..ensemble import activations  # here, not at import: the config layer stays light

        return _known(activations.ACTIVATIONS, v)


class StudentConfig(_Section):
    # the student widths round(multi * m) are checked against INT_MAX by Config
    multi: float = Field(
        5.0,
        ge=1.0,
        description="Over-realization: the student's width is round(multi x teacher width) in every layer.",
    )
    init_std: float | None = Field(
        0.005,
        gt=0.0,
        description="Student weights N(0, init_std^2) with zero biases; null: PyTorch's default Linear initialization.",
    )
    init_scale: float = Field(
        1.0,
        gt=0.0,
        description="Multiplies the initial student (0.1: the released "
        "deep code's intended scale-down, docs/model.md 4.3).",
    )
    # the original code's knobs (docs/model.md 4.5; docs/configuration.md): MLP runs only
    normalize: bool = Field(
        False,
        description=(
            "The released two-layer normalize (docs/model.md 4.5): every hidden layer's weight columns (a node's "
            "incoming weights, not its bias) rescaled to unit L2 norm at initialization and after every step; the "
            "output layer is left alone."
        ),
    )
    adv_init: Literal["none", "adv", "help"] = Field(
        "none",
        description=(
            "adv or help (docs/model.md 4.5): after the random initialization, flip every first-layer student weight "
            "vector (not its bias) whose inner product with the weakest teacher node's (index m-1) is positive (adv: "
            "pointed away from it) or negative (help: towards it)."
        ),
    )
    perturb: float | None = Field(
        None,
        ge=0.0,
        description=(
            "sigma: the student starts as the (tuned) teacher plus N(0, sigma^2) on every weight and bias, drawn from "
            "the student's generator (per layer: W, then b). Needs student.multi: 1 and init_scale: 1."
        ),
    )
    same_dir: bool = Field(
        False,
        description=(
            "Each student layer becomes the teacher's layer times r = (the random initialization's Frobenius norm) / "
            "(the teacher layer's), the bias scaled by the same r (the released code's set_same_dir). Needs "
            "student.multi: 1."
        ),
    )
    same_sign: bool = Field(
        False,
        description=(
            "Flip every student weight and bias whose sign is opposite to the teacher's (a 0 on either side is kept). "
            "Needs student.multi: 1."
        ),
    )


class DataConfig(_Section):
    kind: Name = Field(
        "gaussian",
        description=(
            "gaussian, uniform, online (fresh inputs every step, no training set) or teacher_aware (docs/model.md "
            "4.2), each a registered MLP data kind (mlp/data/); or an image data set, cifar10, mnist or fashion_mnist "
            "(conv students; docs/images.md)."
        ),
    )
    root: PathText | None = Field(
        None,
        description=(
            "The folder (or, for CIFAR-10, the .tar.gz archive) of an image data set; nothing is downloaded. null: "
            "fashion_mnist reads /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist) when installed."
        ),
    )
    augment: bool | None = Field(
        None,
        description=(
            "Images: random crop (padding 4) and horizontal flip of the training images (conv: every batch; MLP: the "
            "training set as drawn, again every epoch with data.regenerate). null: on for conv students of a real "
            "image set, off for MLPs and Gaussian images."
        ),
    )
    like: Name | None = Field(
        None,
        description=(
            "gaussian_like: the image set (cifar10, mnist, fashion_mnist; from data.root) whose first data.n_train "
            "flattened, normalized training images give the inputs' mean and covariance."
        ),
    )
    std: float = Field(
        1.5,
        gt=0.0,
        description="Input standard deviation s: gaussian N(0, s^2 I), uniform U(-s sqrt3, s sqrt3) per coordinate.",
    )
    n_train: Count = Field(10000, description="Size of the fixed training set (images: the first n training images).")
    n_eval: int = Field(
        10000,
        ge=2,
        le=INT_MAX,
        description="Size of the separate evaluation set (images: the first n test images).",
    )
    regenerate: bool = Field(
        False,
        description="Draw a new training set every epoch (the released code's regen_dataset).",
    )
    boundary_exact: bool = Field(
        False,
        description=(
            "teacher_aware: keep the base points exactly on the teacher's boundaries instead of reproducing the "
            "paper's final rescaling, which moves them slightly off (docs/model.md 4.2)."
        ),
    )
    boundary_shift_mean: float = Field(
        2.0,
        ge=0.0,
        description="teacher_aware: the copies x +- a u_j are shifted by a ~ U[mean, mean + sigma]; this is mean.",
    )
    boundary_shift_sigma: float = Field(
        2.0,
        ge=0.0,
        description="teacher_aware: the width sigma of the shift's interval U[mean, mean + sigma].",
    )


class TrainConfig(_Section):
    optimizer: Name = Field(
        "sgd",
        description=(
            "A registered optimizer (ensemble/optimizers/): sgd, adam, or gd (full batch: the whole training set every "
            "step)."
        ),
    )
    lr: float | dict[int, float] = Field(
        0.01,
        description=(
            "The learning rate: a number, or a schedule {epoch: lr} that gives epoch 0 (each entry holds until the "
            "next); every value > 0."
        ),
    )
    momentum: Unit = Field(0.0, description="SGD momentum, PyTorch's rule (dampening 0, no Nesterov).")
    # an L2 coefficient (added to the gradient): at 1 or more the decay alone moves a weight by lr times itself or
    # more per step, which no experiment here means
    weight_decay: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="L2 coefficient added to the gradient (SGD and Adam, PyTorch's rule).",
    )
    betas: list[Unit] = Field(
        default_factory=lambda: [0.9, 0.999],
        min_length=2,
        max_length=2,
        description="Adam's beta1 and beta2.",
    )
    batch_size: Count = Field(16, description="Samples per SGD step and seed.")
    sampling: Literal["replacement", "shuffle"] = Field(
        "replacement",
        description=(
            "replacement: every batch drawn with replacement (docs/model.md 4.1); shuffle: epochs of shuffled passes "
            "(4.3)."
        ),
    )
    steps_per_epoch: Count | None = Field(
        1000,
        description="SGD steps per epoch; null: one pass over the training set.",
    )
    epochs: int = Field(
        100,
        ge=0,
        le=INT_MAX,
        description="Number of epochs (an evaluation follows each eval.every-th).",
    )
    loss: Literal["half_sse", "mse", "ce"] = Field(
        "half_sse",
        description=(
            "The objective (ensemble/losses.py, docs/model.md 1.6): half_sse = 1/2 the squared error summed over the C "
            "outputs, mean over the batch (the paper's J, the released two-layer code); mse = the mean over batch and "
            "outputs = (2/C) J (PyTorch's MSELoss, the released deep code); ce = cross-entropy against the teacher's "
            "argmax."
        ),
    )
    dtype: Literal["float32", "float64"] = Field(
        "float64",
        description="Precision of training (and, unless eval.dtype says otherwise, of evaluation).",
    )
    device: Name = Field(
        "cpu",
        description=(
            "A torch device (cpu, cuda, cuda:1, mps); checked to exist when training starts, so a stored GPU config "
            "still loads elsewhere."
        ),
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=MAX_THREADS,
        description="torch threads of this run; null: torch's default.",
    )
    checkpoint_every: Count | None = Field(
        None,
        description=(
            "Every N epochs write a checkpoint beside the run dir (.NAME.checkpoint, replaced whole, removed once the "
            "run dir is written); `run --resume` and a re-run sweep continue from it, bitwise as an uninterrupted run. "
            "null: none."
        ),
    )
    kernel: Literal["auto", "c", "torch"] = Field(
        "auto",
        description=(
            "auto: the compiled SGD step and evaluation pass (mlp/kernel/) where they apply (an x86-64 CPU with "
            "AVX2/FMA, no BatchNorm; the step also needs plain SGD), else the torch path; c: insist (exit 2 with the "
            "reason where it cannot run); torch: never. STUDENTSPEC_KERNEL=torch in the environment also turns it off."
        ),
    )
    freeze: list[int] = Field(
        default_factory=list,
        max_length=1000,
        description=(
            "Layers never updated (W and b), 1-based: 1 .. L with L the output layer; the two-layer feature_fixed is "
            "[1], top_layer_fixed [2]. They keep their initial values bit for bit. Not every layer."
        ),
    )
    lr_reduction: Count | None = Field(
        None,
        description=(
            "K: halve the lr at every epoch i > 0 with i % K == 0 (docs/model.md 4.5), on top of train.lr: lr(epoch) = "
            "(constant or schedule value) x 0.5^(epoch // K)."
        ),
    )
    sample_budget: int | None = Field(
        None,
        ge=1,
        le=SEED_MAX,
        description=(
            "Back-propagated samples in all (the released deep code's total_bp_iters): sets train.epochs = budget / "
            "the samples of one epoch (steps x batch_size; x n_train for gd); must be a whole multiple, and an "
            "explicit train.epochs must agree."
        ),
    )

    @field_validator("optimizer")
    @classmethod
    def _registered_optimizer(cls, v: str) -> str:
        from ..ensemble import optimizers  # here, not at import: the config layer stays light

        return _known(optimizers.OPTIMIZERS, v)

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, v: str) -> str:
        import torch  # here, not at import: the config layer stays light

        try:
            dev = torch.device(v)
        except RuntimeError:
            raise ValueError("not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
        if dev.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device type {dev.type!r} is not supported (cpu, cuda, mps)")
        return v

    @field_validator("lr")
    @classmethod
    def _lr_positive(cls, v: float | dict[int, float]) -> float | dict[int, float]:
        values = v.values() if isinstance(v, dict) else [v]
        if any(x <= 0 for x in values):
            raise ValueError("learning rates must be > 0")
        if isinstance(v, dict):
            if 0 not in v:
                raise ValueError("a schedule {epoch: lr} must give the lr of epoch 0")
            if any(not 0 <= k <= INT_MAX for k in v):
                raise ValueError(f"schedule epochs must lie in [0, {INT_MAX}]")
        return v


class TeacherTrainConfig(_Section):
    """How `studentspec teacher train|prune` trains a conv teacher on labels (image data only)."""

    epochs: int = Field(30, ge=0, le=INT_MAX, description="Epochs of training the conv teacher on labels.")
    lr: float = Field(0.05, gt=0.0, description="The teacher's initial learning rate (SGD).")
    momentum: Unit = Field(0.9, description="The teacher's SGD momentum.")
    weight_decay: float = Field(
        5e-4,
        ge=0.0,
        lt=1.0,
        description="The teacher's L2 weight decay, as train.weight_decay.",
    )
    batch_size: Count = Field(128, description="Images per step when training the teacher.")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine",
        description="The teacher's learning rate over the epochs: cosine decay, or constant.",
    )
    n_train: Count | None = Field(
        None,
        description="Train the teacher on the first n training images only (quick scale); null: all of them.",
    )
    seed: int = Field(
        0,
        ge=0,
        le=SEED_MAX,
        description="Seed of the teacher's initialization, batch order and augmentation.",
    )
    prune_ratios: list[Unit] = Field(
        default_factory=lambda: [0.3, 0.5, 0.5, 0.7],
        max_length=1000,
        description=(
            "Per conv layer, the fraction of channels `teacher prune` masks (the weakest by mean absolute fan-out "
            "weight; floor(ratio x channels))."
        ),
    )
    finetune_epochs: int = Field(
        10,
        ge=0,
        le=INT_MAX,
        description="Epochs of fine-tuning with the pruning masks in place.",
    )
    finetune_lr: float = Field(0.01, gt=0.0, description="Learning rate of the fine-tuning.")


class EvalConfig(_Section):
    every: Count = Field(1, description="Evaluate every N epochs, and always before training and at the end.")
    threshold: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        description="A teacher node is specialized when its best correlation exceeds this (docs/model.md 2.3).",
    )
    batch_size: Count = Field(
        256,
        description=(
            "Evaluation chunk: samples per seed (images: per image) processed at once; small enough that an ensemble's "
            "chunk stays in cache (BENCHMARKS.md)."
        ),
    )
    grad_norm: bool = Field(
        True,
        description="Whether to compute the full-batch gradient norm of every layer at every evaluation.",
    )
    order: bool = Field(
        False,
        description=(
            "Store the order parameters R, Q, T of the augmented weights at every evaluation in order.parquet "
            "(mlp/order.py; MLP runs; docs/model.md 2.9). Off by default because the table is large at paper scale; "
            "measuring changes no other stored number."
        ),
    )
    # precision of the evaluation's forward and gradient passes (sums always float64); null: train.dtype
    dtype: Literal["float32", "float64"] | None = Field(
        None,
        description=(
            "Precision of the evaluation's forward and gradient passes; null: train.dtype. float32 evaluates a float64 "
            "run faster; every sum (MSE, loss, correlation sums, the full-batch gradient) is float64 either way and "
            "training is untouched. Its effect on the stored numbers is measured in BENCHMARKS.md. MLP runs only."
        ),
    )


class TheoryConfig(_Section):
    enabled: bool = Field(
        False,
        description=(
            "Compute the Lemma's diagnostics at every evaluation (MLP runs without BatchNorm, piecewise-linear "
            "activation; docs/theory.md)."
        ),
    )
    samples: Count = Field(2000, description="Training samples the diagnostics use.")
    near: float = Field(
        0.1,
        gt=0.0,
        description="Distance from a teacher node's boundary within which a sample counts as near it (near_boundary).",
    )
    quantiles: list[float] = Field(
        default_factory=lambda: [0.5, 0.9, 0.99],
        max_length=100,
        description="Quantiles of the per-sample gradient norms to store (ps_grad_q...); distinct, each in [0, 1].",
    )

    @field_validator("quantiles")
    @classmethod
    def _unit(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= q <= 1.0 for q in v):
            raise ValueError("quantiles must lie in [0, 1]")
        if len(set(v)) != len(v):
            raise ValueError("quantiles must be distinct (each names a column)")
        return v


class Config(_Section):
    """The whole experiment; field names are the public config keys."""

    seeds: list[int] = Field(
        default_factory=lambda: [1, 2, 3],
        min_length=1,
        max_length=MAX_SEEDS,
        description=(
            "One ensemble member per seed, each with its own teacher, data, student and random generators; distinct, "
            "each in [0, 2^63-1]. Seed s gives the same numbers alone or in any ensemble."
        ),
    )
    input_dim: Count = Field(
        100,
        description=(
            "d, the input dimension. MLPs on images (or gaussian_like): left out, C x H x W of the images; given, it "
            "must equal it. Unused by conv runs."
        ),
    )
    output_dim: Count = Field(
        50,
        description=(
            "C, the number of outputs of teacher and student. Left out: 10 for MLPs on images (or gaussian_like) and "
            "100 for a random conv teacher, as the released code; a trained conv teacher's checkpoint sets its own."
        ),
    )
    teacher: TeacherConfig = Field(
        default_factory=TeacherConfig,
        description=(
            "The architecture teacher and student share (widths, activation, BatchNorm, biases) and how the teacher is "
            "drawn (docs/model.md 1.9, 4.1, 4.3) or which trained conv teacher is loaded."
        ),
    )
    student: StudentConfig = Field(
        default_factory=StudentConfig,
        description=(
            "The student's width and initialization, including the released code's initialization knobs (docs/model.md "
            "4.5)."
        ),
    )
    data: DataConfig = Field(
        default_factory=DataConfig,
        description=(
            "The inputs: a registered MLP data kind or an image data set, the training and evaluation set sizes "
            "(docs/model.md 1.8)."
        ),
    )
    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description=(
            "How the student is trained: objective, optimizer, learning rate, batches, epochs, precision, device and "
            "compute path."
        ),
    )
    teacher_train: TeacherTrainConfig = Field(
        default_factory=TeacherTrainConfig,
        description=(
            "How `studentspec teacher train` and `teacher prune` train and prune a conv teacher on labels (image data "
            "only; docs/images.md)."
        ),
    )
    eval: EvalConfig = Field(
        default_factory=EvalConfig,
        description="When and how the specialization metrics are measured (docs/model.md 2).",
    )
    theory: TheoryConfig = Field(
        default_factory=TheoryConfig,
        description="The Lemma's diagnostics at every evaluation (docs/theory.md).",
    )

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        if any(s < 0 or s > SEED_MAX for s in v):
            raise ValueError("seeds must lie in [0, 2**63 - 1] (they are stored as int64)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.train.loss == "ce" and self.output_dim < 2:
            raise ValueError("train.loss=ce needs output_dim >= 2")
        from ..ensemble.optimizers import full_batch  # here, not at import: the config layer stays light

        if self.data.kind == "online" and full_batch(self.train.optimizer):
            raise ValueError(f"train.optimizer={self.train.optimizer} needs a fixed training set, not data.kind=online")
        if max(self.student_widths) > INT_MAX:
            raise ValueError(
                f"student.multi: {self.student.multi:g} x teacher.widths gives a student layer wider than {INT_MAX}"
            )
        from ..ensemble import activations

        if self.theory.enabled and not activations.get(self.teacher.activation).piecewise_linear:
            raise ValueError(
                "theory.enabled: the Lemma's diagnostics need a piecewise-linear activation, not "
                f"teacher.activation={self.teacher.activation}"
            )
        if self.theory.enabled and self.teacher.batchnorm != "none":
            raise ValueError("theory.enabled: diagnostics support nets without BatchNorm (teacher.batchnorm=none)")
        _check_knobs(self)
        return self

    @property
    def student_widths(self) -> list[int]:
        """Student hidden widths: round(multi * teacher width) per layer."""
        return [max(1, round(self.student.multi * m)) for m in self.teacher.widths]

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-ready dict of every resolved value."""
        return self.model_dump(mode="python")


MLP_KNOBS = {
    "train.freeze": lambda c: bool(c.train.freeze),
    "student.normalize": lambda c: c.student.normalize,
    "teacher.no_bias": lambda c: c.teacher.no_bias,
    "student.adv_init": lambda c: c.student.adv_init != "none",
    "student.perturb": lambda c: c.student.perturb is not None,
    "student.same_dir": lambda c: c.student.same_dir,
    "student.same_sign": lambda c: c.student.same_sign,
    "train.sample_budget": lambda c: c.train.sample_budget is not None,
}


def _check_knobs(cfg: Config) -> None:
    """ValueError (naming the key) for a combination of the original code's knobs (docs/model.md 4.5) that has no
    meaning; resolves train.sample_budget into train.epochs."""
    t, sc, tc = cfg.teacher, cfg.student, cfg.train
    if t.checkpoint is not None:  # image data (conv students): the knobs below exist for MLP ensembles only
        on = next((key for key, used in MLP_KNOBS.items() if used(cfg)), None)
        if on is not None:
            raise ValueError(f"{on}: supported for MLP runs only, not with a conv teacher (teacher.checkpoint)")
    depth = len(t.widths) + 1
    if any(not 1 <= l <= depth for l in tc.freeze) or len(set(tc.freeze)) != len(tc.freeze):
        raise ValueError(
            f"train.freeze: distinct layer numbers in 1..{depth} (1 = the "
            f"first hidden layer, {depth} = the output layer), got {quote(tc.freeze)}"
        )
    if len(tc.freeze) == depth:
        raise ValueError(f"train.freeze: every layer ({quote(tc.freeze)}) is frozen: nothing would train")
    copies = [
        k
        for k, on in (
            ("student.perturb", sc.perturb is not None),
            ("student.same_dir", sc.same_dir),
            ("student.same_sign", sc.same_sign),
        )
        if on
    ]
    if copies and sc.multi != 1:
        raise ValueError(
            f"{copies[0]}: initializes the student from the teacher "
            f"layer by layer, so it needs student.multi=1 (got {sc.multi:g})"
        )
    if copies and sc.adv_init != "none":
        raise ValueError(f"student.adv_init: {sc.adv_init} flips a random init; it does not combine with {copies[0]}")
    if sc.perturb is not None and sc.init_scale != 1:
        raise ValueError(
            "student.init_scale: student.perturb replaces the random init, "
            f"so init_scale={sc.init_scale:g} would be ignored; leave it at 1"
        )
    if t.no_bias and t.tune:
        raise ValueError(
            "teacher.no_bias: teacher.tune sets biases (median shift, output standardization); use teacher.tune=false"
        )
    if tc.sample_budget is not None:
        if cfg.data.kind == "online" and tc.steps_per_epoch is None:
            raise ValueError(
                "train.sample_budget: data.kind=online has no training set to pass over; set train.steps_per_epoch"
            )
        per_epoch = samples_per_epoch(tc, cfg.data.n_train)
        epochs, rest = divmod(tc.sample_budget, per_epoch)
        if rest or not epochs:
            raise ValueError(
                f"train.sample_budget: {tc.sample_budget} is not a "
                f"positive multiple of the {per_epoch} samples of one epoch"
            )
        if "epochs" in tc.model_fields_set and tc.epochs != epochs:
            raise ValueError(
                f"train.sample_budget: {tc.sample_budget} samples are "
                f"{epochs} epochs, but train.epochs={tc.epochs}; give one of them"
            )
        tc.epochs = epochs


def samples_per_epoch(train: TrainConfig, n_train: int) -> int:
    """Back-propagated samples of one epoch: its steps times
    batch_size (times n_train for gd, which takes the whole set)."""
    from ..ensemble.optimizers import full_batch  # here, not at import: the config layer stays light

    return steps_per_epoch(train, n_train) * (n_train if full_batch(train.optimizer) else train.batch_size)


def lr_at(lr: float | dict[int, float], epoch: int, reduction: int | None = None) -> float:
    """The learning rate of an epoch: a constant or the last
    schedule entry at or before it, times 0.5 ** (epoch // reduction).

    train.lr_reduction K halves the lr at every epoch i > 0 with i % K == 0 (docs/model.md 4.5), on top of a schedule.
    """
    base = lr[max(k for k in lr if k <= epoch)] if isinstance(lr, dict) else lr
    return base if reduction is None else base * 0.5 ** (epoch // reduction)


def steps_per_epoch(train: TrainConfig, n_train: int) -> int:
    """SGD steps per epoch: train.steps_per_epoch, or one pass over n_train samples when it is null."""
    if train.steps_per_epoch is not None:
        return train.steps_per_epoch
    return max(1, math.ceil(n_train / train.batch_size))


def check_device(device: str) -> None:
    """Raise ConfigError unless `device` (valid syntax) exists on this machine: checked when training starts,
    not when a config loads, so a GPU run's stored config still loads on a laptop."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device: {device}: CUDA is not available on this "
            f"machine (torch {torch.__version__} sees no CUDA device)"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device: {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device: {device}: MPS is not available on this machine")


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{clip(key)}: {quote(part)} is not a section")
        node = child
    node[parts[-1]] = value


def parse_value(key: str, raw: str) -> Any:
    """The value of one override `key=raw`, parsed as YAML (an empty raw is null); ConfigError naming the key."""
    if raw == "":
        return None
    try:
        return parse_yaml(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"{clip(key)}: cannot parse value {quote(raw)} ({yaml_problem(err)})") from None


def _split(item: str) -> tuple[str, str]:
    """'a.b=1' -> ('a.b', '1'); ConfigError unless it looks like key=value."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{clip(item)}: override must look like key=value")
    return key.strip(), raw


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ['a.b=1', 'c=[1,2]'] into a nested dict, values parsed as YAML scalars/lists."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, raw = _split(item)
        _set_dotted(tree, key, parse_value(key, raw))
    return tree


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "lr":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _first_error(err: ValidationError) -> str:
    errors = err.errors()
    # a union (train.lr: float | dict) reports every member; a member whose type did not even match says least
    e = next((x for x in errors if not x["type"].endswith("_type")), errors[0])
    # union members (train.lr: float | dict) name their type in the location: keep only real keys; a list position
    # (train.betas' second value) is told beside the value, so that the line starts with a key one can set
    keys, item = [], ""
    for before, p in zip([None, *e["loc"]], e["loc"]):
        if str(p).startswith(("function-after", "float", "int", "dict[", "constrained-")):
            continue
        if isinstance(p, int) and not str(before).startswith("dict["):  # a list position, not a schedule's epoch
            item = f" as item {p + 1}"
        else:
            keys.append(str(p))
    loc = clip(".".join(keys))
    msg = clip(e["msg"].removeprefix("Value error, "), 300)
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif e["type"] == "literal_error":
        msg = f"must be one of {e['ctx']['expected']}, got {quote(e['input'])}{item}"
    elif "input" in e and e["type"] not in ("missing",) and loc:  # a whole-config check names its keys itself
        msg = f"{msg} (got {quote(e['input'])}{item})"
    return f"{loc}: {msg}" if loc else msg


def build_config(tree: dict[str, Any]) -> Config:
    """Validate a nested dict into a Config, or raise ConfigError with one line."""
    seeds = tree.get("seeds")
    if isinstance(seeds, list) and len(seeds) > MAX_SEEDS:  # before validating every one of them
        raise ConfigError(f"seeds: {len(seeds)} seeds ({SEEDS_WHY})")
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_first_error(err)) from None


def _why(err: OSError) -> str:
    return os.strerror(err.errno) if err.errno else clip(str(err) or err.__class__.__name__)


def _config_text(path: Path) -> str:
    """The text of a config file; ConfigError (one line) for one
    missing, unreadable, not a regular file, too large or not text."""
    name = clip(str(path))
    try:
        st = path.stat()
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ConfigError(f"{name}: config file not found") from None
        raise ConfigError(f"{name}: cannot read the config file ({_why(err)})") from None
    except ValueError:  # an embedded NUL
        raise ConfigError(f"{name}: not a file name (it holds a NUL character)") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{name}: config file not found (it is a directory)")
    if not stat.S_ISREG(st.st_mode):  # reading a FIFO would wait for a writer
        raise ConfigError(f"{name}: not a regular file (a FIFO, socket or device); give a YAML file")
    too_large = (
        f"{name}: the config file is {{:.1f}} MB, more than the "
        f"{MAX_CONFIG_BYTES / 2**20:.0f} MB a config may be (is it a data file?)"
    )
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(too_large.format(st.st_size / 2**20))
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # a file that grew since stat() is still bounded
    except OSError as err:
        raise ConfigError(f"{name}: cannot read the config file ({_why(err)})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(too_large.format(len(data) / 2**20))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{name}: not valid YAML (not UTF-8 text: byte {err.start})") from None


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: {}); ConfigError (one line, naming the file) otherwise."""
    path = Path(path)
    text = _config_text(path)
    try:
        loaded = parse_yaml(text)
    except YAMLRefused as err:
        raise ConfigError(f"{clip(str(path))}: {yaml_problem(err)}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{clip(str(path))}: not valid YAML ({yaml_problem(err)})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{clip(str(path))}: top level must be a mapping of keys")
    return loaded


def config_tree(path: str | Path | None) -> dict[str, Any]:
    """The config file's mapping without its `sweep:` section (read by `studentspec sweep`); {} for no file."""
    if path is None:
        return {}
    tree = read_mapping(path)
    tree.pop("sweep", None)
    return tree


def config_maker(path: str | Path | None = None, tree: dict[str, Any] | None = None) -> Callable[[list[str]], Config]:
    """A function overrides -> Config over one base config (the file at `path`, or its mapping `tree` when given):
    the file is read once and each distinct override parsed once, so a sweep of many points validates each once."""
    base = config_tree(path) if tree is None else tree
    values: dict[str, Any] = {}  # override item -> (key, parsed value)

    def make(overrides: list[str]) -> Config:
        update: dict[str, Any] = {}
        for item in overrides:
            if item not in values:
                key, raw = _split(item)
                values[item] = (key, parse_value(key, raw))
            key, value = values[item]
            _set_dotted(
                update, key, copy.deepcopy(value) if isinstance(value, dict) else value
            )  # a later key may set into it
        return build_config(_merge(base, update))

    return make


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults), apply dotted overrides, validate."""
    return build_config(_merge(config_tree(path), parse_overrides(overrides or [])))


def env_choice(name: str, allowed: tuple[str, ...]) -> str | None:
    """The environment variable `name` when set (None when unset
    or empty); ConfigError naming it unless one of `allowed`."""
    value = os.environ.get(name, "")
    if value == "":
        return None
    if value not in allowed:
        raise ConfigError(f"{name}: must be {' or '.join(allowed)} (or unset), got {quote(value)} in the environment")
    return value
