"""rmtlib.redundancy: pruning criteria, network surgery, batched curves, low rank, unit graphs (METHODS §9)."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from rmtlib import models, redundancy as R
from rmtlib.data import Split


# --------------------------------------------------------------------------- frame potential
def test_frame_potential_of_orthonormal_rows_is_their_number():
    # <e_i, e_j>^2 = delta_ij, so FP = m; scaling rows does not change it (rows are normalized).
    Q, _ = torch.linalg.qr(torch.randn(40, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    rows = Q.T * torch.arange(1, 8, dtype=torch.float64)[:, None]  # 7 orthogonal rows of different norms
    assert R.frame_potential(rows) == pytest.approx(7.0, abs=1e-10)


def test_frame_potential_of_a_rank_one_set_is_m_squared():
    # Rows c_i * v with c_i != 0: every |<w^_i, w^_j>| = 1, so FP = m^2 (the maximum).
    v = torch.randn(30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, -0.1], dtype=torch.float64)
    assert R.frame_potential(torch.outer(c, v)) == pytest.approx(25.0, rel=1e-12)
    # each row's contribution is m
    assert torch.allclose(R.fp_contributions(torch.outer(c, v)), torch.full((5,), 5.0, dtype=torch.float64))


def test_frame_potential_lower_bound_for_random_rows():
    # For m unit rows in n < m dimensions FP >= m^2 / n (tight frame bound): never below it.
    W = torch.randn(60, 20, generator=torch.Generator().manual_seed(2))
    assert R.frame_potential(W) >= 60**2 / 20 - 1e-6


# --------------------------------------------------------------------------- removal orders
def test_magnitude_order_on_a_hand_made_matrix():
    W = torch.tensor([[3.0, 0.0], [0.0, 1.0], [2.0, 0.0], [3.0, 4.0]])  # norms 3, 1, 2, 5
    assert R.removal_order(W, "magnitude").tolist() == [1, 2, 0, 3]
    assert R.removal_order(W, "magnitude", remove="largest").tolist() == [3, 0, 2, 1]
    assert R.removal_order(W, "max_mag_pruning").tolist() == [1, 2, 0, 3]  # the study's label
    assert R.removal_order(W, "min_mag_pruning").tolist() == [3, 0, 2, 1]


def _two_clusters():
    """Cluster A: rows 0-3, e0 + t e_k with pairwise cos^2 = 0.9; cluster B: rows 4-6, copies of e5."""
    t = math.sqrt(1 / math.sqrt(0.9) - 1)  # cos = 1 / (1 + t^2) = sqrt(0.9)
    W = torch.zeros(7, 6, dtype=torch.float64)
    for i in range(4):
        W[i, 0], W[i, i + 1] = 1.0, t
    W[4:, 5] = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    return W


def test_frame_potential_order_updates_after_each_removal():
    # Contributions: A rows 1 + 3 * 0.9 = 3.7, B rows 3. Removing the largest, with updates:
    # A (3.7) -> A rows 2.8 < 3 -> B -> B 2 < 2.8 -> A (2.8) -> A 1.9 < 2 -> B -> A -> last A and B
    # tie at 1. Without the update all four A rows would go first.
    W = _two_clusters()
    c = R.fp_contributions(W)
    assert torch.allclose(c, torch.tensor([3.7] * 4 + [3.0] * 3, dtype=torch.float64))
    order = R.removal_order(W, "frame_potential", remove="largest").tolist()
    groups = ["A" if i < 4 else "B" for i in order]
    assert groups[:5] == ["A", "B", "A", "B", "A"]
    assert sorted(groups[5:]) == ["A", "B"]
    # smallest first: all of B (3, then 2, then 1 < 3.7), then A
    order = R.removal_order(W, "frame_potential", remove="smallest").tolist()
    assert sorted(order[:3]) == [4, 5, 6] and sorted(order[3:]) == [0, 1, 2, 3]


def test_frame_potential_greedy_equals_recomputing_from_scratch():
    # Independent route: at each step recompute the frame potential of the remaining rows for
    # every candidate and remove the one that leaves it largest (FP' = FP - 2 c_k + 1).
    W = torch.randn(12, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    order = R.removal_order(W, "frame_potential", remove="smallest").tolist()
    alive = list(range(12))
    ref = []
    while len(alive) > 2:  # the last two always tie
        best = max(alive, key=lambda k: R.frame_potential(W[[i for i in alive if i != k]]))
        ref.append(best)
        alive.remove(best)
    assert order[:10] == ref


def test_random_order_is_a_seeded_permutation_independent_of_the_weights():
    W1, W2 = torch.randn(20, 4), torch.randn(20, 9)
    a = R.removal_order(W1, "random", seed=5)
    assert sorted(a.tolist()) == list(range(20))
    assert a.tolist() == R.removal_order(W2, "random", seed=5).tolist()
    assert a.tolist() != R.removal_order(W1, "random", seed=6).tolist()


def test_unknown_criterion_is_refused():
    with pytest.raises(ValueError, match="criterion"):
        R.removal_order(torch.randn(3, 3), "norm")
    with pytest.raises(ValueError, match="remove"):
        R.removal_order(torch.randn(3, 3), "magnitude", remove="biggest")


# --------------------------------------------------------------------------- surgery
def _stand_in(shape=(1, 12, 12), n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (n,), generator=g)
    return Split(x, y)


def _zero_inputs_of_next(model, layer, units):
    """The masked network by a third route: zero the next layer's inputs from the removed units."""
    leaves, i, j = R._plan(model, layer)
    out = __import__("copy").deepcopy(model)
    nxt = dict(R._leaves(out))[leaves[j][0]]
    m = leaves[i][1].weight.shape[0]
    fan = nxt.weight.shape[1]
    block = fan // m
    with torch.no_grad():
        for u in units:
            nxt.weight[:, u * block : (u + 1) * block] = 0
    return out


