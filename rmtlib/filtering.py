"""Removing and shifting singular values of weight matrices, and the layer-wise noise filter.

METHODS §4 (remove the k smallest singular values; sweeps with one SVD per layer) and
§5 (undo level repulsion: shift outliers back with the inverse of the
Benaych-Georges-Nadakuditi map, in its correct form; rank-preserving shift + removal;
layer-wise optimisation on a validation split).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import marchenko_pastur as mp
from . import spectra
from .data import Dataset, Split
from .devices import resolve_device
from .progress import progress
from .validation import as_array, as_vector, check_choice, check_float, check_int

SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- single matrices
def _check_k(k, M):
    return check_int(k, "k", min=0, max=M, why=f"the number of singular values is {M}")


def _check_sigma_q(sigma, q):
    sigma = check_float(sigma, "sigma", min=0, min_open=True, why="the bulk scale is positive")
    q = check_float(q, "q", min=0, max=1, min_open=True, why="q = M/N, the aspect ratio min/max")
    return sigma, q


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r} ({type(value).__name__})")
    return bool(value)


def remove_smallest(W, k: int) -> torch.Tensor:
    """W with its k smallest singular values set to zero (METHODS §4)."""
    W = spectra.as_tensor(W)
    k = _check_k(k, min(W.shape))
    dec = spectra.svd(W)
    keep = len(dec.S) - k
    out = (dec.U[:, :keep] * dec.S[:keep]) @ dec.Vh[:keep]
    return out.to(W.dtype)


def shift(singular_values, sigma: float, q: float):
    """Undo level repulsion: move singular values above the bulk edge back (METHODS §5).

    For nu / sigma > 1 + sqrt(q):
        theta = sqrt(((nu/sigma)^2 - q - 1 + sqrt(((nu/sigma)^2 - q - 1)^2 - 4 q)) / 2),
        nu0 = sigma * theta,
    the inverse of nu = sqrt((1 + theta^2)(q + theta^2)) / theta (Benaych-Georges &
    Nadakuditi 2012). Values at or below the edge are returned unchanged. The arXiv version
    of Staats et al. prints Eq. (3) without the 1/2 (erratum, see `shift_as_printed`).
    """
    sigma, q = _check_sigma_q(sigma, q)
    nu = as_array(singular_values, "singular_values").cpu().numpy().astype(float)
    x = _ratio(nu, sigma)
    out = nu.copy()
    above = x > 1 + math.sqrt(q)
    # the same formula divided through by x^2 (no overflow of x^2 for huge ratios):
    # theta = x sqrt((1 - b + sqrt((1 - b)^2 - 4 q / x^4)) / 2), b = (q + 1) / x^2
    xa = x[above]
    b = (q + 1) / xa / xa
    c = 4 * q / xa / xa / xa / xa
    theta = xa * np.sqrt((1 - b + np.sqrt(np.clip((1 - b) ** 2 - c, 0, None))) / 2)
    out[above] = sigma * theta
    return out


def _ratio(nu: np.ndarray, sigma: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = nu / sigma
    if not np.all(np.isfinite(x)):
        raise ValueError(f"singular_values / sigma overflows (sigma = {sigma!r}); pass sigma on the "
                         "scale of the singular values")
    if np.any(nu < 0):
        raise ValueError("singular_values must be >= 0")
    return x


def shift_as_printed(singular_values, sigma: float, q: float):
    """Eq. (3) of arXiv:2206.03927 taken literally (no 1/2): moves values *up*. For teaching only."""
    sigma, q = _check_sigma_q(sigma, q)
    nu = as_array(singular_values, "singular_values").cpu().numpy().astype(float)
    x = _ratio(nu, sigma)
    out = nu.copy()
    above = x > 1 + math.sqrt(q)
    xa = x[above]
    b = (q + 1) / xa / xa
    c = 4 * q / xa / xa / xa / xa
    # sqrt(a + sqrt(a^2 - 4q)), a = x^2 - q - 1, written without x^2
    out[above] = sigma * xa * np.sqrt(1 - b + np.sqrt(np.clip((1 - b) ** 2 - c, 0, None)))
    if not np.all(np.isfinite(out)):
        raise ValueError("the printed Eq. (3) overflows for these values; use smaller singular values")
    return out


def spike_position(theta, q: float):
    """Where a signal singular value theta (units of sigma) ends up: sqrt((1+t^2)(q+t^2))/t.

    Below the detection threshold q^(1/4) the spike sinks into the bulk: the value
    returned is then the bulk edge 1 + sqrt(q).
    """
    q = check_float(q, "q", min=0, max=1, min_open=True, why="q = M/N, the aspect ratio min/max")
    t = as_array(theta, "theta").cpu().numpy().astype(float)
    if np.any(t < 0):
        raise ValueError("theta (a signal singular value in units of sigma) must be >= 0")
    out = np.full(t.shape, 1 + math.sqrt(q))
    up = t > q**0.25
    tu = t[up]
    # sqrt((1 + t^2)(q + t^2)) / t = sqrt(t + 1/t) sqrt(t + q/t): no overflow of t^2
    out[up] = np.sqrt(tu + 1 / tu) * np.sqrt(tu + q / tu)
    return out


def filtered_values(S: np.ndarray, k: int, *, shift_values: bool, fit=None, shape=None) -> np.ndarray:
    """Rank-preserving shift + removal on descending singular values (METHODS §5).

    (i) the values keep their rank order; (ii) values above the MP edge are shifted, each
    staying on its own singular vectors; (iii) the k smallest by rank are set to zero.
    """
    S = as_vector(S, "S").cpu().numpy().astype(float)
    k = _check_k(k, len(S))
    shift_values = _check_bool(shift_values, "shift_values")
    if shift_values:
        if fit is None:
            if shape is None:
                raise ValueError("shifting needs an MP fit (fit=) or the matrix shape (shape=)")
            fit = mp.fit(S, shape, gof=False)
        S = shift(S, fit.sigma, fit.q)
    if k:
        S[len(S) - k :] = 0.0
    return S


def filter_matrix(W, k: int, *, shift: bool = True, fit=None) -> torch.Tensor:
    """Shift (optionally) and remove the k smallest singular values of W (METHODS §5).

    `fit` is the MP fit of W (`rmtlib.marchenko_pastur.fit`); computed when not given.
    """
    W = spectra.as_tensor(W)
    _check_k(k, min(W.shape))
    shift = _check_bool(shift, "shift")
    dec = spectra.svd(W)
    S = filtered_values(dec.S.cpu().numpy(), k, shift_values=shift, fit=fit, shape=tuple(W.shape))
    out = (dec.U * torch.as_tensor(S, dtype=dec.U.dtype, device=dec.U.device)) @ dec.Vh
    return out.to(W.dtype)


# --------------------------------------------------------------------------- sweeps over a model
def _resolve_split(data, name):
    if isinstance(data, Dataset):
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose from {SPLITS}")
        return getattr(data, name)
    if isinstance(data, dict):
        return data[name]
    raise TypeError("data must be an rmtlib Dataset or a dict of Splits")


def _check_fractions(fractions):
    fr = as_array(fractions, "fractions").cpu().numpy().astype(float).ravel()
    if np.any(fr < 0) or np.any(fr > 1):
        raise ValueError(f"fractions must be numbers in [0, 1]; got {list(fr)}")
    return fr


def _check_layers(model, layer_names):
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    if not isinstance(layer_names, (list, tuple)):
        raise TypeError(f"layer_names must be a layer name or a list of them; got "
                        f"{type(layer_names).__name__}")
    for name in layer_names:
        if not isinstance(name, str):
            raise TypeError(f"layer names must be strings; got {name!r} ({type(name).__name__})")
    names = [n for n, _ in spectra.layers(model)]
    for name in layer_names:
        if name not in names:
            all_modules = dict(model.named_modules())
            what = "is not a Linear or Conv layer" if name in all_modules else "does not exist"
            raise ValueError(f"layer {name!r} {what}; valid layer names: {names}")
    if not layer_names:
        raise ValueError(f"give at least one layer name; valid layer names: {names}")
    return list(layer_names)


class _Factored:
    """A layer W = U diag(S) Vh applied with per-group singular values (fractions batched)."""

    def __init__(self, module, dec, dtype, device):
        self.module = module
        self.conv = isinstance(module, nn.Conv2d)
        self.U = dec.U.to(device, dtype)
        self.S = dec.S.to(device, dtype)
        self.Vh = dec.Vh.to(device, dtype)
        self.bias = None if module.bias is None else module.bias.detach().to(device, dtype)
        if self.conv:
            w = module.weight
            self.kernel = self.Vh.reshape(len(self.S), *w.shape[1:])  # M filters (in, kh, kw)

    def project(self, x):
        """Projections onto the right singular vectors (the part shared by all fractions)."""
        if self.conv:
            m = self.module
            return F.conv2d(x, self.kernel, None, m.stride, m.padding, m.dilation, m.groups)
        return x @ self.Vh.T

    def expand(self, p, values):
        """values: (G, M) singular values per group; p: (G, B, M, ...) projections -> outputs."""
        if self.conv:
            p = p * values[:, None, :, None, None]
            out = torch.einsum("gbmhw,om->gbohw", p, self.U)
            return out if self.bias is None else out + self.bias[None, None, :, None, None]
        out = (p * values[:, None, :]) @ self.U.T
        return out if self.bias is None else out + self.bias


def _sequential_plan(model, layer_names):
    """(children list, positions of the filtered layers) when the fast route applies, else None."""
    if not isinstance(model, nn.Sequential):
        return None
    children = list(model.named_children())
    pos = {name: i for i, (name, _) in enumerate(children)}
    if not all(n in pos for n in layer_names):
        return None
    for n in layer_names:
        m = children[pos[n]][1]
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            return None
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            return None
    return children, sorted(pos[n] for n in layer_names)


@torch.no_grad()
def _fast_correct(model, layers_sv, plan, x, y, batch, group):
    """Correct counts per group of singular values, reusing the prefix and the projections."""
    children, positions = plan
    first = positions[0]
    factored = layers_sv["factored"]
    values = layers_sv["values"]  # name -> (F, M) tensors
    F_ = next(iter(values.values())).shape[0]
    correct = torch.zeros(F_, dtype=torch.long)
    dev = next(iter(factored.values())).U.device
    for i in range(0, len(y), batch):
        xb, yb = x[i : i + batch].to(dev), y[i : i + batch].to(dev)
        h = xb
        for _, m in children[:first]:
            h = m(h)
        name0 = children[first][0]
        p = factored[name0].project(h)
        B = len(yb)
        for g0 in range(0, F_, group):
            g1 = min(F_, g0 + group)
            G = g1 - g0
            out = factored[name0].expand(p.expand(G, *p.shape), values[name0][g0:g1])
            out = out.reshape(G * B, *out.shape[2:])
            for name, m in children[first + 1 :]:
                if name in factored:
                    f = factored[name]
                    pp = f.project(out)
                    out = f.expand(pp.reshape(G, B, *pp.shape[1:]), values[name][g0:g1])
                    out = out.reshape(G * B, *out.shape[2:])
                else:
                    out = m(out)
            pred = out.reshape(G, B, -1).argmax(-1)
            correct[g0:g1] += (pred == yb[None]).sum(1).cpu()
    return correct


@torch.no_grad()
def _widest_activation(model, x1, dev) -> int:
    """Largest number of values per sample among the outputs of the model's children."""
    sizes = [int(np.prod(x1.shape[1:]))]
    h = x1.to(dev)
    for m in model.children():
        h = m(h)
        sizes.append(int(np.prod(h.shape[1:])))
    return max(sizes)


