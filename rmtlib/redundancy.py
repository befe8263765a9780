"""Sources of redundancy: pruning units without retraining, low-rank layers, weight-vector graphs.

METHODS §9 (Heitmann's study). A layer's units are the rows w_i of its weight matrix W
(m x n: a dense layer's output neurons, a convolution's filters flattened as in METHODS §1).

- Structured pruning: remove p units one at a time, each time the unit with the smallest
  (or largest) score among the units still there, then update the scores. Scores:
  magnitude ||w_i||; contribution to the frame potential of the normalized rows,
  c_i = sum_{j alive} <w^_i, w^_j>^2 (FP = sum_ij <w^_i, w^_j>^2 = ||W^ W^T||_F^2); or random.
  Removing a unit deletes its row (and bias, and BatchNorm entries) and the matching
  input columns of the next layer, so the network stays valid.
- Pruning curves are evaluated in one pass: the network up to the next layer runs once and
  the nested masks of all counts go through the rest as one batch.
- Rank-k approximation W_k (Eckart-Young), the elbow of the residual curve, and the
  accuracy after replacing W by W_k.
- The weight-vector graph: units as nodes (size = norm), edges exp(-(1 - cos_ij) / sigma^2)
  kept above a threshold, drawn with a force layout.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import spectra
from .data import Split
from .devices import resolve_device
from .validation import as_matrix, as_vector, check_choice, check_float, check_int

CRITERIA = ("magnitude", "frame_potential", "random")
REMOVE = ("smallest", "largest")
# The study's labels (Heitmann Fig. 2) name what happens to the *pruned* matrix:
# max_mag_pruning keeps the norm as large as possible, i.e. removes the smallest rows.
STUDY_LABELS = {
    "max_mag_pruning": ("magnitude", "smallest"),
    "min_mag_pruning": ("magnitude", "largest"),
    "max_fp_pruning": ("frame_potential", "smallest"),
    "min_fp_pruning": ("frame_potential", "largest"),
    "random_pruning": ("random", "smallest"),
}
PRUNABLE = (nn.Linear, nn.Conv2d)
# Modules that act on each channel (or feature) separately: a unit removed before them
# can be removed after them.
PER_CHANNEL = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
               nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
               nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten,
               nn.BatchNorm1d, nn.BatchNorm2d)


# --------------------------------------------------------------------------- scores and orders
def _unit_rows(W) -> torch.Tensor:
    return as_matrix(W, "W", dtype=torch.float64)


def _normalized_rows(W: torch.Tensor) -> torch.Tensor:
    """Rows divided by their norms; a zero row stays zero (it has no direction)."""
    norms = torch.linalg.vector_norm(W, dim=1, keepdim=True)
    return torch.where(norms > 0, W / norms.clamp_min(torch.finfo(W.dtype).tiny), torch.zeros_like(W))


def fp_contributions(W) -> torch.Tensor:
    """Contribution of each row to the frame potential: c_i = sum_j <w^_i, w^_j>^2 (METHODS §9).

    The sum runs over all rows j, the row itself included (a term 1), as in the study;
    sum_i c_i = FP. Rows are normalized first, so only angles matter.
    """
    Wn = _normalized_rows(_unit_rows(W))
    return ((Wn @ Wn.T) ** 2).sum(dim=1)


def frame_potential(W) -> float:
    """Frame potential of the normalized rows: FP = sum_ij <w^_i, w^_j>^2 = ||W^ W^T||_F^2.

    For m unit rows in n dimensions, FP >= max(m, m^2 / n) (equality: orthonormal rows when
    m <= n, a tight frame otherwise) and FP <= m^2 (all rows on one line). A zero row has no
    direction and adds nothing.
    """
    return float(fp_contributions(W).sum())


def _parse_criterion(criterion, remove):
    if isinstance(criterion, str) and criterion in STUDY_LABELS:
        return STUDY_LABELS[criterion]
    criterion = check_choice(criterion, "criterion", CRITERIA + tuple(STUDY_LABELS))
    return criterion, check_choice(remove, "remove", REMOVE)


def removal_order(W, criterion: str = "magnitude", *, remove: str = "smallest",
                  seed: int = 0) -> torch.Tensor:
    """The order in which greedy pruning removes the rows of W (METHODS §9).

    At each step the unit with the smallest (`remove="smallest"`) or largest score among
    those still present is removed, and the scores are updated:
    - "magnitude": score ||w_i|| (removing a row leaves the other norms unchanged, so the
      greedy order is the sorted order);
    - "frame_potential": score c_i = sum_{j alive} <w^_i, w^_j>^2; removing unit k
      subtracts <w^_i, w^_k>^2 from every c_i. Removing the smallest contributor leaves the
      largest frame potential behind (FP' = FP - 2 c_k + 1): the study's max_fp_pruning;
    - "random": a seeded random permutation.
    `criterion` may also be one of the study's labels (`STUDY_LABELS`). Ties go to the
    lower index. Returns a LongTensor with all m row indices, first removed first.
    """
    criterion, remove = _parse_criterion(criterion, remove)
    W = _unit_rows(W)
    m = W.shape[0]
    if criterion == "random":
        gen = torch.Generator().manual_seed(check_int(seed, "seed"))
        return torch.randperm(m, generator=gen)
    if criterion == "magnitude":
        norms = torch.linalg.vector_norm(W, dim=1)
        return torch.sort(norms, descending=remove == "largest", stable=True).indices
    Wn = _normalized_rows(W)
    G2 = (Wn @ Wn.T) ** 2
    c = G2.sum(dim=1)
    alive = torch.ones(m, dtype=torch.bool)
    fill = math.inf if remove == "smallest" else -math.inf
    order = torch.empty(m, dtype=torch.long)
    for step in range(m):
        score = torch.where(alive, c, torch.full_like(c, fill))
        k = int(torch.argmin(score) if remove == "smallest" else torch.argmax(score))
        order[step] = k
        alive[k] = False
        c = c - G2[:, k]
    return order


# --------------------------------------------------------------------------- network surgery
def _leaves(model: nn.Module):
    """[(name, module)] of the leaf modules in execution order (nested nn.Sequential only)."""
    for name, module in model.named_modules():
        if list(module.children()) and not isinstance(module, nn.Sequential):
            raise TypeError(f"pruning needs a model built from nn.Sequential containers (so that the "
                            f"order of modules is the order of execution); {name or 'the model'} is a "
                            f"{type(module).__name__}")
    return [(n, m) for n, m in model.named_modules() if not list(m.children())]


def prunable_layers(model: nn.Module) -> list[str]:
    """Names of the layers whose units can be pruned: every Linear/Conv2d except the output layer."""
    names = [n for n, m in _leaves(model) if isinstance(m, PRUNABLE)]
    return names[:-1]


def _plan(model: nn.Module, layer: str):
    """(leaves, index of the layer, index of the next Linear/Conv2d) for a prunable layer."""
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str); got {type(layer).__name__}")
    leaves = _leaves(model)
    names = [n for n, _ in leaves]
    valid = prunable_layers(model)
    if layer not in valid:
        prunables = [n for n, m in leaves if isinstance(m, PRUNABLE)]
        if prunables and layer == prunables[-1]:
            why = "is the output layer (its units are the classes)"
        elif layer in names:
            why = f"is a {type(dict(leaves)[layer]).__name__}, not a Linear or Conv2d layer"
        else:
            why = "does not exist"
        raise ValueError(f"layer {layer!r} cannot be pruned: it {why}; prunable layers: {valid}")
    i = names.index(layer)
    j = next(k for k in range(i + 1, len(leaves)) if isinstance(leaves[k][1], PRUNABLE))
    mod, nxt = leaves[i][1], leaves[j][1]
    if isinstance(mod, nn.Conv2d) and mod.groups != 1:
        raise ValueError(f"layer {layer!r} is a grouped convolution; only groups=1 can be pruned")
    if isinstance(nxt, nn.Conv2d) and nxt.groups != 1:
        raise ValueError(f"the layer after {layer!r} is a grouped convolution; it cannot lose inputs")
    for name, m in leaves[i + 1 : j]:
        if not isinstance(m, PER_CHANNEL):
            raise ValueError(f"{name!r} ({type(m).__name__}) between {layer!r} and {names[j]!r} mixes "
                             "units, so a unit cannot be removed cleanly; supported in between: "
                             f"{sorted({t.__name__ for t in PER_CHANNEL})}")
    units = mod.weight.shape[0]
    fan = nxt.in_features if isinstance(nxt, nn.Linear) else nxt.in_channels
    if fan % units:
        raise ValueError(f"{names[j]!r} takes {fan} inputs, not a multiple of the {units} units of {layer!r}")
    return leaves, i, j


def _units_of(model: nn.Module, layer: str) -> int:
    leaves, i, _ = _plan(model, layer)
    return int(leaves[i][1].weight.shape[0])


def _check_units(units, m: int, layer: str) -> torch.Tensor:
    idx = torch.as_tensor(units, dtype=torch.long).reshape(-1) if not isinstance(units, torch.Tensor) \
        else units.detach().to(torch.long).reshape(-1).cpu()
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= m):
        raise ValueError(f"unit indices must lie in [0, {m - 1}] ({layer!r} has {m} units); got {idx.tolist()}")
    if len(torch.unique(idx)) != len(idx):
        raise ValueError("unit indices must be distinct")
    if len(idx) >= m:
        raise ValueError(f"cannot remove all {m} units of {layer!r}; remove at most {m - 1}")
    return idx


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@torch.no_grad()
def remove_units(model: nn.Module, layer: str, units) -> nn.Module:
    """A copy of `model` with the given units of `layer` removed by slicing the weights.

    The layer loses its rows (filters) and biases, a BatchNorm in between loses the
    units' entries, and the next Linear/Conv2d loses the matching inputs (for a Flatten
    in between, the block of columns of each removed channel). The input model is
    unchanged.
    """
    leaves, i, j = _plan(model, layer)
    m = int(leaves[i][1].weight.shape[0])
    drop = _check_units(units, m, layer)
    keep = torch.ones(m, dtype=torch.bool)
    keep[drop] = False
    kept = torch.nonzero(keep).reshape(-1)
    out = copy.deepcopy(model)
    leaves_out = dict(_leaves(out))
    name_i, name_j = leaves[i][0], leaves[j][0]
    old, nxt = leaves_out[name_i], leaves_out[name_j]
    dev = old.weight.device
    kept_d = kept.to(dev)
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, len(kept), bias=old.bias is not None)
    else:
        new = nn.Conv2d(old.in_channels, len(kept), old.kernel_size, old.stride, old.padding,
                        old.dilation, 1, old.bias is not None, old.padding_mode)
    new = new.to(dev, old.weight.dtype)
    new.weight.copy_(old.weight[kept_d])
    if old.bias is not None:
        new.bias.copy_(old.bias[kept_d])
    for attr in ("l2",):
        if hasattr(old, attr):
            setattr(new, attr, getattr(old, attr))
    _set(out, name_i, new)
    for name, mod in leaves[i + 1 : j]:
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            bn = leaves_out[name]
            nb = type(bn)(len(kept), bn.eps, bn.momentum, bn.affine, bn.track_running_stats).to(dev, old.weight.dtype)
            if bn.affine:
                nb.weight.copy_(bn.weight[kept_d])
                nb.bias.copy_(bn.bias[kept_d])
            if bn.track_running_stats:
                nb.running_mean.copy_(bn.running_mean[kept_d])
                nb.running_var.copy_(bn.running_var[kept_d])
                nb.num_batches_tracked.copy_(bn.num_batches_tracked)
            nb.train(bn.training)
            _set(out, name, nb)
    fan = nxt.in_features if isinstance(nxt, nn.Linear) else nxt.in_channels
    block = fan // m  # inputs of the next layer per unit (H*W after a Flatten, else 1)
    cols = (kept[:, None] * block + torch.arange(block)[None, :]).reshape(-1).to(dev)
    if isinstance(nxt, nn.Linear):
        nn_ = nn.Linear(len(cols), nxt.out_features, bias=nxt.bias is not None)
        nn_ = nn_.to(dev, nxt.weight.dtype)
        nn_.weight.copy_(nxt.weight[:, cols])
    else:
        nn_ = nn.Conv2d(len(kept), nxt.out_channels, nxt.kernel_size, nxt.stride, nxt.padding,
                        nxt.dilation, 1, nxt.bias is not None, nxt.padding_mode).to(dev, nxt.weight.dtype)
        nn_.weight.copy_(nxt.weight[:, cols])
    if nxt.bias is not None:
        nn_.bias.copy_(nxt.bias)
    for attr in ("l2",):
        if hasattr(nxt, attr):
            setattr(nn_, attr, getattr(nxt, attr))
    _set(out, name_j, nn_)
    out.train(model.training)
    return out


def prune_units(model: nn.Module, layer: str, criterion: str, n: int, *, remove: str = "smallest",
                seed: int = 0) -> nn.Module:
    """A copy of `model` with n units of `layer` removed greedily by `criterion` (METHODS §9).

    criterion: "magnitude" | "frame_potential" | "random" with `remove` "smallest" or
    "largest" (the score removed first), or one of the study's labels (`STUDY_LABELS`:
    "max_mag_pruning" removes the smallest norms, ...). No retraining. n must lie in
    [0, m - 1] for a layer of m units.
    """
    m = _units_of(model, layer)
    n = check_int(n, "n", min=0, max=m - 1, why=f"layer {layer!r} has {m} units; at least one must stay")
    W = spectra.weight_matrix(spectra.get_layer(model, layer))
    order = removal_order(W, criterion, remove=remove, seed=seed)
    return remove_units(model, layer, order[:n])


# --------------------------------------------------------------------------- pruning curves
def _run(modules, h):
    for _, m in modules:
        h = m(h)
    return h


def _masked(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """h (B, m*r) or (B, m, ...) times the keep masks (G, m) -> (G*B, ...)."""
    G, m = keep.shape
    B = h.shape[0]
    if h.ndim == 2:
        k = keep.repeat_interleave(h.shape[1] // m, dim=1)[:, None, :]
    else:
        k = keep.reshape(G, 1, m, *([1] * (h.ndim - 2)))
    return (h[None] * k.to(h.dtype)).reshape(G * B, *h.shape[1:])


def _check_counts(counts, m):
    if counts is None:
        return list(range(m + 1))
    c = [check_int(v, "counts", min=0, max=m, why=f"the layer has {m} units") for v in counts]
    if not c:
        raise ValueError(f"counts must list at least one number of units to remove in [0, {m}]")
    return c


@torch.no_grad()
def pruning_curve(model: nn.Module, layer: str, criterion: str, split: Split, *, remove: str = "smallest",
                  counts=None, seed: int = 0, method: str = "fast", batch_size: int = 1000,
                  device=None) -> pd.DataFrame:
    """Accuracy on `split` after removing 0, 1, ..., m units of `layer` greedily (METHODS §9).

    The removal order comes from `removal_order` on the layer's weight matrix; the count n
    removes its first n units. method="fast": the network up to the next Linear/Conv2d runs
    once per batch of images, and the inputs of the next layer, multiplied by the nested
    keep-masks of all counts, go through the rest of the network as one batch (a removed
    unit contributes exactly nothing downstream, which is what deleting it does).
    method="naive": a pruned copy (`remove_units`) and a full forward pass per count (the
    reference; it cannot remove all m units). Returns a DataFrame with columns removed,
    kept, accuracy; `attrs["order"]` holds the removal order.
    """
    if not isinstance(split, Split):
        raise TypeError(f"split must be an rmtlib.data.Split (e.g. data.test); got {type(split).__name__}")
    method = check_choice(method, "method", ("fast", "naive"))
    leaves, i, j = _plan(model, layer)
    m = int(leaves[i][1].weight.shape[0])
    counts = _check_counts(counts, m)
    if method == "naive" and max(counts) >= m:
        raise ValueError(f"method='naive' builds pruned copies, which keep at least one unit: counts must "
                         f"lie in [0, {m - 1}]")
    batch_size = check_int(batch_size, "batch_size", min=1)
    order = removal_order(spectra.weight_matrix(leaves[i][1]), criterion, remove=remove, seed=seed)
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model = model.to(dev).eval()
    correct = torch.zeros(len(counts), dtype=torch.long)
    if method == "naive":
        from .train import evaluate  # one evaluation routine for the whole library

        for g, n in enumerate(counts):
            pruned = remove_units(model, layer, order[:n]).eval()
            correct[g] = round(evaluate(pruned, split, batch_size=batch_size)[0] * len(split))
    else:
        rank = torch.empty(m, dtype=torch.long)
        rank[order] = torch.arange(m)
        keep_all = rank[None, :] >= torch.as_tensor(counts)[:, None]  # (C, m): unit kept at count n
        keep_all = keep_all.to(dev)
        prefix, suffix = leaves[:j], leaves[j:]
        x1 = split.x[:1].to(dev)
        h1 = _run(prefix, x1)
        widest = max(int(np.prod(h1.shape[1:])), *[int(np.prod(o.shape[1:])) for o in _widths(suffix, h1)])
        group = max(1, min(len(counts), int(2e7 // (batch_size * widest))))
        for s in range(0, len(split), batch_size):
            xb, yb = split.x[s : s + batch_size].to(dev), split.y[s : s + batch_size].to(dev)
            h = _run(prefix, xb)
            for g0 in range(0, len(counts), group):
                keep = keep_all[g0 : g0 + group]
                out = _run(suffix, _masked(h, keep)).reshape(len(keep), len(yb), -1)
                correct[g0 : g0 + len(keep)] += (out.argmax(-1) == yb[None]).sum(1).cpu()
    model.train(was_training)
    df = pd.DataFrame({"removed": counts, "kept": [m - n for n in counts],
                       "accuracy": (correct.double() / len(split)).numpy()})
    df.attrs["order"] = order.tolist()
    return df


def _widths(modules, h):
    outs = []
    for _, m in modules:
        h = m(h)
        outs.append(h)
    return outs


# --------------------------------------------------------------------------- low rank
def low_rank(W, k: int) -> torch.Tensor:
    """Best rank-k approximation W_k = sum_{i<=k} nu_i u_i v_i^T (Eckart-Young; METHODS §9).

    ||W - W_k||_F^2 = sum_{i>k} nu_i^2 and ||W - W_k||_2 = nu_{k+1}: no matrix of rank k is
    closer in either norm. k in [0, min(n, m)].
    """
    W = as_matrix(W, "W")
    dec = spectra.svd(W)
    k = check_int(k, "k", min=0, max=len(dec.S), why=f"W of shape {tuple(W.shape)} has {len(dec.S)} singular values")
    return ((dec.U[:, :k] * dec.S[:k]) @ dec.Vh[:k]).to(W.dtype)


def residual_curve(singular_values) -> np.ndarray:
    """Relative residual of the rank-k approximation, r(k) = ||W - W_k||_F / ||W||_F, k = 0..M.

    By Eckart-Young r(k)^2 = sum_{i>k} nu_i^2 / sum_i nu_i^2.
    """
    s = as_vector(singular_values, "singular_values", dtype=torch.float64)
    if bool((s < 0).any()):
        raise ValueError("singular_values must be non-negative")
    s2 = torch.sort(s, descending=True).values ** 2
    total = float(s2.sum())
    if total == 0:
        raise ValueError("singular_values are all zero: a zero matrix has no residual curve")
    tail = torch.cat([torch.flip(torch.cumsum(torch.flip(s2, [0]), 0), [0]), torch.zeros(1, dtype=s2.dtype)])
    return torch.sqrt(tail.clamp_min(0) / total).numpy()


def elbow(singular_values) -> int:
    """Elbow rank of the residual curve r(k) = ||W - W_k||_F / ||W||_F for 1 <= k < M.

    The rule (kneedle, Satopaa et al. 2011): scale k and r(k) on k = 1..M-1 to [0, 1] and
    take the k farthest below the straight line joining the two ends, i.e. the k that
    maximises (1 - x_k) - y_k with x_k = (k - 1)/(M - 2), y_k = (r(k) - r(M-1)) / (r(1) - r(M-1)).
    Ties go to the smaller k. Needs M >= 3 singular values.
    """
    s = as_vector(singular_values, "singular_values", dtype=torch.float64, min_size=3,
                  why="an elbow needs a curve of at least two ranks 1 <= k < M")
    r = residual_curve(s)
    M = len(s)
    ks = np.arange(1, M)
    y = r[1:M]
    span = y[0] - y[-1]
    if span <= 0:
        return 1
    x = (ks - 1) / (M - 2)
    gap = (1 - x) - (y - y[-1]) / span
    return int(ks[int(np.argmax(gap))])


@torch.no_grad()
def low_rank_table(model: nn.Module, split: Split, *, k: int = 10, layers=None,
                   batch_size: int = 1000, device=None) -> pd.DataFrame:
    """Per layer: the rank-k approximation's kept norm, the accuracy it costs, the elbow rank.

    Heitmann Fig. 8: W is replaced by W_k in one layer at a time (the others untouched).
    Columns: layer, units (rows m), inputs (n), Q = n/m (the study's aspect ratio), k,
    norm_kept = 100 ||W_k||_F / ||W||_F, accuracy, accuracy_k, accuracy_lost (points of
    accuracy, as a fraction), elbow (rank at the elbow of the residual curve), outliers
    (singular values above the fitted MP edge, chapter 2; -1 when the layer is too small to fit),
    mp_bulk_ok (the MP goodness-of-fit verdict on the rest of the spectrum, `MPFit.bulk_ok`: False
    means the outlier count describes no MP bulk; None when there is no fit).
    """
    from . import filtering
    from . import marchenko_pastur as mp

    if not isinstance(split, Split):
        raise TypeError(f"split must be an rmtlib.data.Split (e.g. data.test); got {type(split).__name__}")
    k = check_int(k, "k", min=0)
    names = [n for n, _ in spectra.layers(model)]
    layers = names if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    for name in layers:
        if name not in names:
            raise ValueError(f"layer {name!r} does not exist or is not a Linear/Conv layer; valid: {names}")
    rows = []
    for name in layers:
        W = spectra.weight_matrix(spectra.get_layer(model, name))
        S = spectra.singular_values(W)  # descending
        M = len(S)
        kk = min(k, M)
        sweep = filtering.removal_sweep(model, [name], [0.0, (M - kk) / M], {"test": split}, splits=("test",),
                                        batch_size=batch_size, device=device, progress_bar=False)
        try:
            # warn=False: the goodness of fit is returned in the column mp_bulk_ok instead
            fit = mp.fit(S, tuple(W.shape), warn=False)
            n_out, bulk_ok = fit.n_outliers, fit.bulk_ok
        except (ValueError, RuntimeError):
            n_out, bulk_ok = -1, None
        acc0, acck = float(sweep.test_acc.iloc[0]), float(sweep.test_acc.iloc[1])
        rows.append(dict(layer=name, units=int(W.shape[0]), inputs=int(W.shape[1]),
                         Q=W.shape[1] / W.shape[0], k=kk,
                         norm_kept=100 * float(np.sqrt(np.sum(S[:kk] ** 2) / np.sum(S**2))),
                         accuracy=acc0, accuracy_k=acck, accuracy_lost=acc0 - acck,
                         elbow=elbow(S) if M >= 3 else M, outliers=n_out, mp_bulk_ok=bulk_ok))
    return pd.DataFrame(rows)


def subspace_mass(W, r: int) -> torch.Tensor:
    """Mass of each unit in the top-r left singular subspace: p_i = sum_{a<=r} U_ia^2.

    With W = U diag(nu) V^T (rows are units), sum_i p_i = r, and the squared row norms are
    ||w_i||^2 = sum_a nu_a^2 U_ia^2: a unit's norm is its mass in each direction weighted by
    the squared singular value.
    """
    W = as_matrix(W, "W")
    dec = spectra.svd(W)
    r = check_int(r, "r", min=1, max=len(dec.S), why="r counts top singular vectors")
    return (dec.U[:, :r].to(torch.float64) ** 2).sum(dim=1).cpu()


def outlier_overlap(W, kept, r: int) -> float:
    """Share of the top-r left singular subspace carried by the rows in `kept`:
    sum_{i in kept} p_i / r (see `subspace_mass`); 1 when the kept units carry the whole
    subspace, |kept| / m on average for a random choice."""
    p = subspace_mass(W, r)
    idx = torch.as_tensor(kept, dtype=torch.long).reshape(-1)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(p)):
        raise ValueError(f"kept unit indices must lie in [0, {len(p) - 1}]")
    return float(p[idx].sum() / r)


def overlap_curve(W, order, r: int) -> np.ndarray:
    """`outlier_overlap` of the units kept after each greedy removal.

    `order` is a removal order (first removed first, e.g. from `removal_order`); entry j of
    the result is the share carried by the last j + 1 units of the order (j + 1 units kept).
    """
    p = subspace_mass(W, r)
    order = torch.as_tensor(order, dtype=torch.long).reshape(-1)
    if sorted(order.tolist()) != list(range(len(p))):
        raise ValueError(f"order must be a permutation of the {len(p)} units")
    return (torch.cumsum(p[order.flip(0)], 0) / r).numpy()


# --------------------------------------------------------------------------- weight-vector graph
def unit_graph(W, sigma: float = 0.5, threshold: float = 0.05):
    """The weight-vector graph of a layer (Heitmann §3.2; METHODS §9) as a networkx.Graph.

    Nodes are the units i (attribute "norm" = ||w_i||); the edge (i, j) carries the weight
    exp(-(1 - cos_ij) / sigma^2), cos_ij = <w^_i, w^_j>, and is kept when the weight is at
    least `threshold` in [0, 1], i.e. when cos_ij >= 1 + sigma^2 ln(threshold).
    """
    import networkx as nx

    W = _unit_rows(W)
    sigma = check_float(sigma, "sigma", min=0.0, min_open=True,
                        why="the width of the Gaussian in exp(-(1 - cos)/sigma^2) must be positive")
    threshold = check_float(threshold, "threshold", min=0.0, max=1.0,
                            why="edge weights exp(-(1 - cos)/sigma^2) lie in (0, 1]")
    Wn = _normalized_rows(W)
    cos = (Wn @ Wn.T).clamp(-1, 1)
    weight = torch.exp(-(1 - cos) / sigma**2)
    m = W.shape[0]
    iu = torch.triu_indices(m, m, offset=1)
    w = weight[iu[0], iu[1]]
    keep = w >= threshold
    G = nx.Graph()
    norms = torch.linalg.vector_norm(W, dim=1).tolist()
    G.add_nodes_from((i, {"norm": norms[i]}) for i in range(m))
    G.add_weighted_edges_from(zip(iu[0][keep].tolist(), iu[1][keep].tolist(), w[keep].tolist()))
    G.graph.update(sigma=sigma, threshold=threshold, cos_cutoff=1 + sigma**2 * math.log(threshold)
                   if threshold > 0 else -math.inf)
    return G


def graph_summary(G) -> dict:
    """Numbers that describe a weight-vector graph: edges, components, largest one, isolated units."""
    import networkx as nx

    comps = sorted((len(c) for c in nx.connected_components(G)), reverse=True)
    n = G.number_of_nodes()
    return dict(units=n, edges=G.number_of_edges(), components=len(comps),
                largest=comps[0] if comps else 0, largest_share=(comps[0] / n) if n else 0.0,
                isolated=sum(1 for _, d in G.degree() if d == 0),
                density=nx.density(G) if n > 1 else 0.0)


def force_layout(G, *, seed: int = 0, iterations: int = 200) -> dict:
    """Node positions from a force layout: ForceAtlas2 (repulsion between all nodes, edges as
    springs, a gravity that keeps loose parts in view, as in the study), Fruchterman-Reingold
    when networkx has no ForceAtlas2."""
    import networkx as nx

    seed = check_int(seed, "seed")
    if hasattr(nx, "forceatlas2_layout"):
        pos = nx.forceatlas2_layout(G, max_iter=iterations, gravity=1.0, weight="weight", seed=seed)
    else:  # pragma: no cover - older networkx
        pos = nx.spring_layout(G, weight="weight", seed=seed, iterations=iterations)
    return {n: np.asarray(p, dtype=float) for n, p in pos.items()}


def draw_unit_graph(G, ax=None, *, pos=None, seed: int = 0, color="#1f77b4", size_scale: float = 40.0,
                    norm_ref: float | None = None):
    """Draw a weight-vector graph: node area proportional to the unit's norm divided by
    `norm_ref` (default: this graph's mean norm; pass the initial mean to compare stages),
    edges as dark lines whose opacity grows with their weight. Returns the positions used."""
    import matplotlib.pyplot as plt
    import networkx as nx

    ax = plt.gca() if ax is None else ax
    pos = force_layout(G, seed=seed) if pos is None else pos
    norms = np.array([G.nodes[n]["norm"] for n in G.nodes])
    ref = float(norms.mean()) if norm_ref is None else check_float(norm_ref, "norm_ref", min=0.0, min_open=True)
    weights = np.array([d["weight"] for _, _, d in G.edges(data=True)])
    if len(weights):
        nx.draw_networkx_edges(G, pos, ax=ax, width=0.8, edge_color="0.25",
                               alpha=list(np.clip(0.3 + 0.7 * weights, 0, 1)))
    nx.draw_networkx_nodes(G, pos, ax=ax, node_size=size_scale * norms / ref, node_color=color,
                           alpha=0.8, linewidths=0)
    ax.set_axis_off()
    return pos