@pytest.mark.parametrize("layer", ["conv1", "conv2", "fc1", "fc2"])
def test_pruned_network_has_valid_shapes_and_equals_the_masked_one(layer):
    torch.manual_seed(0)
    net = models.conv2(1, 10, image_size=12, width=0.1, dense=(16, 12)).double().eval()
    split = _stand_in()
    m = R._units_of(net, layer)
    units = R.removal_order(R.spectra.weight_matrix(R.spectra.get_layer(net, layer)), "frame_potential")[: m // 2]
    pruned = R.remove_units(net, layer, units)
    assert R.spectra.get_layer(pruned, layer).weight.shape[0] == m - len(units)
    assert R.spectra.get_layer(net, layer).weight.shape[0] == m  # the input model is unchanged
    out_p = pruned(split.x)
    assert out_p.shape == (len(split), 10)
    masked = _zero_inputs_of_next(net, layer, units.tolist())
    # float64: the two routes differ only in summation order, ~1e-16 relative
    assert torch.allclose(out_p, masked(split.x), rtol=1e-10, atol=1e-12)
    # and removing a unit changes the output (the test can fail)
    assert not torch.allclose(out_p, net(split.x), atol=1e-6)


def test_pruning_through_batchnorm_and_global_pooling():
    torch.manual_seed(1)
    net = models.vgg19(3, 10, image_size=8, width=1 / 16, dense=(8, 6)).double()
    split = _stand_in((3, 8, 8), n=24)
    net.train()
    net(split.x)  # give the BatchNorm layers running statistics of their own
    net.eval()
    for layer in ("conv2", "conv16", "fc1"):
        units = [0, 1] if layer != "fc1" else [3]
        pruned = R.remove_units(net, layer, units)
        masked = _zero_inputs_of_next(net, layer, units)
        assert torch.allclose(pruned(split.x), masked(split.x), rtol=1e-10, atol=1e-12)


def test_prune_units_uses_the_criterion_order():
    torch.manual_seed(2)
    net = models.lenet_300_100(20, 4, hidden=(9, 7)).double()
    W = net.fc1.weight.detach()
    pruned = R.prune_units(net, "fc1", "magnitude", 4)
    kept = sorted(set(range(9)) - set(R.removal_order(W, "magnitude")[:4].tolist()))
    assert torch.equal(pruned.fc1.weight, W[kept])
    assert pruned.fc2.weight.shape == (7, 5)


@pytest.mark.parametrize("criterion", ["magnitude", "min_fp_pruning", "random"])
def test_batched_curve_equals_pruned_copies(criterion):
    # fast route: masks batched through the suffix; naive route: weights sliced, full forward.
    torch.manual_seed(3)
    net = models.conv2(1, 10, image_size=12, width=0.25, dense=(24, 16)).double().eval()
    split = _stand_in(n=64)
    split = Split(split.x, net(split.x).argmax(1))  # labels the network gets right: accuracy 1 at n = 0
    fast = R.pruning_curve(net, "fc1", criterion, split, batch_size=20, seed=4)
    naive = R.pruning_curve(net, "fc1", criterion, split, counts=range(24), method="naive", seed=4)
    assert fast.accuracy.iloc[0] == 1.0
    assert len(fast) == 25 and fast.removed.tolist() == list(range(25))
    np.testing.assert_array_equal(fast.accuracy.values[:24], naive.accuracy.values)
    assert fast.accuracy.min() < 1.0  # pruning does something


def test_batched_curve_for_a_convolutional_layer_before_flatten():
    torch.manual_seed(4)
    net = models.conv2(1, 10, image_size=12, width=0.1, dense=(16, 12)).double().eval()
    split = _stand_in(n=40)
    fast = R.pruning_curve(net, "conv2", "magnitude", split, counts=[0, 2, 4, 5])
    naive = R.pruning_curve(net, "conv2", "magnitude", split, counts=[0, 2, 4, 5], method="naive")
    np.testing.assert_array_equal(fast.accuracy.values, naive.accuracy.values)


# --------------------------------------------------------------------------- bad input
def test_bad_input_names_the_valid_range():
    net = models.lenet_300_100(20, 4, hidden=(9, 7))
    with pytest.raises(ValueError, match=r"\[0, 8\]"):
        R.prune_units(net, "fc1", "magnitude", 10)
    with pytest.raises(ValueError, match="output layer.*prunable layers: \\['fc1', 'fc2'\\]"):
        R.prune_units(net, "out", "magnitude", 1)
    with pytest.raises(ValueError, match="does not exist.*fc1"):
        R.prune_units(net, "fc9", "magnitude", 1)
    with pytest.raises(ValueError, match="not a Linear"):
        R.prune_units(net, "relu1", "magnitude", 1)
    with pytest.raises(ValueError, match="sigma must lie in \\(0.0, inf\\)"):
        R.unit_graph(torch.randn(4, 3), sigma=0.0, threshold=0.5)
    with pytest.raises(ValueError, match="threshold must lie in \\[0.0, 1.0\\]"):
        R.unit_graph(torch.randn(4, 3), sigma=1.0, threshold=1.5)
    with pytest.raises(ValueError, match="threshold"):
        R.unit_graph(torch.randn(4, 3), sigma=1.0, threshold=-0.1)
    with pytest.raises(ValueError, match="k must lie in \\[0, 3\\]"):
        R.low_rank(torch.randn(3, 5), 4)
    with pytest.raises(ValueError, match="NaN"):
        R.frame_potential([[1.0, float("nan")]])
    with pytest.raises(TypeError, match="Split"):
        R.pruning_curve(net, "fc1", "magnitude", (torch.zeros(2, 20), torch.zeros(2)))


def test_inputs_of_any_float_dtype_and_lists():
    W = torch.randn(6, 4)
    ref = R.frame_potential(W)
    assert R.frame_potential(W.to(torch.bfloat16)) == pytest.approx(ref, rel=2e-2)  # 8-bit mantissa
    assert R.frame_potential(W.numpy().tolist()) == pytest.approx(ref, rel=1e-6)
    assert R.frame_potential(W.clone().requires_grad_()) == pytest.approx(ref, rel=1e-12)


# --------------------------------------------------------------------------- low rank
@pytest.mark.parametrize("shape", [(30, 50), (50, 30)])
def test_rank_k_error_is_the_tail_of_the_singular_values(shape):
    # Eckart-Young: ||W - W_k||_F^2 = sum_{i>k} s_i^2 and ||W - W_k||_2 = s_{k+1}.
    W = np.random.default_rng(5).standard_normal(shape)
    s = np.linalg.svd(W, compute_uv=False)
    for k in (0, 1, 7, 29, 30):
        Wk = R.low_rank(W, k).numpy()
        assert np.linalg.matrix_rank(Wk, tol=1e-8) == k
        assert np.linalg.norm(W - Wk) == pytest.approx(math.sqrt(np.sum(s[k:] ** 2)), rel=1e-9, abs=1e-10)
        if k < 30:
            assert np.linalg.norm(W - Wk, 2) == pytest.approx(s[k], rel=1e-9)
    np.testing.assert_allclose(R.residual_curve(s)[7], math.sqrt(np.sum(s[7:] ** 2) / np.sum(s**2)), rtol=1e-12)


def test_elbow_finds_the_rank_of_a_planted_signal():
    s = np.r_[np.full(10, 10.0), np.full(90, 0.1)]
    assert R.elbow(s) == 10
    s = np.r_[np.linspace(20, 15, 4), np.full(60, 0.5)]
    assert R.elbow(s) == 4


def test_low_rank_table_on_a_layer_of_exact_rank():
    torch.manual_seed(6)
    net = models.lenet_300_100(30, 5, hidden=(24, 12)).double().eval()
    with torch.no_grad():
        net.fc1.weight.copy_(R.low_rank(net.fc1.weight, 3))  # rank 3 exactly
    split = _stand_in((30,), n=50)
    split = Split(split.x, net(split.x).argmax(1))
    tab = R.low_rank_table(net, split, k=3).set_index("layer")
    assert tab.loc["fc1", "norm_kept"] == pytest.approx(100.0, abs=1e-8)
    assert tab.loc["fc1", "accuracy_lost"] == 0.0
    assert tab.loc["fc1", "elbow"] == 3
    assert tab.loc["fc2", "norm_kept"] < 100.0  # fc2 is random: rank 3 drops part of it
    assert tab.loc["fc1", "Q"] == pytest.approx(30 / 24)


def test_outlier_overlap_of_units_that_carry_a_spike():
    g = torch.Generator().manual_seed(7)
    W = 0.01 * torch.randn(40, 60, generator=g, dtype=torch.float64)
    u = torch.zeros(40, dtype=torch.float64)
    u[:5] = 1 / math.sqrt(5)
    W += 10 * torch.outer(u, torch.randn(60, generator=g, dtype=torch.float64) / math.sqrt(60))
    assert R.outlier_overlap(W, list(range(5)), 1) > 0.99
    assert R.outlier_overlap(W, list(range(5, 40)), 1) < 0.01
    # the curve over kept counts: keeping the 5 largest rows (removed last) carries it all
    order = R.removal_order(W, "magnitude")
    curve = R.overlap_curve(W, order, 1)
    assert curve[4] > 0.99 and curve[-1] == pytest.approx(1.0)
    assert curve[0] == pytest.approx(R.outlier_overlap(W, order[-1:], 1))


# --------------------------------------------------------------------------- unit graph
def test_unit_graph_edges_and_node_sizes():
    W = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    G = R.unit_graph(W, sigma=1.0, threshold=0.5)
    # weights: parallel rows exp(0) = 1; orthogonal exp(-1) = 0.37 < 0.5; 45 degrees exp(-(1 - 0.707)) = 0.75
    assert sorted(G.edges()) == [(0, 1), (0, 3), (1, 3), (2, 3)]
    assert G[0][1]["weight"] == pytest.approx(1.0)
    assert G[0][3]["weight"] == pytest.approx(math.exp(-(1 - 1 / math.sqrt(2))))
    assert [G.nodes[i]["norm"] for i in range(4)] == pytest.approx([1, 2, 3, math.sqrt(2)])
    assert R.unit_graph(W, sigma=1.0, threshold=0.0).number_of_edges() == 6
    assert R.unit_graph(W, sigma=1.0, threshold=1.0).number_of_edges() == 1
    s = R.graph_summary(R.unit_graph(W, sigma=0.5, threshold=0.5))
    assert s["components"] == 3 and s["largest"] == 2 and s["isolated"] == 2


def test_unit_graph_of_random_rows_is_empty_at_the_study_cutoff():
    # Random rows in n = 784 dims: cos ~ N(0, 1/784), sd 0.036; the cutoff cos >= 0.25 is 7 sd
    # away, P ~ 1e-12 per pair, so 300 units (45,000 pairs) give no edge.
    W = torch.randn(300, 784, generator=torch.Generator().manual_seed(8))
    G = R.unit_graph(W, sigma=0.5, threshold=math.exp(-3))
    assert G.graph["cos_cutoff"] == pytest.approx(0.25)
    assert G.number_of_edges() == 0
    pos = R.force_layout(G, seed=0, iterations=5)
    assert len(pos) == 300 and all(np.isfinite(p).all() for p in pos.values())


# --------------------------------------------------------------------------- the study's models
@pytest.mark.parametrize("name", ["conv6", "vgg19"])
def test_cifar_models_on_a_small_stand_in(name):
    # CIFAR-10 needs a download: the same code path on random 3x32x32 images.
    torch.manual_seed(9)
    net = models.build(name, (3, 32, 32), 10, width=1 / 16, dense=(12, 8)).eval()
    split = Split(torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))
    assert R.prunable_layers(net)[-2:] == ["fc1", "fc2"]
    curve = R.pruning_curve(net, "fc1", "max_fp_pruning", split, counts=[0, 6, 11])
    assert curve.kept.tolist() == [12, 6, 1]
    tab = R.low_rank_table(net, split, k=4, layers=["fc1"])
    assert tab.units.iloc[0] == 12 and 0 < tab.norm_kept.iloc[0] <= 100
    assert R.prune_units(net, "conv1", "magnitude", 2)(split.x).shape == (16, 10)


