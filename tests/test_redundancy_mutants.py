"""rmtlib.redundancy against hand-computed values and its promised messages (issue 17, mutation testing).

Expectations are written out by hand: residual curves of two or three singular values, the
weight-vector graph's edges at the default width and threshold, the node areas and edge
opacities the drawing promises, and the input door's messages in full (anchored, so that a
message that loses its argument, range or reason fails).
"""
import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402

from rmtlib import models, redundancy as R  # noqa: E402


def whole(text):
    return "^" + re.escape(text) + "$"


# --------------------------------------------------------------------------- messages
def test_layers_that_cannot_be_pruned_are_named_with_the_reason():
    net = models.lenet_300_100(20, 4, hidden=(9, 7))
    with pytest.raises(ValueError, match=whole(
            "layer 'fc9' cannot be pruned: it does not exist; prunable layers: ['fc1', 'fc2']")):
        R.prune_units(net, "fc9", "magnitude", 1)
    with pytest.raises(ValueError, match=whole(
            "layer 'out' cannot be pruned: it is the output layer (its units are the classes); "
            "prunable layers: ['fc1', 'fc2']")):
        R.prune_units(net, "out", "magnitude", 1)
    with pytest.raises(ValueError, match=whole(
            "n must lie in [0, 8]; got 9 (layer 'fc1' has 9 units; at least one must stay)")):
        R.prune_units(net, "fc1", "magnitude", 9)


def test_subspace_rank_cannot_exceed_the_number_of_singular_values():
    W = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # the whole left subspace (r = 3 of 3): each unit's mass is its row of U squared, summing to 3
    assert float(R.subspace_mass(W, 3).sum()) == pytest.approx(3.0, abs=1e-12)
    with pytest.raises(ValueError, match=whole("r must lie in [1, 3]; got 4 (r counts top singular vectors)")):
        R.subspace_mass(W, 4)


# --------------------------------------------------------------------------- low rank
def test_residual_curve_by_hand():
    # singular values 3 and 4: r(0) = 1, r(1) = 3 / 5 (the rank-1 part keeps the 4), r(2) = 0
    np.testing.assert_allclose(R.residual_curve([3.0, 4.0]), [1.0, 0.6, 0.0], atol=1e-15)
    # a single unit singular value: ||W||_F = 1 exactly; r = [1, 0]
    np.testing.assert_array_equal(R.residual_curve([1.0]), [1.0, 0.0])
    with pytest.raises(ValueError, match=whole(
            "singular_values are all zero: a zero matrix has no residual curve")):
        R.residual_curve([0.0, 0.0])


def test_elbow_needs_three_singular_values():
    with pytest.raises(ValueError, match=whole(
            "singular_values has 2 entries; at least 3 are needed "
            "(an elbow needs a curve of at least two ranks 1 <= k < M)")):
        R.elbow([2.0, 1.0])
    assert R.elbow([10.0, 0.1, 0.1]) == 1  # a single large value: the elbow at rank 1


# --------------------------------------------------------------------------- unit graph
def test_unit_graph_defaults_are_the_studys_width_and_threshold():
    # sigma = 0.5, threshold = 0.05: an edge when cos >= 1 + 0.25 ln 0.05 = 0.2511.
    # Row 0 = e0; row 1 at cos 0.3 with it (weight exp(-0.7 / 0.25) = 0.0608, kept);
    # row 2 at cos 0.2 (exp(-3.2) = 0.0408, dropped). Rows 1 and 2 lie on different axes:
    # cos(1, 2) = 0.3 * 0.2 = 0.06 (dropped).
    W = torch.tensor([[1.0, 0.0, 0.0],
                      [0.3, math.sqrt(1 - 0.09), 0.0],
                      [0.2, 0.0, math.sqrt(1 - 0.04)]])
    G = R.unit_graph(W)
    assert G.graph["sigma"] == 0.5 and G.graph["threshold"] == 0.05
    assert G.graph["cos_cutoff"] == pytest.approx(1 + 0.25 * math.log(0.05))
    assert sorted(G.edges()) == [(0, 1)]
    assert G[0][1]["weight"] == pytest.approx(math.exp(-0.7 / 0.25), rel=1e-6)


