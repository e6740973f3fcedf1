"""Teacher recipes (docs/model.md 4.1, 4.3), teacher-aware data (4.2), and the batch stream."""

import math

import pytest
import torch

from studentspec import load_config
from studentspec.ensemble import seeding
from studentspec.config import ConfigError
from studentspec.mlp.data import make_inputs
from studentspec.mlp.data.teacher_aware import teacher_aware
from studentspec.mlp.data.uniform import uniform
from studentspec.ensemble import activations
from studentspec.mlp.teacher import build_teacher, fit_teacher
from studentspec.mlp.train import build

torch.set_default_dtype(torch.float64)


def two_layer(p=1.5, m=8, seeds=(1, 2)):
    cfg = load_config(None, [f"seeds={list(seeds)}", "input_dim=30", "output_dim=20", f"teacher.widths=[{m}]", f"teacher.decay={p}"])
    return cfg, build_teacher(cfg, seeding.generators(cfg.seeds, "teacher"))


# docs/model.md 4.1: entries drawn uniformly from {-1,-0.75,-0.5,-0.25,0,0.25,0.5,0.75,1} -- the spec's numbers, not the code's GRID
SPEC_GRID = torch.tensor([-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)


def on_grid(values: torch.Tensor) -> bool:
    return bool(torch.isclose(values[..., None], SPEC_GRID).any(-1).all())


def test_two_layer_teacher_draws_every_grid_value_uniformly():
    """docs/model.md 4.1: each entry uniform over the 9 values. A row's largest |entry| is 1 (all but certain at d=100), so
    row / max|row| is the drawn grid row itself; over 2000 entries every value appears at ~1/9 each."""
    cfg = load_config(None, ["seeds=[1]", "input_dim=100", "output_dim=50", "teacher.widths=[20]", "teacher.decay=0"])
    t = build_teacher(cfg, seeding.generators(cfg.seeds, "teacher"))
    rows = t.weights[0][0].T  # [m, d], each of unit norm
    drawn = rows / rows.abs().max(dim=1, keepdim=True).values
    assert on_grid(drawn)
    freq = torch.isclose(drawn.reshape(-1, 1), SPEC_GRID).double().mean(0)
    assert (freq - 1 / 9).abs().max() < 0.035, freq  # a binomial(2000, 1/9) share: std 0.007
    out = t.weights[1][0]  # [m, C], decay 0: the drawn output vectors as they are
    assert on_grid(out)
    freq = torch.isclose(out.reshape(-1, 1), SPEC_GRID).double().mean(0)
    assert (freq - 1 / 9).abs().max() < 0.035, freq  # 1000 entries: std 0.01


def test_two_layer_teacher_rows_distinct_unit_norm_fixed_bias():
    cfg, t = two_layer()
    W, b = t.weights[0], t.biases[0]
    assert W.shape == (2, 30, 8)
    torch.testing.assert_close(W.norm(dim=1), torch.ones(2, 8))
    assert (b == -0.1).all() and (t.biases[1] == -0.1).all()
    for s in range(2):
        cols = W[s].T
        assert len({tuple(c.tolist()) for c in cols}) == 8
        ratio = cols / cols.abs().max(dim=1, keepdim=True).values  # the grid pattern, up to a scale
        assert all(any(on_grid(r * c) for c in (0.25, 0.5, 0.75, 1.0)) for r in ratio)


def test_two_layer_output_decay_ratios_and_grid():
    p = 1.5
    _, t = two_layer(p=p)
    V = t.weights[1]  # [S, m, C]
    undone = V * (torch.arange(1, 9, dtype=torch.float64) ** p)[None, :, None]
    assert on_grid(undone)
    for s in range(2):
        cols = {tuple(c.tolist()) for c in undone[s].T}
        assert len(cols) == 20 and all(any(v != 0 for v in c) for c in cols)


def test_two_layer_student_init_inputs_and_biases_are_the_spec():
    """docs/model.md 4.1, its numbers typed here: student weights N(0, 0.005^2) with biases 0; x ~ N(0, 1.5^2 I);
    teacher hidden and output biases -0.1; teacher-aware shifts a ~ U[mean, mean + sigma] with mean = sigma = 2.
    Both the defaults and configs/two_layer.yaml hold them, and build() draws from them."""
    for cfg in (load_config(None, []), load_config("configs/two_layer.yaml")):
        assert cfg.student.init_std == 0.005 and cfg.data.std == 1.5 and cfg.teacher.bias == -0.1
        assert cfg.data.boundary_shift_mean == 2.0 and cfg.data.boundary_shift_sigma == 2.0
    cfg = load_config("configs/two_layer.yaml", ["seeds=[1,2]", "teacher.widths=[20]", "student.multi=10", "data.n_eval=1000"])
    s = build(cfg)
    for W in s.student.weights:  # [2, 100, 200] and [2, 200, 50]: >= 20000 draws each
        assert abs(W.mean().item()) < 1e-4 and abs(W.std().item() / 0.005 - 1) < 0.03, W.std()
    assert all((b == 0).all() for b in s.student.biases) and len(s.student.biases) == 2
    assert all((b == -0.1).all() for b in s.teacher.biases) and len(s.teacher.biases) == 2
    x = s.stream.x_train  # [2, 10000, 100]
    assert x.shape == (2, 10000, 100)
    assert abs(x.mean().item()) < 0.005 and abs(x.std().item() / 1.5 - 1) < 0.005, x.std()
    kurtosis = ((x / x.std()) ** 4).mean().item()
    assert abs(kurtosis - 3.0) < 0.05  # Gaussian (a uniform of the same std has 1.8)


def test_seed_teachers_differ_and_are_reproducible():
    _, t = two_layer()
    _, again = two_layer(seeds=(2,))
    assert not torch.equal(t.weights[0][0], t.weights[0][1])
    assert torch.equal(t.weights[0][1], again.weights[0][0])


def test_impossible_distinct_vectors_is_a_config_error():
    cfg = load_config(None, ["seeds=[1]", "input_dim=5", "output_dim=20", "teacher.widths=[1]"])
    with pytest.raises(ConfigError, match="teacher.widths"):
        build_teacher(cfg, seeding.generators([1], "teacher"))


def test_deep_teacher_tuned_half_active_and_standardized_outputs():
    cfg = load_config("configs/deep_quick.yaml", ["seeds=[3,4]"])
    t = build_teacher(cfg, seeding.generators(cfg.seeds, "teacher"))
    for W in t.weights:  # before tuning every row is unit norm
        torch.testing.assert_close(W.norm(dim=1), torch.ones(W.shape[0], W.shape[2]))
    x = make_inputs(cfg, t, seeding.generators(cfg.seeds, "data"), cfg.data.n_eval, training=False)
    fit_teacher(t, x, tune=True)
    h = x
    for l in range(len(t.weights) - 1):
        z = torch.baddbmm(t.biases[l][:, None, :], h, t.weights[l])
        active = (z > 0).double().mean(1)
        assert (active - 0.5).abs().max() <= 0.02  # exact up to ties at the median (nodes fed by inactive nodes)
        h = activations.get(t.activation).forward(z, t.slope)
    out = torch.baddbmm(t.biases[-1][:, None, :], h, t.weights[-1])
    torch.testing.assert_close(out.mean(1), torch.zeros(2, cfg.output_dim), atol=1e-10, rtol=0)
    torch.testing.assert_close(out.std(1), torch.ones(2, cfg.output_dim), atol=1e-10, rtol=0)


def test_deep_teacher_grid_rows_decay_and_bias_range():
    p = 2.0
    cfg = load_config(None, ["seeds=[5]", "input_dim=6", "output_dim=4", "teacher.widths=[5,5]", "teacher.recipe=deep", f"teacher.decay={p}"])
    t = build_teacher(cfg, seeding.generators(cfg.seeds, "teacher"))
    for l, (W, b) in enumerate(zip(t.weights, t.biases)):
        rows, bias = W[0].T, b[0]  # [nodes, fan_in]
        scale = torch.arange(1, rows.shape[1] + 1, dtype=torch.float64) ** (p if l > 0 else 0.0)
        ratio = rows * scale / (rows * scale).abs().max(dim=1, keepdim=True).values
        for j in range(rows.shape[0]):  # the grid row is ratio * c for one c in {0.25, 0.5, 0.75, 1}
            grid_row = next(ratio[j] * c for c in (0.25, 0.5, 0.75, 1.0) if on_grid(ratio[j] * c))
            norm = (grid_row / scale).norm()
            torch.testing.assert_close(rows[j], grid_row / scale / norm)
            assert -0.5 <= bias[j] * norm <= 0.5
        assert len({tuple(r.tolist()) for r in rows}) == rows.shape[0]


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("n", [60, 46])
def test_teacher_aware_points_on_boundary_and_copies_on_opposite_sides(exact, n):
    """docs/model.md 4.2: ceil(N/(3m)) points per teacher node (46 -> ceil(46/15) = 4, not 3), each kept with its copies
    x +- a w*_j, a ~ U[2, 4] (mean = sigma = 2), every sample rescaled to norm 1.5 sqrt(d) (d = 30)."""
    cfg, t = two_layer(m=5)
    w, b = t.weights[0][0], t.biases[0][0]
    g = torch.Generator().manual_seed(0)
    x = teacher_aware(g, w, b, n, std=1.5, exact=exact)
    assert x.shape == (60, 30)  # ceil(n / 15) = 4 points x 3 x 5 nodes
    for j in range(5):
        blk = x[j * 12 : (j + 1) * 12]
        base, plus, minus = blk[:4], blk[4:8], blk[8:]
        pre = lambda v: v @ w[:, j] + b[j]
        unit = w[:, j] / w[:, j].norm()
        if exact:
            assert pre(base).abs().max() < 1e-12
            torch.testing.assert_close(base.norm(dim=1), torch.full((4,), 1.5 * math.sqrt(30)))
            shift = (plus - base) @ unit
            torch.testing.assert_close((base - minus) @ unit, shift)
        else:
            torch.testing.assert_close(blk.norm(dim=1), torch.full((12,), 1.5 * math.sqrt(30)))
            assert pre(base).abs().max() < 0.1  # rescaling moves base points slightly off (bias -0.1)
            # undo the rescaling to read a back: the base point was scaled by t, and w.x + b = 0 held before
            scale = -(base @ w[:, j]) / b[j]
            orig = base / scale[:, None]
            torch.testing.assert_close(pre(orig), torch.zeros(4), rtol=0, atol=1e-12)
            perp = lambda v: v - (v @ unit)[:, None] * unit  # the copies differ from orig along w only
            shifts = []
            for copy in (plus, minus):
                s = perp(copy).norm(dim=1) / perp(orig).norm(dim=1)
                shifts.append((copy / s[:, None] - orig) @ unit)
            shift = shifts[0]
            torch.testing.assert_close(-shifts[1], shift)  # x + a w and x - a w share their a
        assert ((shift >= 2) & (shift <= 4)).all(), shift
        assert (pre(plus) > 0).all() and (pre(minus) < 0).all()


def test_uniform_inputs_have_requested_std():
    x = uniform(torch.Generator().manual_seed(0), 200000, 3, 2.0)
    assert abs(x.std().item() - 2.0) < 0.01 and x.abs().max() <= 2.0 * math.sqrt(3)


def _batches(overrides, epochs=2):
    cfg = load_config(None, ["seeds=[1,2]", "input_dim=5", "output_dim=3", "teacher.widths=[3]", "data.n_train=40",
                             "data.n_eval=10", "train.batch_size=4", "train.steps_per_epoch=10", *overrides])
    s = build(cfg)
    return s, [[(x.clone(), y.clone()) for x, y in s.stream.epoch(e)] for e in range(epochs)]


def test_shuffle_sampling_visits_each_sample_once_per_epoch():
    s, epochs = _batches(["train.sampling=shuffle"])
    for batches in epochs:
        xs = torch.cat([x for x, _ in batches], dim=1)  # [S, 40, d]
        for k in range(2):
            got = sorted(map(tuple, xs[k].tolist()))
            assert got == sorted(map(tuple, s.stream.x_train[k].tolist()))


def test_batches_are_labelled_by_the_teacher_and_online_data_is_fresh():
    s, epochs = _batches(["data.kind=online"])
    x, y = epochs[0][0]
    torch.testing.assert_close(y, s.teacher_run.forward(x)[0])
    all_x = torch.cat([x for e in epochs for x, _ in e], dim=1)
    assert len({tuple(r) for r in all_x[0].tolist()}) == all_x.shape[1]


def test_regenerate_draws_a_new_training_set_each_epoch():
    s, _ = _batches(["data.regenerate=true"], epochs=1)
    first = s.stream.x_train.clone()
    list(s.stream.epoch(1))
    assert not torch.equal(first, s.stream.x_train)
    torch.testing.assert_close(s.stream.y_train, s.teacher_run.forward(s.stream.x_train)[0])


@pytest.mark.parametrize("recipe", ["two_layer", "deep"])
def test_real_sizes_build_mnist_sized_inputs_and_wide_layers(recipe):
    """d=784 (MNIST-sized) and a width of 1000: 9**length is far beyond a float (it overflowed at length 324)."""
    cfg = load_config(None, ["seeds=[1]", "input_dim=784", "output_dim=10", "teacher.widths=[1000]", f"teacher.recipe={recipe}"])
    teacher = build_teacher(cfg, seeding.generators(cfg.seeds, "teacher"))
    w = teacher.weights[0][0]
    assert w.shape == (784, 1000) and torch.isfinite(w).all()
    assert len({tuple(c) for c in w.T.tolist()}) == 1000  # distinct rows
    assert teacher.weights[1].shape == (1, 1000, 10)


def test_small_pages_tensors_are_ordinary_writable_tensors_that_keep_their_memory():
    """make_inputs' buffers come from an anonymous mapping (no huge pages): they must behave like torch.empty's."""
    import gc

    from studentspec.mlp.data import small_pages

    t = small_pages((3, 5, 7), torch.float64)
    gc.collect()  # the mapping must live as long as the tensor, with no other reference to it
    assert t.shape == (3, 5, 7) and t.dtype == torch.float64 and t.is_contiguous()
    t.copy_(torch.arange(105, dtype=torch.float64).view(3, 5, 7))
    assert t.sum().item() == 105 * 104 / 2
    assert small_pages((0, 4), torch.float32).shape == (0, 4)
    assert small_pages((2, 3), torch.float32).dtype == torch.float32
