"""Packing: several MLP configs that differ only in what build() makes train as ONE ensemble.

Every tensor of a Setup has a leading seed axis and a seed's numbers do not depend on the ensemble
it trains in (docs/choices.md, "Reproducibility"), so the Setups of configs whose tensors have the same
shapes (e.g. every teacher.decay of one (m, multi) grid point) can be concatenated along that axis
and trained by the unchanged train(); splitting the result by seed (store.record.split_record)
gives every member exactly the numbers it gets alone. The packed config's seeds are the member
positions 0..N-1 (Config needs distinct seeds; members may share seed numbers): after build()
nothing draws from a generator keyed by cfg.seeds, so the ids are labels only.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..config import Config
from .nets import BatchNorm, Net
from .train import Setup

# Keys whose only effect is on the tensors build() makes; members may differ in them (and in seeds):
# - teacher.decay: the teacher's fan-out decay, read only by mlp/teacher.py's recipes (build_teacher);
# - teacher.bias: the two_layer recipe's fixed teacher bias, read only by build_teacher (population
#   loss reads it too, but never trains through a Setup);
# - student.init_std, student.init_scale: read only by init_student.
# Not listed, because the trainer reads them after build(): data.* (online data and data.regenerate draw
# inputs during training from the stream's one config), student.normalize / teacher.no_bias / train.*
# (constraints and the step), eval.* and theory.* (every evaluation).
BUILD_ONLY = ("teacher.decay", "teacher.bias", "student.init_std", "student.init_scale")


def pack_key(cfg: Config) -> str | None:
    """Configs with equal keys pack into one ensemble; None for one that trains alone (train.checkpoint_every:
    a checkpoint belongs to one run dir)."""
    if cfg.train.checkpoint_every:
        return None
    tree = cfg.to_dict()
    tree.pop("seeds")
    for key in BUILD_ONLY:
        section, name = key.split(".")
        tree[section].pop(name)
    return repr(sorted(_flat(tree).items()))


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k != "lr":  # an lr schedule is one value
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def packed_config(cfgs: list[Config]) -> Config:
    """The config a packed ensemble trains with: the first member's, seeds = positions 0..N-1."""
    return cfgs[0].model_copy(update={"seeds": list(range(sum(len(c.seeds) for c in cfgs)))})


def _cat_net(nets: list[Net]) -> Net:
    """One Net holding every member's seeds in order (weights, biases, BatchNorm state)."""

    def cat(ts: list[torch.Tensor | None]) -> Any:
        return None if ts[0] is None else torch.cat([t.detach() for t in ts if t is not None])

    first = nets[0]
    norms = [
        BatchNorm(
            cat([n.norms[l].running_mean for n in nets]),
            cat([n.norms[l].running_var for n in nets]),
            cat([n.norms[l].weight for n in nets]),
            cat([n.norms[l].bias for n in nets]),
        )
        for l in range(len(first.norms))
    ]
    return Net(
        [cat([n.weights[l] for n in nets]) for l in range(len(first.weights))],
        [cat([n.biases[l] for n in nets]) for l in range(len(first.biases))],
        first.activation,
        first.slope,
        first.batchnorm,
        norms,
    )


def pack(setups: list[Setup]) -> Setup:
    """One Setup holding every member's teacher, data, generators and student, members in order.

    The members must have been built from configs with one pack_key (same shapes, same training);
    ValueError otherwise. Trained by mlp.train.train unchanged; its record splits with store.record.split_record.
    """
    keys = {pack_key(s.cfg) for s in setups}
    if len(keys) != 1 or None in keys:
        raise ValueError("pack: the members' configs differ in more than build-only keys (or one keeps checkpoints)")
    first = setups[0]
    student = _cat_net([s.student for s in setups])
    for p in student.parameters():
        p.requires_grad_(True)
    teacher_run = _cat_net([s.teacher_run for s in setups])
    stream = copy.copy(first.stream)  # the same kind of stream, every per-seed part replaced below
    stream.cfg = packed_config([s.cfg for s in setups])
    stream.teacher = teacher_run
    stream.data_gens = [g for s in setups for g in s.stream.data_gens]
    stream.sampler_gens = [g for s in setups for g in s.stream.sampler_gens]
    stream.x_train = torch.cat([s.stream.x_train for s in setups])
    stream.y_train = torch.cat([s.stream.y_train for s in setups])
    return Setup(
        stream.cfg,
        _cat_net([s.teacher for s in setups]),
        teacher_run,
        student,
        stream,
        torch.cat([s.x_eval for s in setups]),
        torch.cat([s.y_eval for s in setups]),
        first.dtype,
        first.device,
        build_seconds=sum(s.build_seconds for s in setups),
    )