def test_drawing_sizes_nodes_by_norm_and_shades_edges_by_weight():
    # rows of norms 1, 2, 4; rows 0 and 1 parallel (weight 1), row 2 at 45 degrees to both
    # (weight exp(-(1 - 1/sqrt 2)) = 0.746 at sigma 1)
    W = torch.tensor([[1.0, 0.0], [2.0, 0.0], [4 / math.sqrt(2), 4 / math.sqrt(2)]])
    G = R.unit_graph(W, sigma=1.0, threshold=0.5)
    pos = {i: np.array([float(i), 0.0]) for i in range(3)}
    fig, ax = plt.subplots()
    try:
        R.draw_unit_graph(G, ax, pos=pos, norm_ref=2.0, size_scale=40.0)
        nodes = [c for c in ax.collections if isinstance(c, PathCollection)]
        edges = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert len(nodes) == 1 and len(edges) == 1
        # node area = size_scale * norm / norm_ref, no outline
        np.testing.assert_allclose(nodes[0].get_sizes(), [20.0, 40.0, 80.0], rtol=1e-6)
        np.testing.assert_array_equal(nodes[0].get_linewidths(), [0.0])
        # edges 0.8 wide, opacity 0.3 + 0.7 w, in the graph's edge order
        np.testing.assert_allclose(edges[0].get_linewidths(), [0.8])
        w = np.array([d["weight"] for _, _, d in G.edges(data=True)])
        np.testing.assert_allclose(edges[0].get_edgecolor()[:, 3], 0.3 + 0.7 * w, rtol=1e-6)
        # without norm_ref the mean norm (7/3) is the reference
        ax.clear()
        R.draw_unit_graph(G, ax, pos=pos, size_scale=40.0)
        sizes = [c for c in ax.collections if isinstance(c, PathCollection)][0].get_sizes()
        np.testing.assert_allclose(sizes, 40.0 * np.array([1.0, 2.0, 4.0]) / (7 / 3), rtol=1e-6)
        with pytest.raises(ValueError, match=whole("norm_ref must lie in (0.0, inf); got 0.0")):
            R.draw_unit_graph(G, ax, pos=pos, norm_ref=0.0)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("forceatlas2", [True, False])
def test_force_layout_pulls_strong_edges_shorter(forceatlas2, monkeypatch):
    # A path 0 - 1 - 2 - 3 whose middle edge is 50 times weaker: edges are springs of strength
    # proportional to their weight, so the weak middle edge is stretched far more than the two
    # strong ones (measured: strong / weak length 0.2-0.42 over seeds 0-4; ignoring the weights
    # gives 0.91). Both routes: ForceAtlas2, and Fruchterman-Reingold for a networkx without it.
    import networkx as nx

    if not forceatlas2:
        monkeypatch.delattr(nx, "forceatlas2_layout", raising=False)
    G = nx.Graph()
    G.add_weighted_edges_from([(0, 1, 1.0), (1, 2, 0.02), (2, 3, 1.0)])
    pos = R.force_layout(G, seed=0)
    d = {e: float(np.linalg.norm(pos[e[0]] - pos[e[1]])) for e in G.edges()}
    assert d[(0, 1)] < 0.6 * d[(1, 2)] and d[(2, 3)] < 0.6 * d[(1, 2)]


# =========================================================================== session 4 (whole module)
from torch import nn  # noqa: E402

from rmtlib.data import Split  # noqa: E402

PER_CHANNEL_NAMES = ("['AdaptiveAvgPool2d', 'AdaptiveMaxPool2d', 'AvgPool1d', 'AvgPool2d', 'BatchNorm1d', "
                     "'BatchNorm2d', 'Dropout', 'Dropout2d', 'ELU', 'Flatten', 'GELU', 'Identity', 'LeakyReLU', "
                     "'MaxPool1d', 'MaxPool2d', 'ReLU', 'SiLU', 'Sigmoid', 'Tanh']")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2)).double()


def _split(shape, n=6, classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g))


