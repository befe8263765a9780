"""An independent reference for the removal sweep and the noise filter (issue 17).

Written without rmtlib: numpy's SVD of each weight reshaped to (out, rest), the k smallest
singular values set to zero (values above the MP edge optionally moved back with the
shift formula written out below), and a plain float64 forward pass of a deep copy.
Float rounding can flip a prediction only where the two largest logits are closer than
the float32 route's error, so comparisons allow one sample per near-tie (`near_ties`).
"""
import copy
import math

import numpy as np
import torch

TIE_MARGIN = 1e-4  # float32 logits of these small nets carry errors of ~1e-6: 100x safety


def shifted(S, sigma, q):
    """nu -> sigma theta for nu / sigma > 1 + sqrt q, theta^2 = (x^2 - q - 1 + sqrt((x^2 - q - 1)^2 - 4q)) / 2."""
    S = np.array(S, dtype=float)
    x = S / sigma
    up = x > 1 + math.sqrt(q)
    a = x[up] ** 2 - q - 1
    S[up] = sigma * np.sqrt((a + np.sqrt(a**2 - 4 * q)) / 2)
    return S


def filtered_weight(weight, k, shift_fit=None):
    W = weight.detach().double().reshape(weight.shape[0], -1).numpy()
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    if shift_fit is not None:
        S = shifted(S, shift_fit.sigma, shift_fit.q)
    if k:
        S[len(S) - k:] = 0.0
    return torch.from_numpy((U * S) @ Vt).reshape(weight.shape)


def filtered_net(net, removed: dict, fits: dict | None = None):
    """Deep float64 copy of `net` with layer name -> k smallest removed (after a shift with fits[name])."""
    ref = copy.deepcopy(net).double().eval()
    modules = dict(ref.named_modules())
    for name, k in removed.items():
        layer = modules[name]
        with torch.no_grad():
            layer.weight.copy_(filtered_weight(layer.weight, k, (fits or {}).get(name)))
    return ref


def accuracy(net, split):
    """(accuracy, number of near-ties) of a float64 forward pass."""
    with torch.no_grad():
        out = net(split.x.double())
    top2 = out.topk(2, dim=1).values
    ties = int(((top2[:, 0] - top2[:, 1]) < TIE_MARGIN).sum())
    return float((out.argmax(1) == split.y).double().mean()), ties


def k_of(fraction, M):
    """k = round(f M), half to even (Python's round)."""
    return int(round(fraction * M))


def noisy_toy_problem(seed, *, n, dim, hidden, steps, n_train, n_val):
    """A small MLP trained with SGD on 4 classes with 40% label noise.

    Returns (net in eval mode, validation Split, test Split); the validation and test
    labels are clean. The first `n_train` samples train, the next `n_val` validate, the
    rest test.
    """
    from torch import nn

    from rmtlib import models
    from rmtlib.data import Split

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = (x[:, :3].sum(1) > 0).long() + 2 * (x[:, 3] > 0).long()
    noisy = y.clone()
    flip = torch.rand(n, generator=g) < 0.4
    noisy[flip] = torch.randint(0, 4, (int(flip.sum()),), generator=g)
    torch.manual_seed(seed)
    net = models.mlp([dim, *hidden, 4])
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(x[:n_train]), noisy[:n_train])
        opt.zero_grad()
        loss.backward()
        opt.step()
    v = n_train + n_val
    return net.eval(), Split(x[n_train:v], y[n_train:v]), Split(x[v:], y[v:])
