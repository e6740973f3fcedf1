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


QUOTE_CHARS = 100  # an error message quotes at most this many characters of a value (a 300 MB value once became one line)


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
SEEDS_WHY = (f"at most {MAX_SEEDS} per config: reading and validating more takes seconds before any work, and a larger "
             "study runs better as several sweeps")
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
        self._path: list[Any] = []  # the keys (str), list positions (int) or None (a key itself) down to the node composed
        self._nodes = 0

    def _where(self) -> str:
        """The dotted key path being composed, and its line."""
        keys = clip(".".join(k for k in self._path if isinstance(k, str)))
        line = self.peek_event().start_mark.line + 1
        return f"{keys} (line {line})" if keys else f"line {line}"

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node, refusing aliases and any node past the limits before it is read further."""
        if self.check_event(yaml.AliasEvent):  # an alias repeats a value: ten of them nested expand a 300-byte file 10^9 times
            raise YAMLRefused(f"{self._where()}: YAML aliases (*{clip(self.peek_event().anchor, 40)}) are not accepted; write the value out")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise YAMLRefused(f"{self._where()}: more than {MAX_NODES} values in one YAML document")
        if isinstance(index, int) and index >= MAX_ITEMS:
            if self._path[-1:] == ["seeds"]:
                raise YAMLRefused(f"{self._where()}: more than {MAX_SEEDS} seeds ({SEEDS_WHY})")
            raise YAMLRefused(f"{self._where()}: more than {MAX_ITEMS} items in one list")
        if index is None and isinstance(parent, MappingNode) and len(parent.value) >= MAX_ITEMS:
            raise YAMLRefused(f"{self._where()}: more than {MAX_ITEMS} keys in one mapping")
        if len(self._path) >= MAX_DEPTH:
            raise YAMLRefused(f"{self._where()}: nested more than {MAX_DEPTH} levels deep")
        self._path.append(clip(index.value, 60) if isinstance(index, ScalarNode) else index)
        try:
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
                    raise YAMLRefused(f"line {key_node.start_mark.line + 1}: duplicate key {quote(key)} "
                                      f"(first at line {seen.start_mark.line + 1}); give each key once")
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


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
    widths: list[Count] = Field(default_factory=lambda: [10], min_length=1, max_length=1000)
    activation: Name = "relu"  # a registered activation (studentspec.activations): relu, leaky_relu, linear, erf
    leaky_slope: float = Field(0.1, gt=0.0, lt=1.0)
    recipe: Literal["two_layer", "deep"] = "two_layer"
    decay: float = Field(1.0, ge=0.0)
    bias: float = -0.1
    tune: bool = False
    batchnorm: Literal["none", "before", "after"] = "none"
    batchnorm_affine: bool = False
    checkpoint: PathText | None = None  # a trained conv teacher (`studentspec teacher train`); image data only
    no_bias: bool = False  # docs/model.md 4.5 `no_bias`: teacher and student biases 0, the student's kept 0 after every step

    @field_validator("activation")
    @classmethod
    def _registered(cls, v: str) -> str:
        from ..ensemble import activations  # here, not at import: the config layer stays light

        return _known(activations.ACTIVATIONS, v)


class StudentConfig(_Section):
    multi: float = Field(5.0, ge=1.0)  # the student widths round(multi * m) are checked against INT_MAX by Config
    init_std: float | None = Field(0.005, gt=0.0)
    init_scale: float = Field(1.0, gt=0.0)
    # the original code's knobs (docs/model.md 4.5; docs/configuration.md): MLP runs only
    normalize: bool = False  # every hidden weight column (not the bias) rescaled to unit L2 norm at init and after every step
    adv_init: Literal["none", "adv", "help"] = "none"  # flip first-layer weight vectors away from / towards the weakest teacher node
    perturb: float | None = Field(None, ge=0.0)  # student := teacher + N(0, perturb^2) in every weight and bias (multi 1)
    same_dir: bool = False  # each student layer := the teacher layer scaled to the student layer's own norm (multi 1)
    same_sign: bool = False  # flip every student weight and bias whose sign differs from the teacher's (multi 1)


class DataConfig(_Section):
    kind: Name = "gaussian"  # a registered MLP data kind (mlp/data/) or an image data set (conv/images.py); checked by pipelines
    root: PathText | None = None  # folder (or .tar.gz for CIFAR-10) of an image data set
    augment: bool = True  # images: random crop (pad 4) + horizontal flip on training batches
    std: float = Field(1.5, gt=0.0)
    n_train: Count = 10000
    n_eval: int = Field(10000, ge=2, le=INT_MAX)
    regenerate: bool = False
    boundary_exact: bool = False
    boundary_shift_mean: float = Field(2.0, ge=0.0)
    boundary_shift_sigma: float = Field(2.0, ge=0.0)


class TrainConfig(_Section):
    optimizer: Name = "sgd"  # a registered optimizer (studentspec.ensemble.optimizers): sgd, gd (full batch), adam
    lr: float | dict[int, float] = 0.01
    momentum: Unit = 0.0
    # an L2 coefficient (added to the gradient): at 1 or more the decay alone moves a weight by lr times itself or
    # more per step, which no experiment here means
    weight_decay: float = Field(0.0, ge=0.0, lt=1.0)
    betas: list[Unit] = Field(default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2)  # Adam: each in [0, 1)
    batch_size: Count = 16
    sampling: Literal["replacement", "shuffle"] = "replacement"
    steps_per_epoch: Count | None = 1000
    epochs: int = Field(100, ge=0, le=INT_MAX)
    loss: Literal["half_sse", "mse", "ce"] = "half_sse"  # losses.py: half_sse = the paper's J, mse = (2/C) J
    dtype: Literal["float32", "float64"] = "float64"
    device: Name = "cpu"
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)
    checkpoint_every: Count | None = None  # epochs between checkpoints of a long run (store/checkpoint.py); null: none
    kernel: Literal["auto", "c", "torch"] = "auto"  # the compiled SGD step (mlp/kernel/) where it applies
    freeze: list[int] = Field(default_factory=list, max_length=1000)  # layers (1-based, 1..L) never updated: [1] feature_fixed, [L] top_layer_fixed
    lr_reduction: Count | None = None  # halve the lr at every epoch i > 0 with i % K == 0 (lr_at)
    sample_budget: int | None = Field(None, ge=1, le=SEED_MAX)  # back-propagated samples in all: sets train.epochs (samples_per_epoch)

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

    epochs: int = Field(30, ge=0, le=INT_MAX)
    lr: float = Field(0.05, gt=0.0)
    momentum: Unit = 0.9
    weight_decay: float = Field(5e-4, ge=0.0, lt=1.0)  # as train.weight_decay
    batch_size: Count = 128
    schedule: Literal["cosine", "constant"] = "cosine"
    n_train: Count | None = None  # first n training images only (quick scale)
    seed: int = Field(0, ge=0, le=SEED_MAX)
    prune_ratios: list[Unit] = Field(default_factory=lambda: [0.3, 0.5, 0.5, 0.7], max_length=1000)  # each in [0, 1)
    finetune_epochs: int = Field(10, ge=0, le=INT_MAX)
    finetune_lr: float = Field(0.01, gt=0.0)


class EvalConfig(_Section):
    every: Count = 1
    threshold: float = Field(0.95, gt=0.0, le=1.0)  # a correlation: a node specializes above it
    batch_size: Count = 256  # rows per seed per chunk: small enough that an ensemble chunk stays in cache
    grad_norm: bool = True
    order: bool = False  # weight-space order parameters R, Q, T per evaluation -> order.parquet (mlp/order.py)
    # precision of the evaluation's forward and gradient passes (sums always float64); null: train.dtype
    dtype: Literal["float32", "float64"] | None = None


class TheoryConfig(_Section):
    enabled: bool = False
    samples: Count = 2000
    near: float = Field(0.1, gt=0.0)
    quantiles: list[float] = Field(default_factory=lambda: [0.5, 0.9, 0.99], max_length=100)

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

    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1, max_length=MAX_SEEDS)
    input_dim: Count = 100
    output_dim: Count = 50
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    teacher_train: TeacherTrainConfig = Field(default_factory=TeacherTrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    theory: TheoryConfig = Field(default_factory=TheoryConfig)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        if any(s < 0 or s > SEED_MAX for s in v):
            raise ValueError("seeds must lie in [0, 2**63 - 1] (they are stored as int64)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.train.loss == "ce" and self.output_dim < 2:
            raise ValueError("train.loss=ce needs output_dim >= 2")
        from ..ensemble.optimizers import full_batch  # here, not at import: the config layer stays light

        if self.data.kind == "online" and full_batch(self.train.optimizer):
            raise ValueError(f"train.optimizer={self.train.optimizer} needs a fixed training set, not data.kind=online")
        if max(self.student_widths) > INT_MAX:
            raise ValueError(f"student.multi: {self.student.multi:g} x teacher.widths gives a student layer wider than {INT_MAX}")
        from ..ensemble import activations

        if self.theory.enabled and not activations.get(self.teacher.activation).piecewise_linear:
            raise ValueError(f"theory.enabled: the Lemma's diagnostics need a piecewise-linear activation, not teacher.activation={self.teacher.activation}")
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


MLP_KNOBS = {"train.freeze": lambda c: bool(c.train.freeze), "student.normalize": lambda c: c.student.normalize,
             "teacher.no_bias": lambda c: c.teacher.no_bias, "student.adv_init": lambda c: c.student.adv_init != "none",
             "student.perturb": lambda c: c.student.perturb is not None, "student.same_dir": lambda c: c.student.same_dir,
             "student.same_sign": lambda c: c.student.same_sign, "train.sample_budget": lambda c: c.train.sample_budget is not None}


def _check_knobs(cfg: Config) -> None:
    """ValueError (naming the key) for a combination of the original code's knobs (docs/model.md 4.5) that has no meaning;
    resolves train.sample_budget into train.epochs."""
    t, sc, tc = cfg.teacher, cfg.student, cfg.train
    if t.checkpoint is not None:  # image data (conv students): the knobs below exist for MLP ensembles only
        on = next((key for key, used in MLP_KNOBS.items() if used(cfg)), None)
        if on is not None:
            raise ValueError(f"{on}: supported for MLP runs only, not with a conv teacher (teacher.checkpoint)")
    depth = len(t.widths) + 1
    if any(not 1 <= l <= depth for l in tc.freeze) or len(set(tc.freeze)) != len(tc.freeze):
        raise ValueError(f"train.freeze: distinct layer numbers in 1..{depth} (1 = the first hidden layer, {depth} = the output layer), got {quote(tc.freeze)}")
    if len(tc.freeze) == depth:
        raise ValueError(f"train.freeze: every layer ({quote(tc.freeze)}) is frozen: nothing would train")
    copies = [k for k, on in (("student.perturb", sc.perturb is not None), ("student.same_dir", sc.same_dir), ("student.same_sign", sc.same_sign)) if on]
    if copies and sc.multi != 1:
        raise ValueError(f"{copies[0]}: initializes the student from the teacher layer by layer, so it needs student.multi=1 (got {sc.multi:g})")
    if copies and sc.adv_init != "none":
        raise ValueError(f"student.adv_init: {sc.adv_init} flips a random init; it does not combine with {copies[0]}")
    if sc.perturb is not None and sc.init_scale != 1:
        raise ValueError(f"student.init_scale: student.perturb replaces the random init, so init_scale={sc.init_scale:g} would be ignored; leave it at 1")
    if t.no_bias and t.tune:
        raise ValueError("teacher.no_bias: teacher.tune sets biases (median shift, output standardization); use teacher.tune=false")
    if tc.sample_budget is not None:
        if cfg.data.kind == "online" and tc.steps_per_epoch is None:
            raise ValueError("train.sample_budget: data.kind=online has no training set to pass over; set train.steps_per_epoch")
        per_epoch = samples_per_epoch(tc, cfg.data.n_train)
        epochs, rest = divmod(tc.sample_budget, per_epoch)
        if rest or not epochs:
            raise ValueError(f"train.sample_budget: {tc.sample_budget} is not a positive multiple of the {per_epoch} samples of one epoch")
        if "epochs" in tc.model_fields_set and tc.epochs != epochs:
            raise ValueError(f"train.sample_budget: {tc.sample_budget} samples are {epochs} epochs, but train.epochs={tc.epochs}; give one of them")
        tc.epochs = epochs


def samples_per_epoch(train: TrainConfig, n_train: int) -> int:
    """Back-propagated samples of one epoch: its steps times batch_size (times n_train for gd, which takes the whole set)."""
    from ..ensemble.optimizers import full_batch  # here, not at import: the config layer stays light

    return steps_per_epoch(train, n_train) * (n_train if full_batch(train.optimizer) else train.batch_size)


def lr_at(lr: float | dict[int, float], epoch: int, reduction: int | None = None) -> float:
    """The learning rate of an epoch: a constant or the last schedule entry at or before it, times 0.5 ** (epoch // reduction).

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
        raise ConfigError(f"train.device: {device}: CUDA is not available on this machine (torch {torch.__version__} sees no CUDA device)")
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
    """The text of a config file; ConfigError (one line) for one missing, unreadable, not a regular file, too large or not text."""
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
    too_large = f"{name}: the config file is {{:.1f}} MB, more than the {MAX_CONFIG_BYTES / 2**20:.0f} MB a config may be (is it a data file?)"
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
            _set_dotted(update, key, copy.deepcopy(value) if isinstance(value, dict) else value)  # a later key may set into it
        return build_config(_merge(base, update))

    return make


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults), apply dotted overrides, validate."""
    return build_config(_merge(config_tree(path), parse_overrides(overrides or [])))


def env_choice(name: str, allowed: tuple[str, ...]) -> str | None:
    """The environment variable `name` when set (None when unset or empty); ConfigError naming it unless one of `allowed`."""
    value = os.environ.get(name, "")
    if value == "":
        return None
    if value not in allowed:
        raise ConfigError(f"{name}: must be {' or '.join(allowed)} (or unset), got {quote(value)} in the environment")
    return value