def _filtered_copy(model, matrices: dict):
    """A deep copy of `model` whose named layers get the given 2-D weight matrices."""
    out = copy.deepcopy(model)
    for name, W in matrices.items():
        spectra.set_weight_matrix(spectra.get_layer(out, name), W)
    return out


def _accuracy(model, split: Split, batch: int, device) -> float:
    from .train import evaluate  # one evaluation routine for the whole library

    return evaluate(model.to(device), split, batch_size=batch)[0]


def removal_sweep(model: nn.Module, layer_names, fractions, data, *, splits=("train", "test"),
                  shift: bool = False, fits: dict | None = None, shift_layers=None, method: str = "fast",
                  batch_size: int = 1000, device=None, progress_bar: bool = True) -> pd.DataFrame:
    """Accuracy after removing the same fraction of smallest singular values from layers.

    METHODS §4: for each fraction f, k = round(f * M) of each listed layer's singular values
    are set to zero (optionally after shifting the outliers, METHODS §5), and accuracy is
    measured on the requested splits. One SVD per layer. With method="fast" (models that
    are nn.Sequential with the layers as children), the layers before the first filtered
    one run once, the projections onto its right singular vectors are computed once, and
    all fractions go through the rest of the network as one batch. method="naive" rebuilds
    W_k and runs the full forward pass for every fraction (the reference).
    Returns a DataFrame: fraction, k_<layer> per layer, <split>_acc per split.
    With shift=True the outliers of every listed layer are shifted, or only those of
    `shift_layers` (a sublist of `layer_names`; Staats et al. Fig. 3 remove from all hidden
    layers and shift in the first two).

    An ensemble (a list of K models of one architecture, e.g. from `trained_many`; `data`
    and `fits` either one for all or a list with one per member) runs in one batch when the
    fast route applies: the K members' factored layers are stacked, W_k = U_k diag(s_kf) Vh_k,
    and every product is one batched product over members (and fractions). Each member's
    DataFrame equals what the model alone gives, to float rounding. Returns a list of
    DataFrames in the members' order.
    """
    check_choice(method, "method", ("fast", "naive"))
    batch_size = check_int(batch_size, "batch_size", min=1)
    shift = _check_bool(shift, "shift")
    fr = _check_fractions(fractions)
    if isinstance(model, (list, tuple)):  # an ensemble: one DataFrame per member
        models = _check_members(model)
        layer_names = _check_layers(models[0], layer_names)
        shifted = _shifted_layers(shift, shift_layers, layer_names)
        datas = _member_list(data, len(models), "data")
        fits_l = _member_list(fits, len(models), "fits")
        members = {s: [_resolve_split(d, s) for d in datas] for s in splits}
        names = _ensemble_plan(models, layer_names) if method == "fast" else None
        if names is not None and all(len({len(x) for x in m}) == 1 for m in members.values()):
            dev = resolve_device(device) if device is not None else next(models[0].parameters()).device
            models = [m.to(dev).eval() for m in models]
            return _removal_sweep_ensemble(models, names, layer_names, fr, datas, splits, shifted, fits_l,
                                           batch_size, dev)
        return _for_each_member(removal_sweep, models, dict(data=datas, fits=fits_l),
                                dict(layer_names=layer_names, fractions=fr, splits=splits, shift=shift,
                                     shift_layers=shift_layers, method=method, batch_size=batch_size, device=device,
                                     progress_bar=progress_bar))
    layer_names = _check_layers(model, layer_names)
    shifted = _shifted_layers(shift, shift_layers, layer_names)
    split_data = {s: _resolve_split(data, s) for s in splits}
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()

    decs, ks, vals = {}, {}, {}
    for name in layer_names:
        W = spectra.weight_matrix(spectra.get_layer(model, name))
        decs[name] = spectra.svd(W)
        S = decs[name].S.cpu().numpy()
        M = len(S)
        ks[name] = [int(round(f * M)) for f in fr]
        fit = (fits or {}).get(name) if name in shifted else None
        if name in shifted and fit is None:
            fit = mp.fit(S, tuple(W.shape), gof=False)
        vals[name] = np.stack([filtered_values(S, k, shift_values=name in shifted, fit=fit) for k in ks[name]])

    rows = pd.DataFrame({"fraction": fr, **{f"k_{n}": ks[n] for n in layer_names}})
    plan = _sequential_plan(model, layer_names) if method == "fast" else None
    dtype = next(model.parameters()).dtype
    for split_name, split in split_data.items():
        if plan is not None:
            factored = {n: _Factored(spectra.get_layer(model, n), decs[n], dtype, dev) for n in layer_names}
            values = {n: torch.as_tensor(vals[n], dtype=dtype, device=dev) for n in layer_names}
            # bound the batched activations to about 2e7 numbers
            group = max(1, min(len(fr), int(2e7 // (batch_size * _widest_activation(model, split.x[:1], dev)))))
            correct = _fast_correct(model, {"factored": factored, "values": values}, plan,
                                    split.x, split.y, batch_size, group)
            rows[f"{split_name}_acc"] = (correct.double() / len(split)).numpy()
        else:
            accs = []
            for j in progress(range(len(fr)), desc=f"removal sweep ({split_name})", leave=False,
                              **({} if progress_bar else {"disable": True})):
                mats = {}
                for n in layer_names:
                    d = spectra.svd(spectra.weight_matrix(spectra.get_layer(model, n)))  # naive: SVD per k
                    mats[n] = (d.U * torch.as_tensor(vals[n][j], dtype=d.U.dtype, device=d.U.device)) @ d.Vh
                accs.append(_accuracy(_filtered_copy(model, mats), split, batch_size, dev))
            rows[f"{split_name}_acc"] = accs
    return rows


def _shifted_layers(shift: bool, shift_layers, layer_names) -> set:
    """The listed layers whose outliers a sweep shifts."""
    if not shift:
        return set()
    if shift_layers is None:
        return set(layer_names)
    if isinstance(shift_layers, str):
        shift_layers = [shift_layers]
    bad = [n for n in shift_layers if n not in layer_names]
    if bad:
        raise ValueError(f"shift_layers {bad} are not among the swept layers {list(layer_names)}; "
                         "shift_layers must be a sublist of layer_names")
    return set(shift_layers)


def _check_members(models) -> list:
    models = list(models)
    if not models:
        raise ValueError("the ensemble is empty; give at least one model")
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise TypeError(f"ensemble member {i} is a {type(m).__name__}, not a torch.nn.Module")
    return models


def _for_each_member(fn, models, per_member: dict, shared: dict) -> list:
    """fn applied to every member of an ensemble (a list of models, e.g. from trained_many).

    Each entry of `per_member` is either one value for all members or a list with one
    value per member (a Dataset, a dict of Splits, a Split, a dict of MP fits, or None).
    Returns the list of fn's results, in the order of `models`.
    """
    models = list(models)
    if not models:
        raise ValueError("the ensemble is empty; give at least one model")
    K = len(models)
    for name, value in per_member.items():
        if isinstance(value, (list, tuple)) and len(value) != K:
            raise ValueError(f"{name} has {len(value)} entries for {K} models; give one per model or one for all")
    out = []
    for k, net in enumerate(progress(models, desc=f"{fn.__name__} x{K}", leave=False,
                                     **({} if shared.get("progress_bar", True) else {"disable": True}))):
        args = {n: (v[k] if isinstance(v, (list, tuple)) else v) for n, v in per_member.items()}
        if fn is removal_sweep:
            out.append(fn(net, shared["layer_names"], shared["fractions"], args["data"], fits=args["fits"],
                          **{n: v for n, v in shared.items() if n not in ("layer_names", "fractions")}))
        else:
            out.append(fn(net, args["val"], test=args["test"], **shared))
    return out


# --------------------------------------------------------------------------- the noise filter
def denoise(model: nn.Module, val: Split, *, shift: bool = True, test: Split | None = None,
            layers=None, shift_layers=None, fractions=None, method: str = "fast", batch_size: int = 1000,
            device=None, progress_bar: bool = True):
    """Layer-wise noise filter of Staats et al. (METHODS §5, Fig. 5 protocol).

    Goes from the last hidden layer to the first (the output layer is skipped). For each
    layer, sweeps the number of smallest singular values removed (`fractions` of M,
    default 0, 0.02, ..., 1) and keeps the count with the best accuracy on the validation
    split `val`; with `shift=True` it also sweeps shift+remove (every value above the
    fitted MP edge shifted back, METHODS §5) and keeps that variant only if its best
    validation accuracy is strictly higher. The layer is then fixed and the next one down
    is optimised. Ties go to fewer removed values. The input model is never modified.
    Shifting is tried only in `shift_layers`: by default the first two layers of the model,
    as Staats et al. do ("additionally shifting singular values of the first two layers",
    Fig. 5); pass a list of layer names to choose others. `shifted` in the report counts
    the values the shift moved (those above the noise edge sigma (1 + sqrt q) of the fit).

    Works for any model made of Linear and Conv layers (the fast sweep applies to
    nn.Sequential models; others use the plain route). Returns (filtered copy, report): one
    row per layer with M, removed, shifted, variant, val_acc_before, val_acc; with `test`,
    test_acc after each step. `report.attrs` holds val/test accuracy before and after.

    An ensemble (a list of K models of one architecture; `val` and `test` one for all or a
    list with one per member) is filtered in one batch: at each layer the K members' sweeps
    run as batched products (see `removal_sweep`), each member choosing its own count and
    variant. Returns a list of (filtered copy, report), each equal (to float rounding) to
    what the member gives alone.
    """
    check_choice(method, "method", ("fast", "naive"))
    batch_size = check_int(batch_size, "batch_size", min=1)
    shift = _check_bool(shift, "shift")
    fr = _check_fractions(np.linspace(0, 1, 51) if fractions is None else fractions)
    if fr[0] != 0:
        fr = np.concatenate([[0.0], fr])  # "change nothing" is always a candidate
    ensemble = isinstance(model, (list, tuple))
    models = _check_members(model) if ensemble else [model]
    K = len(models)
    vals = _member_list(val, K, "val") if ensemble else [val]
    tests = None if test is None else (_member_list(test, K, "test") if ensemble else [test])
    for name, group in (("val", vals), ("test", tests or [])):
        for v in group:
            if not isinstance(v, Split):
                raise TypeError(f"{name} must be an rmtlib.data.Split (e.g. data.{name}); got {type(v).__name__}")
    ref = models[0]
    names = [n for n, _ in spectra.layers(ref)]
    if len(names) < 2:
        raise ValueError("denoise needs at least one hidden layer besides the output layer")
    hidden = _check_layers(ref, layers) if layers is not None else names[:-1]
    shift_set = set(_check_layers(ref, shift_layers) if shift_layers is not None else names[:2]) if shift else set()
    order = [n for n in reversed(names) if n in hidden]
    if ensemble:
        plan = _ensemble_plan(models, order) if method == "fast" else None
        same = len({len(v) for v in vals}) == 1 and (tests is None or len({len(t) for t in tests}) == 1)
        if plan is None or not same:
            return _for_each_member(denoise, models, dict(val=vals, test=tests or None),
                                    dict(shift=shift, layers=layers, shift_layers=shift_layers, fractions=fr,
                                         method=method, batch_size=batch_size, device=device,
                                         progress_bar=progress_bar))
        dev = resolve_device(device) if device is not None else next(ref.parameters()).device
        return _denoise_ensemble(models, vals, tests, order, shift_set, fr, batch_size, dev)
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    work = copy.deepcopy(model).to(dev).eval()
    splits = {"val": val} if test is None else {"val": val, "test": test}
    acc0 = {s: _accuracy(work, d, batch_size, dev) for s, d in splits.items()}
    rows, current = [], acc0["val"]
    for name in progress(order, desc="denoise", leave=False, **({} if progress_bar else {"disable": True})):
        module = spectra.get_layer(work, name)
        W = spectra.weight_matrix(module)
        dec = spectra.svd(W)
        S = dec.S.cpu().numpy()
        M = len(S)
        kw = dict(splits=("val",), method=method, batch_size=batch_size, device=dev, progress_bar=False)
        plain = removal_sweep(work, [name], fr, {"val": val}, shift=False, **kw)
        best = dict(variant="remove", k=int(plain[f"k_{name}"].iloc[int(np.argmax(plain.val_acc))]),
                    acc=float(plain.val_acc.max()), shifted=0, fit=None)
        if name in shift_set:
            fit = _safe_fit(S, tuple(W.shape))
            if fit is not None:
                sh = removal_sweep(work, [name], fr, {"val": val}, shift=True, fits={name: fit}, **kw)
                if sh.val_acc.max() > best["acc"]:
                    best = dict(variant="shift+remove", k=int(sh[f"k_{name}"].iloc[int(np.argmax(sh.val_acc))]),
                                acc=float(sh.val_acc.max()), shifted=_n_shifted(S, fit), fit=fit)
        new_S = filtered_values(S, best["k"], shift_values=best["variant"] != "remove", fit=best["fit"])
        spectra.set_weight_matrix(module, (dec.U * torch.as_tensor(new_S, dtype=dec.U.dtype, device=dec.U.device)) @ dec.Vh)
        row = dict(layer=name, M=M, removed=best["k"], shifted=best["shifted"], variant=best["variant"],
                   val_acc_before=current, val_acc=_accuracy(work, val, batch_size, dev))
        if test is not None:
            row["test_acc"] = _accuracy(work, test, batch_size, dev)
        current = row["val_acc"]
        rows.append(row)
    report = pd.DataFrame(rows)
    report.attrs.update(val_before=acc0["val"], val_after=current)
    if test is not None:
        report.attrs.update(test_before=acc0["test"], test_after=rows[-1]["test_acc"] if rows else acc0["test"])
    return work.cpu() if dev.type != "cpu" else work, report


# --------------------------------------------------------------------------- ensembles in one batch
def _ensemble_plan(models, layer_names):
    """Children of the members when the batched route applies (one nn.Sequential
    architecture of Linear, Conv2d with groups=1 and parameter-free layers), else None."""
    from .ensemble import _check_same_architecture, _supports_bmm

    if not all(isinstance(m, nn.Sequential) for m in models):
        return None
    try:
        _check_same_architecture(models)
    except ValueError:
        return None
    if not _supports_bmm(models[0]) or _sequential_plan(models[0], layer_names) is None:
        return None
    if any(isinstance(m, nn.Conv2d) and m.groups != 1 for m in models[0].children()):
        return None
    return [n for n, _ in models[0].named_children()]


class _Stack:
    """K members of one nn.Sequential architecture with a leading member axis.

    Activations have shape (K, R, ...): R rows per member. Unfiltered layers run as one
    batched product per layer (Linear: h_k W_k^T + b_k by `baddbmm`; Conv2d: one grouped
    convolution with K groups; parameter-free layers on K*R samples). A filtered layer is
    kept factored, W_k = U_k diag(s_k) Vh_k, so that G sets of singular values s_{k,g}
    (G fractions) cost one projection h Vh_k^T and one product with U_k per group:
        out_{k,g} = ((h_k Vh_k^T) * s_{k,g}) U_k^T + b_k.
    """

    def __init__(self, models, names, factored: dict, dtype, dev):
        self.names = names
        self.modules = dict(models[0].named_children())
        self.K = len(models)
        self.factored = set(factored)
        self.w, self.b, self.U, self.Vh = {}, {}, {}, {}
        for name in names:
            m = self.modules[name]
            if not isinstance(m, (nn.Linear, nn.Conv2d)):
                continue
            mods = [dict(net.named_children())[name] for net in models]
            if m.bias is not None:
                self.b[name] = torch.stack([x.bias.detach() for x in mods]).to(dev, dtype)
            if name in factored:
                decs = factored[name]
                self.U[name] = torch.stack([d.U for d in decs]).to(dev, dtype)      # (K, out, M)
                Vh = torch.stack([d.Vh for d in decs]).to(dev, dtype)              # (K, M, in...)
                self.Vh[name] = Vh if isinstance(m, nn.Linear) else Vh.reshape(self.K, Vh.shape[1], *m.weight.shape[1:])
            else:
                W = torch.stack([x.weight.detach() for x in mods]).to(dev, dtype)
                self.w[name] = W.transpose(1, 2).contiguous() if isinstance(m, nn.Linear) else W

    def _conv(self, h, W, m):
        """h (K, R, C, H, W), W (K, O, C, kh, kw): member k's input through member k's kernels."""
        K, R = h.shape[:2]
        hh = h.transpose(0, 1).reshape(R, K * h.shape[2], *h.shape[3:])
        out = F.conv2d(hh, W.reshape(-1, *W.shape[2:]), None, m.stride, m.padding, m.dilation, K)
        return out.reshape(R, K, W.shape[1], *out.shape[2:]).transpose(0, 1)

    def _bias(self, out, name, conv):
        if name not in self.b:
            return out
        b = self.b[name]
        if conv:  # out (K, R, O, H, W) or (K, G, B, O, H, W)
            return out + b.reshape(self.K, *([1] * (out.dim() - 4)), -1, 1, 1)
        return out + b.reshape(self.K, *([1] * (out.dim() - 2)), -1)

    def layer(self, name, h):
        """An unfiltered layer on h (K, R, ...)."""
        m = self.modules[name]
        if isinstance(m, nn.Linear):
            K, shape = self.K, h.shape
            out = torch.bmm(h.reshape(K, -1, shape[-1]), self.w[name])
            return self._bias(out, name, False).reshape(*shape[:-1], out.shape[-1])
        if isinstance(m, nn.Conv2d):
            return self._bias(self._conv(h, self.w[name], m), name, True)
        y = m(h.reshape(-1, *h.shape[2:]))
        return y.reshape(*h.shape[:2], *y.shape[1:])

    def project(self, name, h):
        """h (K, R, ...) onto member k's right singular vectors: (K, R, M) or (K, R, M, H', W')."""
        m = self.modules[name]
        if isinstance(m, nn.Linear):
            return torch.bmm(h, self.Vh[name].transpose(1, 2))
        return self._conv(h, self.Vh[name], m)

    def expand(self, name, p, values):
        """p (K, G, B, M, ...) projections, values (K, G, M) -> outputs (K, G * B, ...)."""
        conv = isinstance(self.modules[name], nn.Conv2d)
        K, G, B = p.shape[:3]
        if conv:
            out = torch.einsum("kgbmhw,kom->kgbohw", p * values[:, :, None, :, None, None], self.U[name])
        else:
            out = torch.bmm((p * values[:, :, None, :]).reshape(K, G * B, -1), self.U[name].transpose(1, 2))
            out = out.reshape(K, G, B, -1)
        out = self._bias(out, name, conv)
        return out.reshape(K, G * B, *out.shape[3:])


@torch.no_grad()
def _ensemble_correct(stack: _Stack, values: dict, data: tuple, batch: int, group: int, dev):
    """Correct counts (K, F) of K members under F sets of singular values per filtered layer.

    values: name -> (K, F, M); data = (x, y, shared): x (N, ...) and y (N,) shared by all
    members, or x (K, N, ...) and y (K, N) one per member. With no filtered layer, F = 1
    (the plain forward).
    """
    x, y, shared = data
    K = stack.K
    F_ = next(iter(values.values())).shape[1] if values else 1
    correct = torch.zeros(K, F_, dtype=torch.long)
    first = min((stack.names.index(n) for n in values), default=len(stack.names))
    N = x.shape[0] if shared else x.shape[1]
    for i in range(0, N, batch):
        if shared:
            xb = x[i : i + batch].to(dev); yb = y[i : i + batch].to(dev)
            h, yb = xb.unsqueeze(0).expand(K, *xb.shape), yb.unsqueeze(0).expand(K, -1)
        else:
            h, yb = x[:, i : i + batch].to(dev), y[:, i : i + batch].to(dev)
        B = h.shape[1]
        for name in stack.names[:first]:
            h = stack.layer(name, h)
        if not values:
            correct[:, 0] += (h.argmax(-1) == yb).sum(1).cpu()
            continue
        name0 = stack.names[first]
        p0 = stack.project(name0, h)
        for g0 in range(0, F_, group):
            g1 = min(F_, g0 + group)
            G = g1 - g0
            out = stack.expand(name0, p0.unsqueeze(1).expand(K, G, *p0.shape[1:]), values[name0][:, g0:g1])
            for name in stack.names[first + 1 :]:
                if name in values:
                    pp = stack.project(name, out)
                    out = stack.expand(name, pp.reshape(K, G, B, *pp.shape[2:]), values[name][:, g0:g1])
                else:
                    out = stack.layer(name, out)
            pred = out.reshape(K, G, B, -1).argmax(-1)
            correct[:, g0:g1] += (pred == yb[:, None, :]).sum(2).cpu()
    return correct


def _member_list(value, K: int, name: str) -> list:
    """One entry per member: a list/tuple of K entries, or one value for all."""
    if isinstance(value, (list, tuple)):
        if len(value) != K:
            raise ValueError(f"{name} has {len(value)} entries for {K} models; give one per model or one for all")
        return list(value)
    return [value] * K


def _stacked_split(splits: list):
    """(x, y, shared) for `_ensemble_correct`: one copy when all members use the same images."""
    first = splits[0]
    if all(s is first or (s.x.shape == first.x.shape and torch.equal(s.x, first.x) and torch.equal(s.y, first.y))
           for s in splits[1:]):
        return first.x, first.y, True
    if any(len(s) != len(first) for s in splits):
        raise ValueError(f"the members' splits differ in size ({sorted({len(s) for s in splits})}); an ensemble "
                         "is evaluated in one batch only on splits of one size")
    return torch.stack([s.x for s in splits]), torch.stack([s.y for s in splits]), False


def _group_size(stack, models, data, batch, F_, dev) -> int:
    """Fraction groups per pass, bounding the batched activations to about 2e7 numbers."""
    x = data[0] if data[2] else data[0][0]
    widest = _widest_activation(models[0], x[:1], dev)
    return max(1, min(F_, int(2e7 // (stack.K * batch * widest))))


def _ensemble_accuracy(models, names, splits: list, batch, dtype, dev) -> np.ndarray:
    """Accuracy (K,) of each member on its split, all members in one batched forward pass."""
    stack = _Stack(models, names, {}, dtype, dev)
    data = _stacked_split(splits)
    return (_ensemble_correct(stack, {}, data, batch, 1, dev)[:, 0].double() / len(splits[0])).numpy()


def _ensemble_sweep(models, names, layer, decs, values: np.ndarray, splits, batch, dtype, dev) -> np.ndarray:
    """Accuracy (K, F) of every member with `layer`'s singular values replaced by values[k, f]."""
    stack = _Stack(models, names, {layer: decs}, dtype, dev)
    data = _stacked_split(splits)
    vals = {layer: torch.as_tensor(values, dtype=dtype, device=dev)}
    group = _group_size(stack, models, data, batch, values.shape[1], dev)
    return (_ensemble_correct(stack, vals, data, batch, group, dev).double() / len(splits[0])).numpy()


def _removal_sweep_ensemble(models, names, layer_names, fr, datas, splits, shifted, fits, batch_size, dev):
    """removal_sweep for K members in one batch (see `removal_sweep`): a list of DataFrames."""
    K = len(models)
    dtype = next(models[0].parameters()).dtype
    decs, vals, ks = {n: [] for n in layer_names}, {n: [] for n in layer_names}, {}
    for k, net in enumerate(models):
        for name in layer_names:
            W = spectra.weight_matrix(spectra.get_layer(net, name))
            dec = spectra.svd(W)
            S = dec.S.cpu().numpy()
            ks[name] = [int(round(f * len(S))) for f in fr]
            fit = (fits[k] or {}).get(name) if name in shifted else None
            if name in shifted and fit is None:
                fit = mp.fit(S, tuple(W.shape), gof=False)
            decs[name].append(dec)
            vals[name].append(np.stack([filtered_values(S, kk, shift_values=name in shifted, fit=fit)
                                        for kk in ks[name]]))
    stack = _Stack(models, names, decs, dtype, dev)
    values = {n: torch.as_tensor(np.stack(vals[n]), dtype=dtype, device=dev) for n in layer_names}
    out = [pd.DataFrame({"fraction": fr, **{f"k_{n}": ks[n] for n in layer_names}}) for _ in range(K)]
    for split_name in splits:
        members = [_resolve_split(d, split_name) for d in datas]
        data = _stacked_split(members)
        group = _group_size(stack, models, data, batch_size, len(fr), dev)
        acc = (_ensemble_correct(stack, values, data, batch_size, group, dev).double() / len(members[0])).numpy()
        for k in range(K):
            out[k][f"{split_name}_acc"] = acc[k]
    return out


def _safe_fit(S, shape):
    """The MP fit the shift needs (sigma and q only: the bulk's goodness of fit is not judged)."""
    try:
        return mp.fit(S, shape, gof=False)
    except (ValueError, RuntimeError):
        return None  # too small or no bulk: nothing to shift


def _n_shifted(S, fit) -> int:
    """How many values the shift moves: those above the noise matrix's edge sigma (1 + sqrt q)."""
    return int(np.sum(S > fit.sigma * (1 + math.sqrt(fit.q))))


def _denoise_ensemble(models, vals, tests, order, shift_set, fr, batch_size, dev):
    """denoise for K members in one batch (see `denoise`): a list of (filtered copy, report)."""
    K = len(models)
    works = [copy.deepcopy(m).to(dev).eval() for m in models]
    names = [n for n, _ in works[0].named_children()]
    dtype = next(works[0].parameters()).dtype
    acc_val = _ensemble_accuracy(works, names, vals, batch_size, dtype, dev)
    acc0 = {"val": acc_val}
    if tests is not None:
        acc0["test"] = _ensemble_accuracy(works, names, tests, batch_size, dtype, dev)
    rows = [[] for _ in range(K)]
    current = acc_val.copy()
    for name in order:
        mods = [spectra.get_layer(w, name) for w in works]
        Ws = [spectra.weight_matrix(m) for m in mods]
        decs = [spectra.svd(W) for W in Ws]
        Ss = [d.S.cpu().numpy() for d in decs]
        M = len(Ss[0])
        ks = [int(round(f * M)) for f in fr]
        plain = np.stack([np.stack([filtered_values(S, kk, shift_values=False) for kk in ks]) for S in Ss])
        acc = _ensemble_sweep(works, names, name, decs, plain, vals, batch_size, dtype, dev)
        best = [dict(variant="remove", k=ks[int(np.argmax(a))], acc=float(a.max()), shifted=0, fit=None) for a in acc]
        if name in shift_set:
            fits = [_safe_fit(S, tuple(W.shape)) for S, W in zip(Ss, Ws)]
            if any(f is not None for f in fits):
                sh = np.stack([np.stack([filtered_values(S, kk, shift_values=f is not None, fit=f) for kk in ks])
                               for S, f in zip(Ss, fits)])
                acc_sh = _ensemble_sweep(works, names, name, decs, sh, vals, batch_size, dtype, dev)
                for k, (a, f) in enumerate(zip(acc_sh, fits)):
                    if f is not None and a.max() > best[k]["acc"]:
                        best[k] = dict(variant="shift+remove", k=ks[int(np.argmax(a))], acc=float(a.max()),
                                       shifted=_n_shifted(Ss[k], f), fit=f)
        for k, (mod, dec, S) in enumerate(zip(mods, decs, Ss)):
            b = best[k]
            new_S = filtered_values(S, b["k"], shift_values=b["variant"] != "remove", fit=b["fit"])
            spectra.set_weight_matrix(mod, (dec.U * torch.as_tensor(new_S, dtype=dec.U.dtype, device=dec.U.device)) @ dec.Vh)
        after_val = _ensemble_accuracy(works, names, vals, batch_size, dtype, dev)
        after_test = None if tests is None else _ensemble_accuracy(works, names, tests, batch_size, dtype, dev)
        for k in range(K):
            row = dict(layer=name, M=M, removed=best[k]["k"], shifted=best[k]["shifted"], variant=best[k]["variant"],
                       val_acc_before=float(current[k]), val_acc=float(after_val[k]))
            if tests is not None:
                row["test_acc"] = float(after_test[k])
            rows[k].append(row)
        current = after_val
    out = []
    for k in range(K):
        report = pd.DataFrame(rows[k])
        report.attrs.update(val_before=float(acc0["val"][k]), val_after=float(current[k]))
        if tests is not None:
            report.attrs.update(test_before=float(acc0["test"][k]),
                                test_after=rows[k][-1]["test_acc"] if rows[k] else float(acc0["test"][k]))
        out.append((works[k].cpu() if dev.type != "cpu" else works[k], report))
    return out
