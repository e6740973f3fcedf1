"""Ensemble conv nets vs per-seed nn.Conv2d modules, conv correlation vs numpy, pruning, checkpoints, the pipeline end to end."""

import numpy as np
import pytest
import torch

from image_files import write_cifar
from studentspec import ConfigError, load_config, load_run
from studentspec.cli import main
from studentspec.conv.nets import ConvNet, apply_masks, fanout_importance, init_conv_net, n_pruned, prune_masks
from studentspec.conv.metrics import evaluate_conv, positions, update_conv
from studentspec.conv.teacher import load_checkpoint, save_checkpoint, train_teacher
from studentspec.images import normalize
from studentspec.ensemble.corr import CorrAccumulator


def random_net(S=3, widths=(4, 5, 3), c_in=2, side=9, batchnorm="none", activation="relu", seed=0):
    gens = [torch.Generator().manual_seed(seed * 100 + s) for s in range(S)]
    net = init_conv_net(gens, c_in, side, list(widths), n_classes=4, activation=activation, slope=0.1,
                        batchnorm=batchnorm, affine=True)
    g = torch.Generator().manual_seed(seed)
    for bn in net.norms:  # non-trivial affine and running stats
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g))
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
    return net


def reference(net: ConvNet, s: int) -> torch.nn.Sequential:
    """Seed s as a plain nn.Sequential of Conv2d / activation / BatchNorm2d / Flatten / Linear."""
    layers = []
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        conv = torch.nn.Conv2d(w.shape[2], w.shape[1], 3, dtype=torch.float64)
        with torch.no_grad():
            conv.weight.copy_(w[s])
            conv.bias.copy_(b[s])
        act = torch.nn.ReLU() if net.activation == "relu" else torch.nn.LeakyReLU(net.slope)
        mods = [conv, act]
        if net.batchnorm != "none":
            src = net.norms[l]
            bn = torch.nn.BatchNorm2d(w.shape[1], dtype=torch.float64)
            with torch.no_grad():
                bn.weight.copy_(src.weight[s])
                bn.bias.copy_(src.bias[s])
                bn.running_mean.copy_(src.running_mean[s])
                bn.running_var.copy_(src.running_var[s])
            mods = [conv, bn, act] if net.batchnorm == "before" else [conv, act, bn]
        layers += mods
    lin = torch.nn.Linear(net.head_w.shape[1], net.head_w.shape[2], dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(net.head_w[s].T)
        lin.bias.copy_(net.head_b[s])
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), lin)


@pytest.mark.parametrize("batchnorm,activation,training", [("none", "relu", False), ("after", "relu", True), ("before", "leaky_relu", True),
                                                           ("after", "leaky_relu", False)])
