"""Typed, validated experiment configuration: YAML file + dotted `key=value` overrides."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A bad configuration; the message is one line naming the key and the problem."""


class _Loader(yaml.SafeLoader):
    """Safe YAML, except that 1e-3 and 2E6 are floats (YAML 1.1 reads them as strings without a dot)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str) -> Any:
    """Parse YAML text safely, exponent floats without a dot included: the one YAML reader of configs and overrides."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _known(registry: Any, name: str) -> str:
    """`name` if the registry (ensemble.registry.Registry) holds it; a ValueError listing its names otherwise."""
    if name not in registry:
        raise ValueError(registry.one_of())
    return name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False)


class TeacherConfig(_Section):
    widths: list[int] = Field(default_factory=lambda: [10], min_length=1)
    activation: str = "relu"  # a registered activation (studentspec.activations): relu, leaky_relu, linear, erf
    leaky_slope: float = Field(0.1, gt=0.0, lt=1.0)
    recipe: Literal["two_layer", "deep"] = "two_layer"
    decay: float = Field(1.0, ge=0.0)
    bias: float = -0.1
    tune: bool = False
    batchnorm: Literal["none", "before", "after"] = "none"
    batchnorm_affine: bool = False
    checkpoint: str | None = None  # a trained conv teacher (`studentspec teacher train`); image data only
    no_bias: bool = False  # docs/model.md 4.5 `no_bias`: teacher and student biases 0, the student's kept 0 after every step

    @field_validator("widths")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("every width must be >= 1")
        return v

    @field_validator("activation")
    @classmethod
    def _registered(cls, v: str) -> str:
        from ..ensemble import activations  # here, not at import: the config layer stays light

        return _known(activations.ACTIVATIONS, v)


class StudentConfig(_Section):
    multi: float = Field(5.0, ge=1.0)
    init_std: float | None = Field(0.005, gt=0.0)
    init_scale: float = Field(1.0, gt=0.0)
    # the original code's knobs (docs/model.md 4.5; docs/configuration.md): MLP runs only
    normalize: bool = False  # every hidden weight column (not the bias) rescaled to unit L2 norm at init and after every step
    adv_init: Literal["none", "adv", "help"] = "none"  # flip first-layer weight vectors away from / towards the weakest teacher node
    perturb: float | None = Field(None, ge=0.0)  # student := teacher + N(0, perturb^2) in every weight and bias (multi 1)
    same_dir: bool = False  # each student layer := the teacher layer scaled to the student layer's own norm (multi 1)
    same_sign: bool = False  # flip every student weight and bias whose sign differs from the teacher's (multi 1)


class DataConfig(_Section):
    kind: str = "gaussian"  # a registered MLP data kind (mlp/data/) or an image data set (conv/images.py); checked by pipelines
    root: str | None = None  # folder (or .tar.gz for CIFAR-10) of an image data set
    augment: bool = True  # images: random crop (pad 4) + horizontal flip on training batches
    std: float = Field(1.5, gt=0.0)
    n_train: int = Field(10000, ge=1)
    n_eval: int = Field(10000, ge=2)
    regenerate: bool = False
    boundary_exact: bool = False
    boundary_shift_mean: float = Field(2.0, ge=0.0)
    boundary_shift_sigma: float = Field(2.0, ge=0.0)


class TrainConfig(_Section):
    optimizer: str = "sgd"  # a registered optimizer (studentspec.ensemble.optimizers): sgd, gd (full batch), adam
    lr: float | dict[int, float] = 0.01
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2)
    batch_size: int = Field(16, ge=1)
    sampling: Literal["replacement", "shuffle"] = "replacement"
    steps_per_epoch: int | None = Field(1000, ge=1)
    epochs: int = Field(100, ge=0)
    loss: Literal["half_sse", "mse", "ce"] = "half_sse"  # losses.py: half_sse = the paper's J, mse = (2/C) J
    dtype: Literal["float32", "float64"] = "float64"
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)  # epochs between checkpoints of a long run (store/checkpoint.py); null: none
    kernel: Literal["auto", "c", "torch"] = "auto"  # the compiled SGD step (mlp/kernel/) where it applies
    freeze: list[int] = Field(default_factory=list)  # layers (1-based, 1..L) never updated: [1] feature_fixed, [L] top_layer_fixed
    lr_reduction: int | None = Field(None, ge=1)  # halve the lr at every epoch i > 0 with i % K == 0 (lr_at)
    sample_budget: int | None = Field(None, ge=1)  # back-propagated samples in all: sets train.epochs (samples_per_epoch)

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
            if any(k < 0 for k in v):
                raise ValueError("schedule epochs must be >= 0")
        return v