def test_counts_out_of_range_or_empty_are_refused_with_the_layers_size():
    net, split = _mlp(), _split((4,))
    with pytest.raises(ValueError, match=whole("counts must lie in [0, 5]; got 6 (the layer has 5 units)")):
        R.pruning_curve(net, "0", "magnitude", split, counts=[1, 6])
    with pytest.raises(ValueError, match=whole("counts must lie in [0, 5]; got -1 (the layer has 5 units)")):
        R.pruning_curve(net, "0", "magnitude", split, counts=[-1])
    with pytest.raises(ValueError, match=whole(
            "counts must list at least one number of units to remove in [0, 5]")):
        R.pruning_curve(net, "0", "magnitude", split, counts=[])
    # the ends themselves are valid: all 5 units removed leaves only the biases (fast route)
    df = R.pruning_curve(net, "0", "magnitude", split, counts=[0, 5])
    assert df.removed.tolist() == [0, 5] and df.kept.tolist() == [5, 0]


def test_unit_indices_are_checked_on_their_boundaries_with_whole_messages():
    net = _mlp()
    with pytest.raises(ValueError, match=whole("unit indices must lie in [0, 4] ('0' has 5 units); got [5]")):
        R.remove_units(net, "0", [5])
    with pytest.raises(ValueError, match=whole("unit indices must lie in [0, 4] ('0' has 5 units); got [-1]")):
        R.remove_units(net, "0", [-1])
    with pytest.raises(ValueError, match=whole("unit indices must be distinct")):
        R.remove_units(net, "0", [1, 1])
    with pytest.raises(ValueError, match=whole("cannot remove all 5 units of '0'; remove at most 4")):
        R.remove_units(net, "0", [0, 1, 2, 3, 4])
    # boundaries accepted: index m - 1, an empty list (nothing removed), a float tensor of whole numbers
    assert R.remove_units(net, "0", [4])[0].weight.shape == (4, 4)
    same = R.remove_units(net, "0", [])
    assert torch.equal(same[0].weight, net[0].weight) and torch.equal(same[2].weight, net[2].weight)
    out = R.remove_units(net, "0", torch.tensor([1.0, 3.0]))
    assert torch.equal(out[0].weight, net[0].weight[[0, 2, 4]])
    assert torch.equal(out[2].weight, net[2].weight[:, [0, 2, 4]])


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x)


def test_models_that_are_not_sequential_are_named_in_the_message():
    with pytest.raises(TypeError, match=whole(
            "pruning needs a model built from nn.Sequential containers (so that the order of modules is the "
            "order of execution); the model is a _Block")):
        R.prunable_layers(_Block())
    with pytest.raises(TypeError, match=whole(
            "pruning needs a model built from nn.Sequential containers (so that the order of modules is the "
            "order of execution); 1 is a _Block")):
        R.prunable_layers(nn.Sequential(nn.Linear(3, 3), _Block()))


def test_plan_messages_name_the_layer_and_the_reason():
    net = _mlp()
    with pytest.raises(TypeError, match=whole("layer must be a layer name (str); got int")):
        R.remove_units(net, 0, [0])
    with pytest.raises(ValueError, match=whole(
            "layer '1' cannot be pruned: it is a ReLU, not a Linear or Conv2d layer; prunable layers: ['0', '2']")):
        R.remove_units(net, "1", [0])
    grouped = nn.Sequential(nn.Conv2d(2, 4, 1, groups=2), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match=whole("layer '0' is a grouped convolution; only groups=1 can be pruned")):
        R.remove_units(grouped, "0", [0])
    nxt = nn.Sequential(nn.Conv2d(2, 4, 1), nn.Conv2d(4, 4, 1, groups=2), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match=whole(
            "the layer after '0' is a grouped convolution; it cannot lose inputs")):
        R.remove_units(nxt, "0", [0])
    # a unit-mixing module right after the layer (the first module in between) is refused
    mixing = nn.Sequential(nn.Linear(4, 5), nn.Softmax(dim=1), nn.Linear(5, 2))
    with pytest.raises(ValueError, match=whole(
            "'1' (Softmax) between '0' and '2' mixes units, so a unit cannot be removed cleanly; supported in "
            "between: " + PER_CHANNEL_NAMES)):
        R.remove_units(mixing, "0", [0])
    odd = nn.Sequential(nn.Conv2d(1, 3, 1), nn.Flatten(), nn.Linear(10, 2))
    with pytest.raises(ValueError, match=whole("'2' takes 10 inputs, not a multiple of the 3 units of '0'")):
        R.remove_units(odd, "0", [0])


