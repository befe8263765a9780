"""Weight matrices of a network and their singular value decomposition.

METHODS §1: a Linear weight is used as it is (out x in); a convolution kernel
(out, in, kh, kw) becomes the matrix (out, in*kh*kw) in row-major order,
W~[k, l*M*N + m*N + n] = W[k, l, m, n] (Staats et al., Suppl. Eq. S1), and goes
back exactly. Only weights are analysed; biases stay as they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .validation import as_matrix, check_choice

ANALYSABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
# Families of singular vectors of a PyTorch (out, in) weight: "left" = "output" (length out,
# the layer's own units: the family Staats et al. test), "right" = "input" (length in).
SIDES = {"left": "left", "right": "right", "output": "left", "input": "right"}


def check_side(side) -> str:
    """The canonical name ("left" or "right") of a family of singular vectors (aliases above)."""
    if not isinstance(side, str):
        raise TypeError(f"side must be a string, one of {list(SIDES)}; got {side!r} "
                        f"({type(side).__name__})")
    return SIDES[check_choice(side, "side", SIDES)]


def _check_model(model):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return model


def as_tensor(W, *, dtype=None, name: str = "W") -> torch.Tensor:
    """A 2-D real float tensor from a numpy array, tensor or nested list (the input door,
    `rmtlib.validation.as_matrix`): checked for shape, emptiness and finiteness."""
    return as_matrix(W, name, dtype=dtype)


def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The analysable layers of a model, [(name, module)]: Linear, Conv and Embedding layers, in order."""
    return [(name, m) for name, m in _check_model(model).named_modules() if isinstance(m, ANALYSABLE)]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The analysable layer called `name`; the error lists the valid names."""
    found = dict(layers(model))
    if not isinstance(name, str):
        raise TypeError(f"layer name must be a string; got {name!r} ({type(name).__name__}); "
                        f"valid layer names: {list(found)}")
    if name not in found:
        raise ValueError(f"no analysable layer {name!r}; valid layer names: {list(found)}")
    return found[name]


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The 2-D weight matrix of a Linear, Conv or Embedding layer (METHODS §1), a detached copy.

    An Embedding's weight (vocabulary x dimension) is used as it is."""
    if not isinstance(module, ANALYSABLE):
        raise TypeError(f"{type(module).__name__} is not a Linear, Conv or Embedding layer; "
                        "use rmtlib.spectra.layers(model) to list the analysable ones")
    w = module.weight.detach()
    return w.reshape(w.shape[0], -1).clone()


def set_weight_matrix(module: nn.Module, W) -> None:
    """Write a (filtered) matrix back into a layer's weight, reshaped exactly as before."""
    if not isinstance(module, ANALYSABLE):
        raise TypeError(f"{type(module).__name__} is not a Linear, Conv or Embedding layer")
    shape = tuple(module.weight.shape)
    rows, cols = shape[0], int(np.prod(shape[1:]))
    W = as_tensor(W)
    if tuple(W.shape) != (rows, cols):
        raise ValueError(f"matrix of shape {tuple(W.shape)} does not fit weight {shape}; "
                         f"expected ({rows}, {cols})")
    with torch.no_grad():
        module.weight.copy_(W.reshape(shape).to(module.weight.dtype))


@dataclass
class SVD:
    """Reduced SVD W = U diag(S) Vh with singular values in descending order.

    Columns of `U` are the left singular vectors (length n), rows of `Vh` the right
    ones (length m).
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor

    @property
    def q(self) -> float:
        n, m = self.U.shape[0], self.Vh.shape[1]
        return min(n, m) / max(n, m)

    def vectors(self, side: str = "right") -> torch.Tensor:
        """Singular vectors as rows, ordered like `S`: "right"/"input" (length m) or
        "left"/"output" (length n)."""
        return self.Vh if check_side(side) == "right" else self.U.T


GRAM_MAX_CONDITION = 1e5  # beyond this the Gram route loses too many digits


def _gram_svd(A: torch.Tensor):
    """SVD of a tall A through eigh(A^T A); None when A is too ill-conditioned for it.

    Errors of the singular values are about eps * nu_max^2 / nu, so the route is used
    only for nu_max / nu_min < GRAM_MAX_CONDITION (in float64: relative error < 1e-6).
    """
    lam, V = torch.linalg.eigh(A.T @ A)
    lam, V = lam.flip(0), V.flip(1)
    if not bool(torch.isfinite(lam).all()) or lam[-1] <= 0 or lam[0] / lam[-1] > GRAM_MAX_CONDITION**2:
        return None
    S = lam.sqrt()
    U = (A @ V) / S
    return U, S, V.T


def svd(W, *, compute_uv: bool = True, float64: bool = True, method: str = "lapack"):
    """Reduced SVD of a matrix, computed on its tall orientation.

    method="lapack": LAPACK's divide-and-conquer driver (gesdd), falling back to gesvd
    when it fails to converge. method="gram": eigendecomposition of the smaller Gram
    matrix, several times faster for wide layers; used only when the matrix is well
    conditioned (else LAPACK). Returns an `SVD` or, with compute_uv=False, the singular
    values (descending).
    """
    check_choice(method, "method", ("lapack", "gram"))
    for flag, value in (("compute_uv", compute_uv), ("float64", float64)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False; got {value!r}")
    W = as_tensor(W, dtype=torch.float64 if float64 else None)
    # Scale by a power of two (exact) so that neither LAPACK nor the Gram product A^T A
    # overflows or underflows for entries near the ends of the floating-point range.
    top = float(W.abs().max())
    scale = 2.0 ** round(math.log2(top)) if top > 0 else 1.0
    if scale != 1.0:
        W = W / scale
    wide = W.shape[0] < W.shape[1]
    A = W.T if wide else W  # LAPACK is faster on the tall orientation
    if method == "gram" and compute_uv:
        out = _gram_svd(A)
        if out is not None:
            U, S, Vh = out
            S = S * scale
            return SVD(Vh.T, S, U.T) if wide else SVD(U, S, Vh)
    if not compute_uv:
        try:
            return torch.linalg.svdvals(A) * scale
        except RuntimeError:
            import scipy.linalg

            s = scipy.linalg.svd(A.cpu().numpy(), compute_uv=False, lapack_driver="gesvd")
            return torch.from_numpy(s).to(A.device) * scale
    try:
        U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    except RuntimeError:  # torch.linalg.LinAlgError: gesdd did not converge
        import scipy.linalg

        u, s, vh = scipy.linalg.svd(A.cpu().numpy(), full_matrices=False, lapack_driver="gesvd")
        U, S, Vh = (torch.from_numpy(a).to(A.device) for a in (u, s, vh))
    if wide:  # W = (A)^T = V S U^T
        U, Vh = Vh.T, U.T
    return SVD(U, S * scale, Vh)


def singular_values(W, *, float64: bool = True) -> np.ndarray:
    """Singular values of a matrix, descending, as a numpy array."""
    return svd(W, compute_uv=False, float64=float64).cpu().numpy()


def shape_info(W) -> dict:
    """n, m, N = max, M = min and the aspect ratio q = M / N of a matrix (METHODS notation)."""
    n, m = as_tensor(W).shape
    return dict(n=int(n), m=int(m), N=int(max(n, m)), M=int(min(n, m)), q=min(n, m) / max(n, m))
