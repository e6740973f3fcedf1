"""The conv experiments' cost model (conv/cost.py, `reproduce cifar10|images --dry-run`): MACs of a conv net against
forward hooks on a separately written nn.Sequential and against the formula by hand, the step line and its range, and
the dry runs printing every stage and writing nothing.

No test here times anything against a target (the projection is checked by hand against a real run, BENCHMARKS.md)."""

from __future__ import annotations

import math
import os
import re

import pytest
import torch
from torch import nn

from studentspec.cli import main
from studentspec.conv import cost
from studentspec.conv.nets import apply_masks, init_conv_net, prune_masks
from probe import assert_refused, snapshot


def _hooked_macs(model: nn.Sequential, x: torch.Tensor) -> list[tuple[str, int]]:
    """MACs per image of every Conv2d, BatchNorm2d and Linear of `model`, read off its outputs by forward hooks."""
    found: list[tuple[str, int]] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        per_image = out[0].numel()
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            found.append(("conv", per_image * module.in_channels // module.groups * kh * kw))
        elif isinstance(module, nn.BatchNorm2d):
            found.append(("bn", per_image))
        elif isinstance(module, nn.Linear):
            found.append(("head", module.in_features * module.out_features))

    for m in model:
        m.register_forward_hook(hook)
    model(x)
    return found


@pytest.mark.parametrize("batchnorm", ["none", "after"])
def test_macs_match_hooks_on_a_separate_module_and_the_formula(batchnorm):
    """2 input channels, 11 x 11 images, widths [3, 5, 4], 6 classes, an ensemble of 2 (MACs are per member)."""
    widths, c_in, hw, k = [3, 5, 4], 2, 11, 6
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    net = init_conv_net(gens, c_in, hw, widths, n_classes=k, batchnorm=batchnorm)
    layers: list[nn.Module] = []
    for a, b in zip([c_in, *widths[:-1]], widths):
        layers += [nn.Conv2d(a, b, 3), nn.ReLU()]
        if batchnorm == "after":
            layers.append(nn.BatchNorm2d(b))
    layers += [nn.Flatten(), nn.Linear(widths[-1] * 5 * 5, k)]
    oracle = _hooked_macs(nn.Sequential(*layers).eval(), torch.zeros(3, c_in, hw, hw))
    mine = cost.layer_macs(net, hw)
    assert [(re.sub(r"\d", "", n), m) for n, m in mine] == oracle
    # by hand: C_in x C_out x 3 x 3 x H_out x W_out with H_out = 9, 7, 5; BatchNorm C x H x W; head 4*5*5 x 6
    convs = [2 * 3 * 9 * 81, 3 * 5 * 9 * 49, 5 * 4 * 9 * 25]
    bns = [3 * 81, 5 * 49, 4 * 25] if batchnorm == "after" else [0, 0, 0]
    assert cost.macs(net, hw) == sum(convs) + sum(bns) + 100 * 6
    assert dict(mine)["conv2"] == convs[1] and dict(mine)["head"] == 600


def test_correlation_macs_count_only_active_teacher_channels():
    teacher = init_conv_net([torch.Generator().manual_seed(0)], 1, 8, [4, 6], n_classes=3)
    apply_masks(teacher, prune_masks(teacher, [0.5, 0.5]))  # keeps 2 and 3 channels
    student = init_conv_net([torch.Generator().manual_seed(1)] * 2, 1, 8, [5, 7], n_classes=3)
    assert cost.corr_macs(teacher, student, 8) == 2 * 5 * 6 * 6 + 3 * 7 * 4 * 4


def test_step_line_inside_and_a_range_outside():
    """Two timed sizes: 1 s at 1e9 FLOPs, 3 s at 5e9: the line is 0.5 s + 0.5 s per 1e9 FLOPs (by hand)."""
    rate = cost.StepRate((cost.Timed(1, 8, 1e9, 1.0), cost.Timed(1, 40, 5e9, 3.0)))
    assert rate.seconds(3e9) == pytest.approx((2.0, 2.0, 2.0)) and rate.inside(3e9)
    low, mid, high = rate.seconds(1e10)  # line 5.5 s, the largest timed size's rate 6 s
    assert (low, mid, high) == pytest.approx((5.5, 5.5, 6.0)) and not rate.inside(1e10)
    one = cost.StepRate((cost.Timed(1, 8, 1e9, 0.2),))  # one size: proportional, never below the timed step
    assert one.seconds(4e9) == pytest.approx((0.8, 0.8, 0.8))
    assert cost.EvalRate(0.01, 0.002, 10).seconds(25, 10) == pytest.approx(2 * (0.01 + 0.02) + 0.01 + 0.01)


def _rows(out: str) -> dict[str, list[str]]:
    """The table rows of a dry run by stage name: the columns after the name (split on 2+ spaces)."""
    rows = {}
    for line in out.splitlines()[2:]:
        cells = re.split(r"\s{2,}", line.strip())
        if cells and (cells[0] in ("teacher", "pruned", "total") or cells[0].startswith(("multi ", "mlp "))):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def one_thread():
    """A dry run at one torch thread (the tiny presets set none): the text, not the timing, is under test here."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_cifar10_dry_run_prints_every_stage_and_writes_nothing(tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)  # the preset's data.root (relative) holds no CIFAR-10: its known shape is used
    before = snapshot(tmp_path)
    assert main(["reproduce", "cifar10", "--scale", "tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert list(rows) == ["teacher", "pruned", "multi 1", "multi 2", "total"]
    assert "data: cifar10 not found" in out and "3x32x32, 50,000 training" in out
    # tiny: a 4 x 4 channel teacher, 60 images in batches of 30, one epoch; 4 channels pruned 0.3/0.5/0.5/0.7 keep 3,2,2,2
    channels, seeds, epochs, steps, samples, evals, gflop = rows["teacher"][:7]
    assert (channels, seeds, epochs, steps, samples, evals) == ("4,4,4,4", "1", "1", "2", "60", "1")
    convs = 3 * 4 * 9 * 30**2 + 4 * 4 * 9 * (28**2 + 26**2 + 24**2)
    per_image = convs + 4 * (30**2 + 28**2 + 26**2 + 24**2) + 4 * 24 * 24 * 10  # + BatchNorm after each + head
    assert float(gflop) == pytest.approx((2 * 6 * per_image * 30 + 2 * per_image * 10_000) / 1e9, rel=1e-3)
    assert rows["pruned"][0] == "4,4,4,4 (active 3,2,2,2)" and rows["multi 2"][0] == "6,4,4,4"
    # students: 40 images in batches of 20, two epochs, two seeds; evaluated before training and after each epoch
    assert rows["multi 1"][1:6] == ["2", "2", "4", "160", "3"]
    assert int(rows["total"][0]) == 2 + 2 + 4 + 4
    assert float(rows["total"][3]) == pytest.approx(sum(float(r[6]) for n, r in rows.items() if n != "total"), rel=1e-3)
    assert "timed teacher" in out and out.count("timed student") == 2
    assert snapshot(tmp_path) == before and not os.path.exists(tmp_path / "runs")


def test_images_dry_run_prints_every_stage_and_writes_nothing(tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert main(["reproduce", "images", "--scale", "tiny", "--dataset", "mnist", "--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    mlp = [f"mlp {i} multi {m}" for i in ("real", "gaussian") for m in (1, 2)]
    assert list(rows) == ["teacher", "pruned", "multi 1", "multi 2", *mlp, "total"]
    assert out.startswith("reproduce images --scale tiny --dataset mnist: projected on cpu, 1 thread(s)")
    assert "data: mnist" in out  # found where a folder holds it, its known 1x28x28 shape otherwise
    # Part 2 at tiny: widths [4,4,4] x multi, 2 seeds, 60 samples in one batch a step, 2 epochs, 784 inputs
    assert rows["mlp real multi 2"][:5] == ["8,8,8", "2", "2", "2", "240"]
    flops = 2 * 6 * 64 * (784 * 8 + 8 * 8 + 8 * 8 + 8 * 10)  # sweep/cost.py's count: 6 x S x batch x MACs
    assert float(rows["mlp real multi 2"][6]) >= 2 * flops / 1e9
    for row in rows.values():
        assert re.match(r"[\d.]+ (s|min|h|d)\b", row[-1]), row
    assert snapshot(tmp_path) == before and not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["images", "--dataset", "svhn"], ("--dataset", "svhn", "fashion_mnist")),
        (["cifar10", "--dataset", "mnist"], ("--dataset", "takes none")),
    ],
)
def test_an_unknown_dataset_exits_2_before_any_timing(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cost, "time_steps", lambda *a, **k: pytest.fail("timed before checking --dataset"))
    before = snapshot(tmp_path)
    rc = main(["reproduce", *args, "--scale", "tiny", "--dry-run"])
    assert_refused(rc, capsys, words, tmp_path, before)


def test_an_own_pipeline_without_a_dry_run_is_still_refused(tmp_path, capsys, monkeypatch):
    from studentspec.paper.experiments import EXPERIMENTS, Experiment

    toy = Experiment("toy-conv", {}, run=lambda *a, **k: None)
    monkeypatch.setitem(EXPERIMENTS, toy.name, toy)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    rc = main(["reproduce", "toy-conv", "--scale", "tiny", "--dry-run"])
    assert_refused(rc, capsys, ("toy-conv", "--dry-run", "no cost model"), tmp_path, before)


def test_known_shapes_are_the_readers_sets():
    from studentspec.images import READERS

    assert set(cost.KNOWN) == set(READERS)
    assert math.prod(cost.KNOWN["cifar10"].shape) == 3072 and cost.KNOWN["fashion_mnist"].n_train == 60_000