def test_adjacent_layers_and_nested_containers_are_cut_in_the_right_place():
    # no module between two Linear layers: the next layer is the one right after
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3), nn.Linear(3, 2)).double()
    out = R.remove_units(net, "0", [2])
    assert out[0].weight.shape == (4, 4) and out[1].weight.shape == (3, 4) and out[2].weight.shape == (2, 3)
    # nested Sequentials: the pruned layers are replaced inside their container (names with dots)
    nested = nn.Sequential(nn.Sequential(nn.Linear(4, 5), nn.ReLU()), nn.Sequential(nn.Linear(5, 2))).double()
    out = R.remove_units(nested, "0.0", [0, 4])
    assert out[0][0].weight.shape == (3, 4) and out[1][0].weight.shape == (2, 3)
    assert torch.equal(out[1][0].weight, nested[1][0].weight[:, 1:4])
    assert sorted(n for n, _ in out.named_children()) == ["0", "1"]
    x = torch.randn(3, 4, dtype=torch.float64)
    assert out(x).shape == (3, 2)


def test_fast_curve_masks_conv_channels_like_deleting_them():
    # conv -> ReLU -> conv: the fast route masks 4-D activations (B, C, H, W); the naive route deletes the
    # channels (remove_units) and runs a full pass per count. Accuracies are counts of equal argmaxes.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.Flatten(),
                        nn.Linear(3 * 3 * 3, 3)).double()
    split = _split((1, 5, 5), n=40, classes=3)
    split = Split(split.x, net(split.x).argmax(1))  # accuracy 1 at n = 0
    fast = R.pruning_curve(net, "0", "magnitude", split, counts=[0, 1, 2, 3])
    naive = R.pruning_curve(net, "0", "magnitude", split, counts=[0, 1, 2, 3], method="naive")
    np.testing.assert_array_equal(fast.accuracy.to_numpy(), naive.accuracy.to_numpy())
    assert fast.accuracy.iloc[0] == 1.0 and fast.accuracy.iloc[3] < 1.0


def test_fp_and_graph_work_in_float64_for_float32_input():
    # float32 rows: the frame potential from their exact float64 values (numpy), to 1e-12; a float32
    # computation errs by ~1e-7 relative
    W = torch.randn(20, 10, generator=torch.Generator().manual_seed(3))
    A = W.double().numpy()
    An = A / np.linalg.norm(A, axis=1, keepdims=True)
    assert R.frame_potential(W) == pytest.approx(float(((An @ An.T) ** 2).sum()), rel=1e-13)
    with pytest.raises(ValueError, match=whole("W must be a 2-D matrix; got shape (3,)")):
        R.frame_potential(torch.ones(3))


