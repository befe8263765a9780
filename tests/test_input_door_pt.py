"""Parameters of porter_thomas, spectra and filtering go through rmtlib.validation: a wrong
type is a TypeError naming the argument, a wrong value a ValueError naming it, before any work."""
import numpy as np
import pytest
import torch
from torch import nn

from rmtlib import filtering, spectra
from rmtlib import porter_thomas as pt

W = torch.randn(30, 20, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("call, error, name", [
    (lambda: filtering.remove_smallest(W, 2.5), TypeError, "k"),
    (lambda: filtering.remove_smallest(W, 21), ValueError, "k"),
    (lambda: filtering.filter_matrix(W, 1, shift="yes"), TypeError, "shift"),
    (lambda: filtering.shift([3.0, 1.0], "1", 0.5), TypeError, "sigma"),
    (lambda: filtering.shift([3.0, 1.0], 1.0, 1.5), ValueError, "q"),
    (lambda: filtering.shift([3.0, np.nan], 1.0, 0.5), ValueError, "singular_values"),
    (lambda: filtering.spike_position([1.0], None), TypeError, "q"),
    (lambda: filtering.spike_position([-1.0], 0.5), ValueError, "theta"),
    (lambda: filtering.removal_sweep(nn.Sequential(nn.Linear(4, 3)), ["0"], [0.5], None,
                                     batch_size="big"), TypeError, "batch_size"),
    (lambda: filtering.removal_sweep(nn.Sequential(nn.Linear(4, 3)), [0], [0.5], None),
     TypeError, "layer names"),
    (lambda: filtering.removal_sweep(nn.Sequential(nn.Linear(4, 3)), ["0"], [0.5], None,
                                     method="slow"), ValueError, "method"),
    (lambda: spectra.get_layer(nn.Sequential(nn.Linear(4, 3)), 0), TypeError, "layer name"),
    (lambda: spectra.layers("model"), TypeError, "model"),
    (lambda: spectra.svd(W, method="qr"), ValueError, "method"),
    (lambda: spectra.svd(W).vectors(2), TypeError, "side"),
    (lambda: spectra.svd(W, compute_uv="no"), TypeError, "compute_uv"),
    (lambda: spectra.shape_info([[1.0, 2.0]] * 2 + [[1.0]]), ValueError, "W"),
    (lambda: pt.analyze(W, window=15.0), TypeError, "window"),
    (lambda: pt.analyze(W, window=14), ValueError, "window"),
    (lambda: pt.analyze(W, fpr=1.5), ValueError, "fpr"),
    (lambda: pt.analyze(W, samples=10), ValueError, "samples"),
    (lambda: pt.analyze(W, control="yes"), TypeError, "control"),
    (lambda: pt.window_band([15], alpha=0), ValueError, "alpha"),
    (lambda: pt.information_boundary([0.5, 1.5], 3), ValueError, "pvalues"),
    (lambda: pt.gaussian_control((10, "5")), TypeError, r"shape\[1\]"),
])
def test_bad_parameters_name_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_inputs_of_any_float_dtype_and_lists_are_accepted():
    ref = filtering.remove_smallest(W.double(), 3)
    for x in (W, W.half(), W.to(torch.bfloat16), W.numpy(), W.tolist(), W.clone().requires_grad_()):
        out = filtering.remove_smallest(x, 3)
        # float16/bfloat16 inputs carry ~1e-3 / 4e-3 relative rounding; the reconstruction
        # inherits it (singular values are Lipschitz in the matrix)
        assert torch.allclose(out.double(), ref, atol=2e-2)
    assert spectra.shape_info(W.tolist()) == dict(n=30, m=20, N=30, M=20, q=20 / 30)
    assert filtering.spike_position(2.0, 0.5).shape == ()  # a scalar in, a scalar out
