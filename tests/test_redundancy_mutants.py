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
        with pytest.raises(ValueError, match=whole("norm_ref must lie in (0.0, inf]; got 0.0")):
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