def test_removal_order_defaults_and_stable_ties():
    W = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    assert R.removal_order(W).tolist() == [1, 2, 0]  # default criterion: magnitude, smallest first
    ref = torch.randperm(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(R.removal_order(W, "random"), ref)  # default seed 0
    with pytest.raises(TypeError, match=whole("seed must be an integer; got 'a' (str)")):
        R.removal_order(W, "random", seed="a")
    # ties go to the lower index, in both directions: 64 rows with norms 1 and 2 interleaved
    norms = torch.tensor([1.0, 2.0] * 32, dtype=torch.float64)
    T = torch.diag(norms)
    idx = np.arange(64)
    assert R.removal_order(T, remove="smallest").tolist() == list(idx[0::2]) + list(idx[1::2])
    assert R.removal_order(T, remove="largest").tolist() == list(idx[1::2]) + list(idx[0::2])


def test_prune_units_passes_criterion_remove_and_seed_on():
    net = _mlp()
    W = net[0].weight.detach()
    kept = lambda out: [next(i for i in range(5) if torch.equal(out[0].weight[r], W[i])) for r in range(len(out[0].weight))]  # noqa: E731
    # random, default seed 0 and seed 3: the rows kept are those after the permutation's first 2
    for seed, kw in ((0, {}), (3, {"seed": 3})):
        perm = torch.randperm(5, generator=torch.Generator().manual_seed(seed)).tolist()
        assert kept(R.prune_units(net, "0", "random", 2, **kw)) == sorted(perm[2:])
        assert kept(R.prune_units(net, "0", "random", 1, **kw)) == sorted(perm[1:])  # seeds 0, 1 differ here
    norms = W.norm(dim=1).numpy()
    assert kept(R.prune_units(net, "0", "magnitude", 2, remove="largest")) == sorted(np.argsort(norms)[:3].tolist())
    # frame potential: the first row removed is the one with the smallest contribution (not the smallest norm)
    Wn = W / W.norm(dim=1, keepdim=True)
    c = ((Wn @ Wn.T) ** 2).sum(1)
    first = int(torch.argmin(c))
    assert kept(R.prune_units(net, "0", "frame_potential", 1)) == [i for i in range(5) if i != first]
    assert first != int(np.argmin(norms))  # the two criteria differ on this layer


def test_residual_curve_checks_and_precision():
    with pytest.raises(ValueError, match=whole("singular_values must be non-negative")):
        R.residual_curve([1.0, -0.5])
    with pytest.raises(ValueError, match=whole("singular_values must be a 1-D array; got shape (2, 2)")):
        R.residual_curve(torch.ones(2, 2))
    # float32 input, computed in float64: r(1) = sqrt(s2^2 + s3^2) / ||s|| from the float32 values
    s = torch.tensor([1.0, 3e-4, 4e-4], dtype=torch.float32)
    v = s.double().numpy()
    r = R.residual_curve(s)
    assert r.dtype == np.float64
    assert r[1] == pytest.approx(math.hypot(v[1], v[2]) / math.sqrt((v**2).sum()), rel=1e-12)


def _kneedle(s):
    """The elbow by a second, plain numpy route (np.sort / np.cumsum; kneedle as in the docstring)."""
    s2 = np.sort(np.asarray(s, float))[::-1] ** 2
    r = np.sqrt(np.cumsum(s2[::-1])[::-1] / s2.sum())  # r(k-1) at index k-1, r(0) = 1
    M = len(s2)
    y = np.append(r, 0.0)[1:M]
    x = (np.arange(1, M) - 1) / (M - 2)
    return 1 + int(np.argmax((1 - x) - (y - y[-1]) / (y[0] - y[-1])))


def test_elbow_by_hand_and_by_a_second_route():
    # s = 8, 4, 2, 1, 1/2, 1/4: s^2 sum 85.3125; r(1..5) = sqrt(21.3125, 5.3125, 1.3125, 0.3125, 0.0625 / 85.3125)
    # = 0.4998, 0.2495, 0.1240, 0.0605, 0.0271; x = 0, 1/4, 1/2, 3/4, 1;
    # gap = (1 - x) - (y - y5)/(y1 - y5) = 0, 0.2794, 0.2949, 0.1792, 0: the elbow at k = 3
    s = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]
    assert R.elbow(s) == 3 == _kneedle(s)
    s = [9.0, 5.0, 4.0, 3.0, 2.5, 2.0, 1.8, 1.0]
    assert R.elbow(s) == _kneedle(s) == 3
    # a flat tail (r(1) = r(M-1) = 0): span 0, rank 1
    assert R.elbow([1.0, 0.0, 0.0, 0.0]) == 1


def test_low_rank_and_subspace_messages_and_dtypes():
    with pytest.raises(ValueError, match=whole("W must be a 2-D matrix; got shape (3,)")):
        R.low_rank(torch.ones(3), 1)
    with pytest.raises(ValueError, match=whole("k must lie in [0, 2]; got 3 (W of shape (3, 2) has 2 singular values)")):
        R.low_rank(torch.ones(3, 2), 3)
    W = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float32)
    Wk = R.low_rank(W, 1)
    assert Wk.dtype == torch.float32
    torch.testing.assert_close(Wk, torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=whole("W must be a 2-D matrix; got shape (3,)")):
        R.subspace_mass(torch.ones(3), 1)
    # sum_i p_i = r to float64 rounding for float32 input (a float32 U errs by ~1e-7)
    X = torch.randn(30, 12, generator=torch.Generator().manual_seed(4))
    p = R.subspace_mass(X, 5)
    assert p.dtype == torch.float64 and float(p.sum()) == pytest.approx(5.0, abs=1e-12)