def test_grouped_conv_matches_per_seed_modules_with_autograd(batchnorm, activation, training):
    S, N = 3, 5
    net = random_net(S, batchnorm=batchnorm, activation=activation)
    refs = [reference(net, s).train(training) for s in range(S)]
    x = torch.randn(N, S, 2, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    params = [p.requires_grad_(True) for p in net.parameters()]
    out, hidden = net.forward(x, training=training)
    weights = torch.randn(out.shape, dtype=torch.float64)
    grads = torch.autograd.grad((out * weights).sum(), params)
    for s in range(S):
        ref_out = refs[s](x[:, s])
        assert torch.allclose(out[s], ref_out, atol=1e-12)
        ref_grads = torch.autograd.grad((ref_out * weights[s]).sum(), list(refs[s].parameters()))
        convs = [m for m in refs[s] if isinstance(m, torch.nn.Conv2d)]
        names = dict(refs[s].named_parameters())
        for (name, p), g in zip(names.items(), ref_grads):
            idx, kind = name.split(".")
            mod = refs[s][int(idx)]
            if isinstance(mod, torch.nn.Conv2d):
                l = convs.index(mod)
                ours = (grads[2 * l] if kind == "weight" else grads[2 * l + 1])[s]
            elif isinstance(mod, torch.nn.Linear):
                k = 2 * len(convs)
                ours = grads[k][s].T if kind == "weight" else grads[k + 1][s]
            else:
                l = [m for m in refs[s] if isinstance(m, torch.nn.BatchNorm2d)].index(mod)
                k = 2 * len(convs) + 2 + 2 * l
                ours = (grads[k] if kind == "weight" else grads[k + 1])[s]
            assert torch.allclose(ours, g, atol=1e-11), name
        if training and batchnorm != "none":  # running statistics updated like BatchNorm2d's
            bns = [m for m in refs[s] if isinstance(m, torch.nn.BatchNorm2d)]
            assert len(net.norms) == len(bns) == 3
            for ours, ref in zip(net.norms, bns):
                assert torch.allclose(ours.running_mean[s], ref.running_mean, atol=1e-12)
                assert torch.allclose(ours.running_var[s], ref.running_var, atol=1e-12)


def test_seed_alone_equals_seed_in_ensemble_and_shared_teacher():
    net = random_net(3, batchnorm="after")
    x = torch.randn(4, 3, 2, 9, 9, dtype=torch.float64)
    out, hidden = net.forward(x)
    for s in range(3):
        one = ConvNet([w[s : s + 1] for w in net.weights], [b[s : s + 1] for b in net.biases], net.head_w[s : s + 1], net.head_b[s : s + 1],
                      net.activation, net.slope, net.batchnorm,
                      [type(bn)(bn.running_mean[s : s + 1], bn.running_var[s : s + 1], bn.weight[s : s + 1], bn.bias[s : s + 1]) for bn in net.norms])
        o1, h1 = one.forward(x[:, s : s + 1])
        assert torch.allclose(o1[0], out[s], atol=1e-13) and torch.allclose(h1[2][:, 0], hidden[2][:, s], atol=1e-13)
        # a one-member teacher on per-seed inputs = that net on each seed's inputs
        o2, h2 = one.forward_shared(x)
        for t in range(3):
            ref, _ = one.forward(x[:, t : t + 1])
            assert torch.allclose(o2[t], ref[0], atol=1e-13)


def test_conv_correlation_matches_numpy_over_positions():
    g = torch.Generator().manual_seed(2)
    t = torch.relu(torch.randn(6, 1, 3, 4, 5, generator=g, dtype=torch.float64))
    t[:, :, 1] = 0.0  # a dead teacher channel: correlation 0
    s = torch.relu(t.expand(-1, 2, -1, -1, -1).repeat(1, 1, 2, 1, 1) + 0.5 * torch.randn(6, 2, 6, 4, 5, generator=g, dtype=torch.float64))
    acc = CorrAccumulator()
    for i in range(0, 6, 4):  # two image chunks, each in row slices of 7 positions
        update_conv(acc, t[i : i + 4], s[i : i + 4], rows=7)
    corr = acc.corr()
    tp, sp = t[:, 0].permute(0, 2, 3, 1).reshape(-1, 3).numpy(), s.permute(1, 0, 3, 4, 2).reshape(2, -1, 6).numpy()
    assert positions(s).shape == (2, 6 * 4 * 5, 6)
    for k in range(2):
        with np.errstate(invalid="ignore"):  # the dead channel: numpy gives nan, we give 0
            ref = np.corrcoef(tp.T, sp[k].T)[:3, 3:]
        ref[1] = 0.0
        assert np.allclose(corr[k].numpy(), ref, atol=1e-12)


def test_evaluate_conv_uses_active_teacher_channels_only():
    g = torch.Generator().manual_seed(4)
    teacher = init_conv_net([g], 3, 8, [4, 3], n_classes=5, batchnorm="after", affine=True)
    apply_masks(teacher, [torch.tensor([[True, False, True, True]]), torch.tensor([[True, True, False]])])
    student = init_conv_net([torch.Generator().manual_seed(s) for s in (7, 8)], 3, 8, [6, 4], n_classes=5, batchnorm="after", affine=True)
    images = torch.randint(0, 256, (10, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 5, (10,), generator=g)
    mean, std = [0.5] * 3, [0.25] * 3
    ev = evaluate_conv(teacher, student, images, labels, mean=mean, std=std, chunk=3)
    assert [a.tolist() for a in ev.active] == [[0, 2, 3], [0, 1]]
    x = normalize(images, mean, std, torch.float64)
    t_out, t_h = teacher.forward(x[:, None])
    s_out, s_h = student.forward(x[:, None].expand(-1, 2, -1, -1, -1))
    for l in range(2):
        tp = t_h[l][:, 0].permute(0, 2, 3, 1).reshape(-1, t_h[l].shape[2])[:, ev.active[l]].numpy()
        for k in range(2):
            sp = s_h[l][:, k].permute(0, 2, 3, 1).reshape(-1, s_h[l].shape[2]).numpy()
            ref = np.corrcoef(tp.T, sp.T)[: tp.shape[1], tp.shape[1] :]
            assert np.allclose(ev.layers[l].corr[k].numpy(), ref, atol=1e-12)
            assert np.allclose(ev.layers[l].teacher_best[k].numpy(), ref.max(1), atol=1e-12)
    assert torch.allclose(ev.mse, (s_out - t_out).square().mean(dim=(1, 2)).double(), atol=1e-12)
    assert torch.allclose(ev.accuracy, (s_out.argmax(2) == labels).double().mean(1))
    assert ev.teacher_accuracy == float((t_out[0].argmax(1) == labels).double().mean())


def test_prune_masks_drop_the_smallest_mean_abs_fanout():
    assert [64 - n_pruned(r, 64) for r in (0.3, 0.5, 0.5, 0.7)] == [45, 32, 32, 20]
    net = init_conv_net([torch.Generator().manual_seed(0)], 1, 8, [5, 4], n_classes=3)
    scale1 = torch.tensor([3.0, 0.1, 2.0, 0.2, 1.0])  # layer 1 channels' fan-out lives in conv 2's input axis
    scale2 = torch.tensor([0.5, 4.0, 0.05, 1.0])  # layer 2's fan-out is the head, rows grouped per channel
    with torch.no_grad():
        net.weights[1].copy_(torch.sign(net.weights[1]) * scale1[None, None, :, None, None])
        net.head_w.view(1, 4, -1).mul_(0).add_(scale2[None, :, None] * -1.0)
    assert torch.allclose(fanout_importance(net, 1)[0], scale1.double()) and torch.allclose(fanout_importance(net, 2)[0], scale2.double())
    masks = prune_masks(net, [0.4, 0.5])
    assert masks[0][0].tolist() == [True, False, True, False, True]  # 0.4 x 5 = 2 dropped: scores 0.1 and 0.2
    assert masks[1][0].tolist() == [False, True, False, True]  # 0.5 x 4 = 2 dropped: scores 0.05 and 0.5
    apply_masks(net, masks)
    again = prune_masks(net, [0.2, 0.0])  # pruning a pruned net never revives a channel
    assert again[0][0].tolist() == masks[0][0].tolist() and again[1][0].tolist() == masks[1][0].tolist()
    x = torch.randn(3, 1, 1, 8, 8, dtype=torch.float64)
    _, hidden = net.forward(x)
    assert (hidden[0][:, 0, [1, 3]] == 0).all() and (hidden[1][:, 0, [0, 2]] == 0).all()
    assert (net.weights[1][0][:, [1, 3]] == 0).all() and (net.weights[1][0][[0, 2]] == 0).all()
    assert (net.head_w.view(1, 4, -1)[0, [0, 2]] == 0).all()


def cifar_cfg(root, **extra):
    ov = [f"data.kind=cifar10", f"data.root={root}", "teacher.widths=[4,4,4,4]", "teacher.batchnorm=after", "teacher.batchnorm_affine=true",
          "teacher_train.epochs=1", "teacher_train.batch_size=25", "teacher_train.finetune_epochs=1", "train.dtype=float32", "train.threads=1",
          "eval.batch_size=16"]
    return load_config(None, ov + [f"{k.replace('__', '.')}={v}" for k, v in extra.items()])


def test_checkpoint_round_trip_and_mismatch_detection(tmp_path):
    write_cifar(tmp_path / "data", per_batch=10, n_test=10)
    ckpt = train_teacher(cifar_cfg(tmp_path / "data"), progress=False)
    apply_masks(ckpt.net, prune_masks(ckpt.net, [0.25, 0.5, 0.5, 0.75]))
    path = save_checkpoint(ckpt, tmp_path / "T.pt")
    back = load_checkpoint(path)
    assert back.inactive == ckpt.inactive and back.active_widths == [3, 2, 2, 1] and back.accuracy == ckpt.accuracy
    assert len(back.net.parameters()) == len(ckpt.net.parameters()) > 0
    for a, b in zip(back.net.parameters(), ckpt.net.parameters()):
        assert torch.equal(a, b)
    x = torch.randn(2, 1, 3, 32, 32, dtype=torch.float64)
    assert torch.equal(back.net.forward(x)[0], ckpt.net.forward(x)[0])

    def tampered(name, edit):
        p = torch.load(path, weights_only=True)
        edit(p)
        torch.save(p, tmp_path / name)
        with pytest.raises(ConfigError) as err:
            load_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value)
        return str(err.value)

    assert "inactive channels do not match" in tampered("a.pt", lambda p: p["inactive"][0].append(0))
    assert "fan-out weights of inactive" in tampered("b.pt", lambda p: p["tensors"]["conv2.weight"].fill_(1.0))
    assert "weights into inactive" in tampered("c.pt", lambda p: p["tensors"]["conv1.weight"].fill_(1.0))
    assert "shape" in tampered("d.pt", lambda p: p["tensors"].__setitem__("head.weight", torch.zeros(10, 5)))
    assert "masks do not match" in tampered("e.pt", lambda p: p["masks"].pop())
    assert "format" in tampered("f.pt", lambda p: p.__setitem__("format", "other"))
    (tmp_path / "g.pt").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="not a readable teacher checkpoint"):
        load_checkpoint(tmp_path / "g.pt")


