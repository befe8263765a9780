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
            fit = mp.fit(S, shape)
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
                  shift: bool = False, fits: dict | None = None, method: str = "fast",
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
    """
    if isinstance(model, (list, tuple)):  # an ensemble: one DataFrame per member
        return _for_each_member(removal_sweep, model, dict(data=data, fits=fits),
                                dict(layer_names=layer_names, fractions=fractions, splits=splits, shift=shift,
                                     method=method, batch_size=batch_size, device=device,
                                     progress_bar=progress_bar))
    check_choice(method, "method", ("fast", "naive"))
    batch_size = check_int(batch_size, "batch_size", min=1)
    shift = _check_bool(shift, "shift")
    fr = _check_fractions(fractions)
    layer_names = _check_layers(model, layer_names)
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
        fit = (fits or {}).get(name) if shift else None
        if shift and fit is None:
            fit = mp.fit(S, tuple(W.shape))
        vals[name] = np.stack([filtered_values(S, k, shift_values=shift, fit=fit) for k in ks[name]])

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
            layers=None, fractions=None, method: str = "fast", batch_size: int = 1000,
            device=None, progress_bar: bool = True):
    """Layer-wise noise filter of Staats et al. (METHODS §5, Fig. 5 protocol).

    Goes from the last hidden layer to the first (the output layer is skipped). For each
    layer, sweeps the number of smallest singular values removed (`fractions` of M,
    default 0, 0.02, ..., 1) and keeps the count with the best accuracy on the validation
    split `val`; with `shift=True` it also sweeps shift+remove (every value above the
    fitted MP edge shifted back, METHODS §5) and keeps that variant only if its best
    validation accuracy is strictly higher. The layer is then fixed and the next one down
    is optimised. Ties go to fewer removed values. The input model is never modified.

    Works for any model made of Linear and Conv layers (the fast sweep applies to
    nn.Sequential models; others use the plain route). Returns (filtered copy, report): one
    row per layer with M, removed, shifted, variant, val_acc_before, val_acc; with `test`,
    test_acc after each step. `report.attrs` holds val/test accuracy before and after.
    """
    if isinstance(model, (list, tuple)):  # an ensemble: one (filtered copy, report) per member
        return _for_each_member(denoise, model, dict(val=val, test=test),
                                dict(shift=shift, layers=layers, fractions=fractions, method=method,
                                     batch_size=batch_size, device=device, progress_bar=progress_bar))
    if not isinstance(val, Split):
        raise TypeError("val must be an rmtlib.data.Split (e.g. data.val)")
    check_choice(method, "method", ("fast", "naive"))
    batch_size = check_int(batch_size, "batch_size", min=1)
    shift = _check_bool(shift, "shift")
    fr = _check_fractions(np.linspace(0, 1, 51) if fractions is None else fractions)
    if fr[0] != 0:
        fr = np.concatenate([[0.0], fr])  # "change nothing" is always a candidate
    names = [n for n, _ in spectra.layers(model)]
    if len(names) < 2:
        raise ValueError("denoise needs at least one hidden layer besides the output layer")
    hidden = _check_layers(model, layers) if layers is not None else names[:-1]
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    work = copy.deepcopy(model).to(dev).eval()
    splits = {"val": val} if test is None else {"val": val, "test": test}
    acc0 = {s: _accuracy(work, d, batch_size, dev) for s, d in splits.items()}
    rows, current = [], acc0["val"]
    order = [n for n in reversed(names) if n in hidden]
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
        if shift:
            try:
                fit = mp.fit(S, tuple(W.shape))
            except (ValueError, RuntimeError):
                fit = None  # too small or no bulk: nothing to shift
            if fit is not None:
                sh = removal_sweep(work, [name], fr, {"val": val}, shift=True, fits={name: fit}, **kw)
                if sh.val_acc.max() > best["acc"]:
                    best = dict(variant="shift+remove", k=int(sh[f"k_{name}"].iloc[int(np.argmax(sh.val_acc))]),
                                acc=float(sh.val_acc.max()), shifted=int(np.sum(S > fit.nu_max)), fit=fit)
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