def test_overlap_by_hand_on_a_diagonal_matrix():
    # W = diag(3, 2, 1): U = I (up to sign), the top-2 subspace is e0, e1: masses p = 1, 1, 0
    W = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    assert R.outlier_overlap(W, [0], 2) == pytest.approx(0.5, abs=1e-12)
    assert R.outlier_overlap(W, [], 2) == 0.0
    assert R.outlier_overlap(W, [2], 2) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=whole("kept unit indices must lie in [0, 2]")):
        R.outlier_overlap(W, [3], 2)
    with pytest.raises(ValueError, match=whole("kept unit indices must lie in [0, 2]")):
        R.outlier_overlap(W, [-1], 2)
    # order 2, 0, 1 (floats allowed, as whole numbers): kept after each removal 1 | 0, 1 | 2, 0, 1
    np.testing.assert_allclose(R.overlap_curve(W, [2.0, 0.0, 1.0], 2), [0.5, 1.0, 1.0], atol=1e-12)
    with pytest.raises(ValueError, match=whole("order must be a permutation of the 3 units")):
        R.overlap_curve(W, [0, 0, 1], 2)


def test_unit_graph_messages_and_the_clamped_cosine():
    with pytest.raises(ValueError, match=whole(
            "sigma must lie in (0.0, inf); got 0.0 (the width of the Gaussian in exp(-(1 - cos)/sigma^2) "
            "must be positive)")):
        R.unit_graph(torch.eye(2), sigma=0.0)
    with pytest.raises(ValueError, match=whole(
            "threshold must lie in [0.0, 1.0]; got 1.5 (edge weights exp(-(1 - cos)/sigma^2) lie in (0, 1])")):
        R.unit_graph(torch.eye(2), threshold=1.5)
    # rows v, 3v, -7v: in float64 their normalized dot products come out as +-1.0000000000000002;
    # clamped to [-1, 1], the parallel pair weighs exactly 1 and the opposite pairs exactly exp(-8)
    v = torch.tensor([-1.009618183538736, -0.20917557487171307, -0.15922500991447772], dtype=torch.float64)
    G = R.unit_graph(torch.stack([v, 3 * v, -7 * v]), threshold=0.0)
    assert G.graph["cos_cutoff"] == -math.inf
    assert sorted(G.edges()) == [(0, 1), (0, 2), (1, 2)]  # threshold 0 keeps every edge
    assert G[0][1]["weight"] == 1.0
    e8 = float(torch.exp(torch.tensor(-8.0, dtype=torch.float64)))
    assert G[0][2]["weight"] == e8 and G[1][2]["weight"] == e8
    # rows u, -9.78 u: their cosine comes out as -1.0000000000000004, 2 ulps below -1 (one ulp is lost in
    # 1 - cos); clamped, the weight is exactly exp(-8)
    u = torch.tensor([0.9923992315493617, -2.2019845436683654, -0.723615574607039, 1.068257455931333],
                     dtype=torch.float64)
    G = R.unit_graph(torch.stack([u, -9.777552940189594 * u]), threshold=0.0)
    assert G[0][1]["weight"] == e8


def test_graph_summary_by_hand():
    import networkx as nx

    G = nx.Graph()
    G.add_nodes_from(range(6))
    G.add_edges_from([(0, 1), (1, 2), (3, 4)])  # components {0,1,2}, {3,4}, {5}
    assert R.graph_summary(G) == dict(units=6, edges=3, components=3, largest=3, largest_share=0.5,
                                      isolated=1, density=3 / 15)
    assert R.graph_summary(nx.Graph()) == dict(units=0, edges=0, components=0, largest=0, largest_share=0.0,
                                               isolated=0, density=0.0)
    two = nx.Graph([(0, 1)])
    assert R.graph_summary(two) == dict(units=2, edges=1, components=1, largest=2, largest_share=1.0,
                                        isolated=0, density=1.0)
    one = nx.Graph()
    one.add_node(0)
    assert R.graph_summary(one) == dict(units=1, edges=0, components=1, largest=1, largest_share=1.0,
                                        isolated=1, density=0.0)


def _path_graph():
    import networkx as nx

    G = nx.Graph()
    G.add_nodes_from((i, {"norm": float(i + 1)}) for i in range(4))
    G.add_weighted_edges_from([(0, 1, 1.0), (1, 2, 0.5), (2, 3, 1.0)])
    return G