def test_heitmann_models_have_the_study_sizes():
    # Heitmann Fig. 1: LeNet 266K weights; Conv-2 4.3M (first dense layer 16384 -> 256, Q = 64);
    # Conv-6's first dense layer 4096 -> 256 (Q = 16); VGG19's 512 -> 512 (Q = 1).
    assert 266_000 <= models.count_parameters(models.build("lenet_300_100", (1, 28, 28), 10)) < 267_000
    c2 = models.build("conv2", (3, 32, 32), 10)
    assert 4.2e6 < models.count_parameters(c2) < 4.4e6 and tuple(c2.fc1.weight.shape) == (256, 16384)
    assert tuple(models.build("conv6", (3, 32, 32), 10).fc1.weight.shape) == (256, 4096)
    assert tuple(models.build("vgg19", (3, 32, 32), 10).fc1.weight.shape) == (512, 512)


def test_low_rank_table_reports_the_mp_goodness_of_fit():
    # fc1 keeps its Gaussian (Glorot) start: its bulk must pass the MP goodness-of-fit test (a
    # rejection of pure noise would be a false positive; the test's level is GOF_LEVEL, fixed seed).
    # fc2 gets Cauchy entries: no finite variance, the spectrum is dominated by a few huge values and
    # its bulk cannot follow any MP law, so the test must reject it. The output layer (5 rows) is
    # fitted too; the column holds the fit's verdict and the warning stays silent (warn=False).
    torch.manual_seed(11)
    net = models.lenet_300_100(120, 5, hidden=(200, 150)).double().eval()
    with torch.no_grad():
        net.fc2.weight.copy_(torch.distributions.Cauchy(0.0, 0.05).sample(net.fc2.weight.shape).double())
    split = _stand_in((120,), n=40)
    split = Split(split.x, net(split.x).argmax(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any MPFitWarning would fail the test
        tab = R.low_rank_table(net, split, k=3, layers=["fc1", "fc2"]).set_index("layer")
    assert tab.loc["fc1", "mp_bulk_ok"] == True  # noqa: E712
    assert tab.loc["fc2", "mp_bulk_ok"] == False  # noqa: E712