def test_pipeline_end_to_end(tmp_path, capsys):
    """Synthetic CIFAR files -> teacher train -> prune + fine-tune -> conv students (run) -> tables, figures."""
    data = tmp_path / "data"
    write_cifar(data, per_batch=20, n_test=24)
    base = ["teacher.widths=[4,4,4,4]", "teacher_train.batch_size=25", "train.threads=1", "eval.batch_size=12"]
    assert main(["teacher", "train", "cifar10", *base, "--root", str(data), "--out", str(tmp_path / "T.pt"), "--epochs", "2", "--quiet"]) == 0
    assert main(["teacher", "prune", str(tmp_path / "T.pt"), "--ratios", "0.3,0.5,0.5,0.7", "--epochs", "1", "--out", str(tmp_path / "P.pt"),
                 "--quiet"]) == 0
    assert "active [3, 2, 2, 2]" in capsys.readouterr().out
    pruned = load_checkpoint(tmp_path / "P.pt")
    assert pruned.ratios == [0.3, 0.5, 0.5, 0.7] and len(pruned.history) == 3 and pruned.parent
    # the same teacher, pruned from the same checkpoint, fine-tunes to the same weights (seeded batches and augmentation)
    assert main(["teacher", "prune", str(tmp_path / "T.pt"), "--epochs", "1", "--out", str(tmp_path / "P2.pt"), "--quiet"]) == 0
    again = load_checkpoint(tmp_path / "P2.pt").net.parameters()
    assert len(again) == len(pruned.net.parameters()) > 0 and all(torch.equal(a, b) for a, b in zip(again, pruned.net.parameters()))
    assert main(["teacher", "prune", str(tmp_path / "T.pt"), "--ratios", "0.3,0.5", "--out", str(tmp_path / "P3.pt"), "--quiet"]) == 2

    cfg = tmp_path / "student.yaml"
    cfg.write_text(f"""seeds: [1, 2]
teacher: {{widths: [4, 4, 4, 4], batchnorm: after, batchnorm_affine: true, checkpoint: {tmp_path / 'P.pt'}}}
student: {{multi: 2, init_std: null}}
data: {{kind: cifar10, root: {data}, n_train: 60, n_eval: 24}}
train: {{lr: 0.005, momentum: 0.9, batch_size: 16, steps_per_epoch: null, epochs: 2, dtype: float64, threads: 1}}
eval: {{batch_size: 10}}
""")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    run = load_run(tmp_path / "run")
    sc, te, st = run.scalars, run.teachers, run.students
    assert sorted(sc["epoch"].unique()) == [0, 1, 2] and sc["step"].max() == 8 and (sc["split"] == "eval").all()
    assert {"accuracy", "teacher_agreement", "rho_mean_1", "rho_mean_4", "train_loss"} <= set(sc.columns)
    # metrics over active teacher channels only, indexed by the checkpoint's channel numbers
    for l, mask in enumerate(pruned.masks, start=1):
        assert sorted(te[(te["layer"] == l) & (te["seed"] == 1) & (te["step"] == 0)]["teacher"]) == [i for i, m in enumerate(mask) if m]
    assert sorted(st[(st["layer"] == 1) & (st["seed"] == 2) & (st["step"] == 0)]["student"]) == list(range(6))
    assert te["best_corr"].between(-1, 1).all() and run.summary["student_widths"] == [6, 4, 4, 4]
    assert run.summary["teacher"]["active_widths"] == [3, 2, 2, 2]
    w = run.weights()
    assert w["student.conv2.W"].shape == (2, 4, 6, 3, 3) and w["teacher.mask4"].sum() == 2
    # in float64 a seed trains to the same bits alone as inside the ensemble (its own init, batches and augmentation)
    assert main(["run", str(cfg), "seeds=[2]", "--out", str(tmp_path / "run2"), "--quiet"]) == 0
    alone = load_run(tmp_path / "run2")
    both = sc[sc["seed"] == 2].reset_index(drop=True)
    assert alone.scalars["mse"].tolist() == both["mse"].tolist() and alone.scalars["rho_mean_2"].tolist() == both["rho_mean_2"].tolist()
    assert np.array_equal(alone.weights()["student.conv3.W"][0], w["student.conv3.W"][1])
    # a config that does not describe the checkpoint exits 2
    assert main(["run", str(cfg), "teacher.batchnorm=before", "--out", str(tmp_path / "run3"), "--quiet"]) == 2
    assert "teacher.batchnorm" in capsys.readouterr().err
