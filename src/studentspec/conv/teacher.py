"""Conv teachers trained on labels: training, pruning by mean |fan-out weight|, masked fine-tuning, checkpoints.

A checkpoint is a torch file of plain tensors (nn layouts: conv weight [C_out, C_in, 3, 3],
head weight [K, C*H*W]) and metadata: architecture, data set and its normalization, channel
masks, the inactive channel indices, test accuracy and the training history. Loading checks
every shape, that the masks and inactive lists agree, and that every weight into or out of an
inactive channel is zero.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import Config, ConfigError, TeacherTrainConfig, load_config, quote
from ..ensemble import seeding
from ..ensemble.atomic import atomic_write
from ..ensemble.optim import Optimizer
from ..images import ImageSet, augment, channel_stats, epoch_order, load_images, normalize
from .nets import ConvBatchNorm, ConvNet, apply_masks, config_net, prune_masks

FORMAT = "studentspec.conv_teacher"
VERSION = 1
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# `studentspec teacher train` without --config: docs/model.md 4.4's teacher (4 x 64 channels, ReLU then BatchNorm)
PAPER_TEACHER = [
    "teacher.widths=[64,64,64,64]",
    "teacher.batchnorm=after",
    "teacher.batchnorm_affine=true",
    "train.dtype=float32",
]


@dataclass
class TeacherCheckpoint:
    """A trained (possibly pruned) one-member conv teacher and what it was trained on."""

    net: ConvNet  # S = 1, float64, CPU, masks set
    dataset: str
    mean: list[float]
    std: list[float]
    image_shape: tuple[int, int, int]
    accuracy: float  # test accuracy on true labels
    history: list[dict[str, float]] = field(default_factory=list)
    ratios: list[float] | None = None  # pruning ratios, when pruned
    parent: str | None = None  # sha256 of the checkpoint it was pruned from
    settings: dict[str, Any] = field(default_factory=dict)  # the teacher / teacher_train config sections used

    @property
    def masks(self) -> list[list[bool]]:
        """Per conv layer, True for active channels."""
        return [m[0].tolist() for m in self.net.active()]

    @property
    def inactive(self) -> list[list[int]]:
        """Per conv layer, the indices of the pruned channels."""
        return [[i for i, a in enumerate(m) if not a] for m in self.masks]

    @property
    def active_widths(self) -> list[int]:
        """Active channels per conv layer."""
        return [sum(m) for m in self.masks]


def file_digest(path: str | Path) -> str:
    """sha256 of a file, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _arch(net: ConvNet, image_hw: int) -> dict[str, Any]:
    return {
        "widths": net.widths,
        "in_channels": net.in_channels,
        "image_hw": image_hw,
        "n_classes": net.n_classes,
        "activation": net.activation,
        "slope": net.slope,
        "batchnorm": net.batchnorm,
        "affine": bool(net.norms and net.norms[0].weight is not None),
    }


def _save(obj: object, path: Path) -> None:
    buf = io.BytesIO()  # serialized in memory first: torch reports a failed file write (a full disk) as a RuntimeError
    torch.save(obj, buf)
    path.write_bytes(buf.getbuffer())


def save_checkpoint(ckpt: TeacherCheckpoint, path: str | Path) -> Path:
    """Write a checkpoint atomically (temporary name, then rename)."""
    path = Path(path)
    net = ckpt.net.to("cpu", torch.float64)
    tensors: dict[str, torch.Tensor] = {}
    for l, (w, b) in enumerate(zip(net.weights, net.biases), start=1):
        tensors[f"conv{l}.weight"], tensors[f"conv{l}.bias"] = w[0], b[0]
    for l, bn in enumerate(net.norms, start=1):
        tensors[f"bn{l}.running_mean"], tensors[f"bn{l}.running_var"] = bn.running_mean[0], bn.running_var[0]
        if bn.weight is not None and bn.bias is not None:
            tensors[f"bn{l}.weight"], tensors[f"bn{l}.bias"] = bn.weight[0], bn.bias[0]
    tensors["head.weight"], tensors["head.bias"] = net.head_w[0].T.contiguous(), net.head_b[0]
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": _arch(net, ckpt.image_shape[1]),
        "tensors": tensors,
        "masks": ckpt.masks,
        "inactive": ckpt.inactive,
        "accuracy": float(ckpt.accuracy),
        "dataset": ckpt.dataset,
        "mean": list(ckpt.mean),
        "std": list(ckpt.std),
        "image_shape": list(ckpt.image_shape),
        "history": ckpt.history,
        "ratios": ckpt.ratios,
        "parent": ckpt.parent,
        "settings": ckpt.settings,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: _save(payload, tmp))
    return path