class TeacherTrainConfig(_Section):
    """How `studentspec teacher train|prune` trains a conv teacher on labels (image data only)."""

    epochs: int = Field(30, ge=0)
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    batch_size: int = Field(128, ge=1)
    schedule: Literal["cosine", "constant"] = "cosine"
    n_train: int | None = Field(None, ge=1)  # first n training images only (quick scale)
    seed: int = Field(0, ge=0)
    prune_ratios: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.5, 0.7])
    finetune_epochs: int = Field(10, ge=0)
    finetune_lr: float = Field(0.01, gt=0.0)

    @field_validator("prune_ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= r < 1.0 for r in v):
            raise ValueError("prune ratios must lie in [0, 1)")
        return v


class EvalConfig(_Section):
    every: int = Field(1, ge=1)
    threshold: float = Field(0.95, gt=0.0, le=1.0)
    batch_size: int = Field(256, ge=1)  # rows per seed per chunk: small enough that an ensemble chunk stays in cache
    grad_norm: bool = True
    order: bool = False  # weight-space order parameters R, Q, T per evaluation -> order.parquet (mlp/order.py)
    # precision of the evaluation's forward and gradient passes (sums always float64); null: train.dtype
    dtype: Literal["float32", "float64"] | None = None


class TheoryConfig(_Section):
    enabled: bool = False
    samples: int = Field(2000, ge=1)
    near: float = Field(0.1, gt=0.0)
    quantiles: list[float] = Field(default_factory=lambda: [0.5, 0.9, 0.99])

    @field_validator("quantiles")
    @classmethod
    def _unit(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= q <= 1.0 for q in v):
            raise ValueError("quantiles must lie in [0, 1]")
        return v


class Config(_Section):
    """The whole experiment; field names are the public config keys."""

    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    input_dim: int = Field(100, ge=1)
    output_dim: int = Field(50, ge=1)
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
        if any(s < 0 or s >= 2**63 for s in v):
            raise ValueError("seeds must lie in [0, 2**63 - 1] (they are stored as int64)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.train.loss == "ce" and self.output_dim < 2:
            raise ValueError("train.loss=ce needs output_dim >= 2")
        if self.data.kind == "online" and self.train.optimizer == "gd":
            raise ValueError("train.optimizer=gd needs a fixed training set, not data.kind=online")
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
        raise ValueError(f"train.freeze: distinct layer numbers in 1..{depth} (1 = the first hidden layer, {depth} = the output layer), got {tc.freeze}")
    if len(tc.freeze) == depth:
        raise ValueError(f"train.freeze: every layer ({tc.freeze}) is frozen: nothing would train")
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
    return steps_per_epoch(train, n_train) * (n_train if train.optimizer == "gd" else train.batch_size)


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
            raise ConfigError(f"{key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ['a.b=1', 'c=[1,2]'] into a nested dict, values parsed as YAML scalars/lists."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item}: override must look like key=value")
        try:
            value = parse_yaml(raw) if raw != "" else None
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: cannot parse value {raw!r} ({err.__class__.__name__})") from None
        _set_dotted(tree, key.strip(), value)
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
    # union members (train.lr: float | dict) name their type in the location: keep only real keys
    loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-after", "float", "int", "dict[")))
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif e["type"] == "literal_error":
        msg = f"must be one of {e['ctx']['expected']}, got {e['input']!r}"
    elif "input" in e and e["type"] not in ("missing",) and loc:  # a whole-config check names its keys itself
        msg = f"{msg} (got {e['input']!r})"
    return f"{loc}: {msg}" if loc else msg


def build_config(tree: dict[str, Any]) -> Config:
    """Validate a nested dict into a Config, or raise ConfigError with one line."""
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_first_error(err)) from None


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: {}); ConfigError (one line, naming the file) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = parse_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults), apply dotted overrides, validate."""
    tree: dict[str, Any] = {}
    if path is not None:
        tree = read_mapping(path)
        tree.pop("sweep", None)  # read by `studentspec sweep` (sweep.py), not part of a run's config
    tree = _merge(tree, parse_overrides(overrides or []))
    return build_config(tree)