def test_force_layout_is_networkx_with_the_documented_settings(monkeypatch):
    import networkx as nx

    G = _path_graph()
    ref = nx.forceatlas2_layout(G, max_iter=200, gravity=1.0, weight="weight", seed=0)
    pos = R.force_layout(G)
    assert all(pos[n].dtype == np.float64 and np.array_equal(pos[n], ref[n]) for n in G)
    ref5 = nx.forceatlas2_layout(G, max_iter=200, gravity=1.0, weight="weight", seed=5)
    assert all(np.array_equal(R.force_layout(G, seed=5)[n], ref5[n]) for n in G)
    with pytest.raises(TypeError, match=whole("seed must be an integer; got 'a' (str)")):
        R.force_layout(G, seed="a")
    monkeypatch.delattr(nx, "forceatlas2_layout")
    ref = nx.spring_layout(G, weight="weight", seed=2, iterations=200)
    pos = R.force_layout(G, seed=2)
    assert all(np.array_equal(pos[n], ref[n]) for n in G)


def test_drawing_uses_the_given_axes_positions_colour_and_alpha():
    G = _path_graph()
    fig, (ax, other) = plt.subplots(1, 2)
    try:
        plt.sca(other)  # the current axes is not the one passed
        pos = {i: np.array([float(i), 0.0]) for i in range(4)}
        got = R.draw_unit_graph(G, ax, pos=pos, color="red")
        assert got is pos and not other.collections
        nodes = [c for c in ax.collections if isinstance(c, PathCollection)][0]
        edges = [c for c in ax.collections if isinstance(c, LineCollection)][0]
        assert np.array_equal(np.unique(nodes.get_facecolor()[:, :3], axis=0), [[1.0, 0.0, 0.0]])
        assert nodes.get_alpha() == 0.8
        assert np.allclose(edges.get_edgecolor()[:, :3], 0.25) and len(edges.get_edgecolor()) == 3
        # default size_scale 40: areas 40 * norm / mean norm (2.5)
        np.testing.assert_allclose(nodes.get_sizes(), 40.0 * np.array([1, 2, 3, 4]) / 2.5, rtol=1e-12)
        np.testing.assert_array_equal(nodes.get_offsets(), np.array([[0, 0], [1, 0], [2, 0], [3, 0]]))
        # no axes and no positions: the current axes, the force layout with seed 0 (default) or the seed given
        plt.sca(other)
        got = R.draw_unit_graph(G)
        assert other.collections and not other.axison
        ref = R.force_layout(G, seed=0)
        assert all(np.array_equal(got[n], ref[n]) for n in G)
        got = R.draw_unit_graph(G, other, seed=4)
        ref = R.force_layout(G, seed=4)
        assert all(np.array_equal(got[n], ref[n]) for n in G)
        assert not all(np.array_equal(got[n], R.force_layout(G, seed=0)[n]) for n in G)
    finally:
        plt.close(fig)


def test_criterion_and_remove_messages_name_the_argument():
    with pytest.raises(ValueError, match=whole(
            "criterion must be one of ['magnitude', 'frame_potential', 'random', 'max_mag_pruning', "
            "'min_mag_pruning', 'max_fp_pruning', 'min_fp_pruning', 'random_pruning']; got 'norm'")):
        R.removal_order(torch.eye(2), "norm")
    with pytest.raises(ValueError, match=whole("remove must be one of ['smallest', 'largest']; got 'big'")):
        R.removal_order(torch.eye(2), "magnitude", remove="big")


def test_elbow_of_a_flat_tail_divides_by_nothing():
    # r(1) = r(M-1) = 0: the rule has no span to scale by; rank 1 without a 0/0 (no RuntimeWarning)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert R.elbow([2.0, 0.0, 0.0, 0.0, 0.0]) == 1


def test_drawing_clips_edge_opacity_to_the_unit_interval():
    # a graph built elsewhere may carry weights outside (0, 1]: opacity 0.3 + 0.7 w is clipped to [0, 1]
    import networkx as nx

    G = nx.Graph()
    G.add_nodes_from((i, {"norm": 1.0}) for i in range(3))
    G.add_weighted_edges_from([(0, 1, 2.0), (1, 2, -1.0)])
    fig, ax = plt.subplots()
    try:
        R.draw_unit_graph(G, ax, pos={i: np.array([float(i), 0.0]) for i in range(3)})
        edges = [c for c in ax.collections if isinstance(c, LineCollection)][0]
        np.testing.assert_allclose(edges.get_edgecolor()[:, 3], [1.0, 0.0])
    finally:
        plt.close(fig)