def _expect(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise ConfigError(f"{path}: invalid teacher checkpoint ({what})")


def _tensor_shapes(a: dict[str, Any], widths: list[int], c_in: int, k: int, side: int) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a checkpoint of architecture `a` must hold, by name."""
    want: dict[str, tuple[int, ...]] = {
        f"conv{l}.weight": (co, ci, 3, 3) for l, (ci, co) in enumerate(zip([c_in, *widths[:-1]], widths), start=1)
    }
    want |= {f"conv{l}.bias": (c,) for l, c in enumerate(widths, start=1)}
    want |= {"head.weight": (k, widths[-1] * side * side), "head.bias": (k,)}
    if a["batchnorm"] != "none":
        for l, c in enumerate(widths, start=1):
            want |= {f"bn{l}.running_mean": (c,), f"bn{l}.running_var": (c,)}
            if a["affine"]:
                want |= {f"bn{l}.weight": (c,), f"bn{l}.bias": (c,)}
    return want


def _stored_net(a: dict[str, Any], t: dict[str, torch.Tensor], depth: int, masks: list[list[bool]]) -> ConvNet:
    """The float64 one-seed ConvNet of a checkpoint's checked tensors."""
    f64 = {n: v.to(torch.float64) for n, v in t.items()}
    norms = []
    if a["batchnorm"] != "none":
        for l in range(1, depth + 1):
            w = f64[f"bn{l}.weight"][None] if a["affine"] else None
            b = f64[f"bn{l}.bias"][None] if a["affine"] else None
            norms.append(ConvBatchNorm(f64[f"bn{l}.running_mean"][None], f64[f"bn{l}.running_var"][None], w, b))
    return ConvNet(
        [f64[f"conv{l}.weight"][None] for l in range(1, depth + 1)],
        [f64[f"conv{l}.bias"][None] for l in range(1, depth + 1)],
        f64["head.weight"].T.contiguous()[None],
        f64["head.bias"][None],
        a["activation"],
        float(a["slope"]),
        a["batchnorm"],
        norms,
        [torch.tensor(m, dtype=torch.bool)[None] for m in masks],
    )


def _check_inactive(net: ConvNet, derived: list[list[int]], path: Path) -> None:
    """ConfigError unless every pruned channel's incoming weights, bias and fan-out are zero."""
    for l, off in enumerate(derived, start=1):
        if not off:
            continue
        idx = torch.tensor(off)
        _expect(
            bool((net.weights[l - 1][0, idx] == 0).all() and (net.biases[l - 1][0, idx] == 0).all()),
            path,
            f"layer {l}: weights into inactive channels are not zero",
        )
        _expect(
            bool((net.fanout(l)[0, idx] == 0).all()),
            path,
            f"layer {l}: fan-out weights of inactive channels are not zero",
        )


def load_checkpoint(path: str | Path) -> TeacherCheckpoint:
    """Read and check a checkpoint; ConfigError names the file and the first inconsistency."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: teacher checkpoint not found (create one with `studentspec teacher train`)")
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"{path}: not a readable teacher checkpoint ({err.__class__.__name__})") from None
    _expect(isinstance(p, dict) and p.get("format") == FORMAT, path, f"format is not {FORMAT}")
    _expect(p.get("version") == VERSION, path, f"version {p.get('version')!r}, expected {VERSION}")
    try:
        a, t = p["arch"], p["tensors"]
        widths, c_in, hw, k = list(a["widths"]), int(a["in_channels"]), int(a["image_hw"]), int(a["n_classes"])
        masks, inactive = p["masks"], p["inactive"]
        accuracy = float(p["accuracy"])
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: invalid teacher checkpoint (missing or malformed {err})") from None
    side = hw - 2 * len(widths)
    _expect(side >= 1 and all(w >= 1 for w in widths), path, "architecture does not fit the images")
    for name, shape in _tensor_shapes(a, widths, c_in, k, side).items():
        _expect(name in t, path, f"tensor {name} missing")
        _expect(
            tuple(t[name].shape) == shape,
            path,
            f"{name} has shape {list(t[name].shape)}, architecture needs {list(shape)}",
        )
    _expect(
        len(masks) == len(widths) and all(len(m) == c for m, c in zip(masks, widths)),
        path,
        f"masks do not match the widths {widths}",
    )
    _expect(all(any(m) for m in masks), path, "a layer has no active channel")
    derived = [[i for i, on in enumerate(m) if not on] for m in masks]
    _expect(derived == [list(x) for x in inactive], path, "inactive channels do not match the masks")
    _expect(0.0 <= accuracy <= 1.0, path, f"accuracy {accuracy} outside [0, 1]")
    net = _stored_net(a, t, len(widths), masks)
    _check_inactive(net, derived, path)
    shape = tuple(int(v) for v in p["image_shape"])
    _expect(shape == (c_in, hw, hw), path, f"image shape {list(shape)} does not match the architecture")
    return TeacherCheckpoint(
        net,
        str(p["dataset"]),
        list(p["mean"]),
        list(p["std"]),
        (c_in, hw, hw),  # == shape, checked above; typed as three ints
        accuracy,
        list(p.get("history") or []),
        p.get("ratios"),
        p.get("parent"),
        dict(p.get("settings") or {}),
    )


@torch.no_grad()
def accuracy(
    net: ConvNet, images: torch.Tensor, labels: torch.Tensor, *, mean: list[float], std: list[float], chunk: int = 500
) -> float:
    """Test accuracy of a one-member net on uint8 images (BatchNorm in eval mode)."""
    dev, dtype = net.head_w.device, net.head_w.dtype
    hits = 0
    for i in range(0, images.shape[0], chunk):
        x = normalize(images[i : i + chunk].to(dev), mean, std, dtype)
        out, _ = net.forward(x[:, None])
        hits += int((out[0].argmax(1) == labels[i : i + chunk].to(dev)).sum())
    return hits / max(images.shape[0], 1)


def fit_labels(
    net: ConvNet,
    data: ImageSet,
    *,
    mean: list[float],
    std: list[float],
    tt: TeacherTrainConfig,
    epochs: int,
    lr: float,
    augmentation: bool = True,
    eval_chunk: int = 500,
    progress: bool = True,
    label: str = "teacher",
) -> list[dict[str, float]]:
    """Train a one-member net on true labels with cross-entropy: SGD (momentum, weight decay), cosine or constant lr.

    Batch order and augmentation come from the (teacher_train.seed, sampler / data) generators.
    Masked channels stay exactly zero (their weights get zero gradients and zero decay).
    Returns one history entry per epoch (mean training loss, test accuracy).
    """
    dev = net.head_w.device
    params = net.parameters()
    opt = Optimizer(params, "sgd", tt.momentum, tt.weight_decay)
    g_order, g_aug = seeding.generator(tt.seed, "sampler"), seeding.generator(tt.seed, "data")
    n = data.train_x.shape[0]
    steps = math.ceil(n / tt.batch_size)
    total = epochs * steps
    history = []
    bar = tqdm(total=total, disable=not progress, unit="step", desc=label, dynamic_ncols=True)
    step = 0
    for epoch in range(epochs):
        t0, loss_sum = time.perf_counter(), 0.0
        for idx in epoch_order(g_order, n, steps, min(tt.batch_size, n)):
            xb = data.train_x[idx]
            if augmentation:
                xb = augment(xb, g_aug)
            x = normalize(xb.to(dev), mean, std, net.head_w.dtype)
            out, _ = net.forward(x[:, None], training=True)
            loss = F.cross_entropy(out[0], data.train_y[idx].to(dev))
            grads = torch.autograd.grad(loss, params)
            rate = lr * 0.5 * (1 + math.cos(math.pi * step / total)) if tt.schedule == "cosine" else lr
            opt.step(grads, rate)
            loss_sum += float(loss.detach())
            step += 1
            bar.update(1)
        acc = accuracy(net, data.test_x, data.test_y, mean=mean, std=std, chunk=eval_chunk)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / steps,
                "test_accuracy": acc,
                "seconds": time.perf_counter() - t0,
            }
        )
        bar.set_postfix(loss=f"{loss_sum / steps:.3f}", test_acc=f"{acc:.3f}", refresh=False)
    bar.close()
    return history


def _data(cfg: Config) -> ImageSet:
    data = load_images(cfg.data.kind, cfg.data.root)
    return data.subset(cfg.teacher_train.n_train, None)


def _settings(cfg: Config) -> dict[str, Any]:
    return {
        "teacher": cfg.teacher.model_dump(mode="python"),
        "teacher_train": cfg.teacher_train.model_dump(mode="python"),
        "data": {"kind": cfg.data.kind, "root": cfg.data.root, "augment": cfg.data.augment},
        "train": {"dtype": cfg.train.dtype, "device": cfg.train.device, "threads": cfg.train.threads},
        "eval": {"batch_size": cfg.eval.batch_size},
    }


def train_teacher(cfg: Config, data: ImageSet | None = None, progress: bool = True) -> TeacherCheckpoint:
    """Train the conv teacher of cfg.teacher (widths,
    activation, BatchNorm) on cfg.data's labels per cfg.teacher_train."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = data if data is not None else _data(cfg)
    mean, std = channel_stats(data.train_x)
    tt = cfg.teacher_train
    net = config_net(
        [seeding.generator(tt.seed, "teacher")],
        data.shape,
        cfg.teacher.widths,
        n_classes=len(data.classes),
        teacher=cfg.teacher,
    )
    net = net.to(cfg.train.device, DTYPES[cfg.train.dtype]).requires_grad_()
    history = fit_labels(
        net,
        data,
        mean=mean,
        std=std,
        tt=tt,
        epochs=tt.epochs,
        lr=tt.lr,
        augmentation=cfg.data.augment is not False,  # null: on for a real image set
        eval_chunk=cfg.eval.batch_size,
        progress=progress,
    )
    acc = (
        history[-1]["test_accuracy"]
        if history
        else accuracy(net, data.test_x, data.test_y, mean=mean, std=std, chunk=cfg.eval.batch_size)
    )
    return TeacherCheckpoint(
        net.to("cpu", torch.float64), data.name, mean, std, data.shape, acc, history, settings=_settings(cfg)
    )


def prune_teacher(
    ckpt: TeacherCheckpoint,
    ratios: list[float],
    cfg: Config,
    *,
    data: ImageSet | None = None,
    parent: str | None = None,
    progress: bool = True,
) -> TeacherCheckpoint:
    """Mask the channels with the smallest mean |fan-out weight|
    (per layer, ratios[l] of them) and fine-tune with the masks."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if len(ratios) != len(ckpt.net.weights):
        raise ConfigError(f"--ratios: {len(ratios)} ratios for a teacher with {len(ckpt.net.weights)} conv layers")
    if any(not 0.0 <= r < 1.0 for r in ratios):
        raise ConfigError("--ratios: every ratio must lie in [0, 1)")
    if cfg.data.kind != ckpt.dataset:
        raise ConfigError(f"data.kind: the teacher was trained on {ckpt.dataset}, not {cfg.data.kind}")
    data = data if data is not None else _data(cfg)
    net = ckpt.net.to("cpu", torch.float64)
    apply_masks(net, prune_masks(net, ratios))
    net = net.to(cfg.train.device, DTYPES[cfg.train.dtype]).requires_grad_()
    tt = cfg.teacher_train
    history = fit_labels(
        net,
        data,
        mean=ckpt.mean,
        std=ckpt.std,
        tt=tt,
        epochs=tt.finetune_epochs,
        lr=tt.finetune_lr,
        augmentation=cfg.data.augment is not False,  # null: on for a real image set
        eval_chunk=cfg.eval.batch_size,
        progress=progress,
        label="fine-tune",
    )
    acc = (
        history[-1]["test_accuracy"]
        if history
        else accuracy(net, data.test_x, data.test_y, mean=ckpt.mean, std=ckpt.std, chunk=cfg.eval.batch_size)
    )
    out = net.to("cpu", torch.float64)
    apply_masks(out, out.active())  # fine-tuning in float32 keeps zeros exact; this re-asserts them after the cast
    return TeacherCheckpoint(
        out,
        ckpt.dataset,
        ckpt.mean,
        ckpt.std,
        ckpt.image_shape,
        acc,
        ckpt.history + history,
        list(ratios),
        parent,
        _settings(cfg),
    )


def _set(key: str, value: Any) -> str:
    """A dotted override whose value survives YAML parsing (JSON is YAML), e.g. paths with ':'."""
    return f"{key}={json.dumps(value)}"


def teacher_config(
    dataset: str, config: str | None, overrides: list[str], *, root: str | None = None, epochs: int | None = None
) -> Config:
    """The config of `studentspec teacher train`: a YAML file (else the 4
    x 64 teacher of docs/model.md 4.4), then overrides, then the flags."""
    flags = [_set("data.kind", dataset)]
    flags += [_set("data.root", str(root))] if root is not None else []
    flags += [_set("teacher_train.epochs", epochs)] if epochs is not None else []
    return load_config(config, ([] if config else PAPER_TEACHER) + list(overrides) + flags)


def prune_config(
    ckpt: TeacherCheckpoint,
    config: str | None,
    overrides: list[str],
    *,
    root: str | None = None,
    epochs: int | None = None,
    lr: float | None = None,
) -> Config:
    """The config of `studentspec teacher prune`: the settings
    stored in the checkpoint, a YAML file, overrides, flags."""
    stored = []
    if not config:
        for section in ("teacher_train", "data", "train", "eval"):
            stored += [_set(f"{section}.{k}", v) for k, v in (ckpt.settings.get(section) or {}).items()]
    flags = [_set("data.kind", ckpt.dataset)]
    flags += [_set("data.root", str(root))] if root is not None else []
    flags += [_set("teacher_train.finetune_epochs", epochs)] if epochs is not None else []
    flags += [_set("teacher_train.finetune_lr", lr)] if lr is not None else []
    return load_config(config, stored + list(overrides) + flags)


def parse_ratios(text: str) -> list[float]:
    """'0.3,0.5,0.5,0.7' -> [0.3, 0.5, 0.5, 0.7]; ConfigError naming --ratios otherwise."""
    try:
        ratios = [float(r) for r in text.split(",")]
    except ValueError:
        raise ConfigError(f"--ratios: expected comma-separated numbers, got {quote(text)}") from None
    if any(not 0.0 <= r < 1.0 for r in ratios):
        raise ConfigError(f"--ratios: every ratio must lie in [0, 1), got {quote(text)}")
    return ratios


def describe(ckpt: TeacherCheckpoint) -> str:
    """One line: data set, widths, active widths, test accuracy."""
    return (
        f"{ckpt.dataset} teacher, widths {ckpt.net.widths}, active {ckpt.active_widths}, "
        f"test accuracy {ckpt.accuracy:.4f}"
    )
