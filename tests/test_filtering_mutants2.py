"""Tests written against the surviving mutants of `rmtlib.filtering` (issue 17), second part:
`denoise` and its ensemble helpers (`_ensemble_plan`, `_group_size`, `_stacked_split`,
`_check_members`), and the survivors found later in the whole run (`removal_sweep`, `shift`,
`_ratio`, `filtered_values`, `_Factored`, `_sequential_plan`, the input checks, `_accuracy`).

Each test compares with an independent expectation: the whole error message (the argument named,
the bound, the remedy), refusals that come BEFORE any work (the first evaluation or SVD is
replaced by a failure), the documented defaults (fractions 0, 0.02, ..., 1 with "change nothing"
always a candidate; batch_size 1000; a progress bar cleared when done), the documented routing
(an ensemble of one nn.Sequential architecture runs in one batch with method="fast" and equal
split sizes, else member by member with every option passed on), hand-worked arithmetic (the
group size, the shift just above the edge), and the device asked for. This CPU-only box cannot
tell one device from another by the numbers, so the device tests put the model on PyTorch's
"meta" device (shapes only, no data): a tensor sent to the wrong device there fails loudly.
"""
import math
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from rmtlib import filtering, models
from rmtlib.data import Split
from test_filtering_mutants import _toy as _trained_toy


class _Stop(Exception):
    """Raised by a spy to end a call once the value under test has been recorded."""


def _toy(seed, n=60, dim=6, widths=(8, 6), steps=30):
    """A small float64 MLP (fc1, fc2, out) trained on 3 classes, and val / test splits."""
    return _trained_toy(seed, n=n, dim=dim, widths=widths, steps=steps, classes=3)


def _net(dim=6, widths=(8, 6)):
    torch.manual_seed(0)
    return models.mlp([dim, *widths, 3]).double().eval()


def _split(n=10, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, dim, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))


@pytest.fixture
def no_work(monkeypatch):
    """The first evaluation `denoise` makes raises: a refusal must come before it."""
    def fail(*a, **k):
        raise AssertionError("denoise started work before refusing")
    monkeypatch.setattr(filtering, "_accuracy", fail)
    monkeypatch.setattr(filtering, "removal_sweep", fail)
    monkeypatch.setattr(filtering, "_denoise_ensemble", fail)


@pytest.fixture
def bars_on(monkeypatch):
    """Progress bars switched on (the test suite and mutmut switch them off by environment)."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setenv("RMTLIB_PROGRESS", "1")


# --------------------------------------------------------------------------- the input door
def test_denoise_refusals_are_whole_and_come_first(no_work):
    net, val = _net(), _split()
    with pytest.raises(ValueError, match=r"^method must be one of \['fast', 'naive'\]; got 'slow'$"):
        filtering.denoise(net, val, method="slow")
    # batch_size >= 1: 0 refused (before any evaluation), with the bound written out
    with pytest.raises(ValueError, match=r"^batch_size must lie in \[1, inf\); got 0$"):
        filtering.denoise(net, val, batch_size=0)
    with pytest.raises(TypeError, match=r"^batch_size must be an integer; got 2\.5 \(float\)$"):
        filtering.denoise(net, val, batch_size=2.5)
    with pytest.raises(TypeError, match=r"^shift must be True or False; got 'yes' \(str\)$"):
        filtering.denoise(net, val, shift="yes")
    with pytest.raises(TypeError, match=r"^val must be an rmtlib\.data\.Split \(e\.g\. data\.val\); got tuple$"):
        filtering.denoise(net, (val.x, val.y))
    with pytest.raises(TypeError, match=r"^test must be an rmtlib\.data\.Split \(e\.g\. data\.test\); got tuple$"):
        filtering.denoise(net, val, test=(val.x, val.y))
    # one model: `test` is one Split, not a per-member list
    with pytest.raises(TypeError, match=r"^test must be an rmtlib\.data\.Split \(e\.g\. data\.test\); got list$"):
        filtering.denoise(net, val, test=[val])
    # one analysable layer: nothing to filter besides the output layer
    one = nn.Sequential(nn.Linear(6, 3)).double()
    with pytest.raises(ValueError, match=r"^denoise needs at least one hidden layer besides the output layer$"):
        filtering.denoise(one, val)


def test_denoise_ensemble_refusals_are_whole(no_work):
    nets, val = [_net(), _net()], _split()
    with pytest.raises(ValueError, match=r"^val has 3 entries for 2 models; give one per model or one for all$"):
        filtering.denoise(nets, [val] * 3)
    with pytest.raises(ValueError, match=r"^test has 1 entries for 2 models; give one per model or one for all$"):
        filtering.denoise(nets, val, test=[val])
    with pytest.raises(ValueError, match=r"^the ensemble is empty; give at least one model$"):
        filtering.denoise([], val)
    with pytest.raises(TypeError, match=r"^ensemble member 1 is a str, not a torch\.nn\.Module$"):
        filtering.denoise([nets[0], "net"], val)


def test_removal_sweep_refuses_an_empty_ensemble_whole():
    with pytest.raises(ValueError, match=r"^the ensemble is empty; give at least one model$"):
        filtering.removal_sweep([], ["fc1"], [0.0], {"val": _split()}, splits=("val",))
    with pytest.raises(TypeError, match=r"^ensemble member 0 is a int, not a torch\.nn\.Module$"):
        filtering.removal_sweep([3, _net()], ["fc1"], [0.0], {"val": _split()}, splits=("val",))


def test_denoise_accepts_the_limits(monkeypatch):
    # batch_size 1 (the bound itself) and a model with exactly two layers (one hidden + output)
    seen = []

    def stop(model, split, batch, device):
        seen.append(batch)
        raise _Stop

    monkeypatch.setattr(filtering, "_accuracy", stop)
    with pytest.raises(_Stop):
        filtering.denoise(_net(), _split(), batch_size=1)
    two = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    with pytest.raises(_Stop):
        filtering.denoise(two, _split())
    # the default batch size is 1000 (the documented signature)
    assert seen == [1, 1000]


# --------------------------------------------------------------------------- fractions
def _fractions_seen(monkeypatch, **kwargs):
    got = []

    def spy(model, layer_names, fractions, data, **kw):
        got.append(np.array(fractions, dtype=float))
        raise _Stop

    monkeypatch.setattr(filtering, "removal_sweep", spy)
    with pytest.raises(_Stop):
        filtering.denoise(_net(), _split(), shift=False, **kwargs)
    return got[0]


def test_denoise_default_fractions_are_0_to_1_in_steps_of_002(monkeypatch):
    fr = _fractions_seen(monkeypatch)
    assert len(fr) == 51
    np.testing.assert_allclose(fr, np.arange(51) / 50, rtol=0, atol=1e-15)


@pytest.mark.parametrize("given, want", [
    ([0.0, 0.5, 1.0], [0.0, 0.5, 1.0]),   # starts with 0: used as given (no second 0)
    ([0.5, 1.0], [0.0, 0.5, 1.0]),        # "change nothing" added in front
    ([1.0], [0.0, 1.0]),
    ([0.0], [0.0]),
])
def test_denoise_always_has_the_change_nothing_candidate(monkeypatch, given, want):
    assert _fractions_seen(monkeypatch, fractions=given).tolist() == want


def test_denoise_without_zero_given_keeps_a_layer_whose_removal_hurts():
    # fractions without 0: removing all of fc1's 8 values (f = 1) or half of them changes the
    # predictions of a trained net; "change nothing" (k = 0) is still a candidate and wins only
    # when no removal does better; the reference: the accuracy of the net itself
    net, val, _ = _toy(3)
    _, report = filtering.denoise(net, val, shift=False, layers=["fc1"], fractions=[1.0], progress_bar=False)
    assert report.removed.tolist() == [0]
    with torch.no_grad():
        acc = float((net(val.x).argmax(1) == val.y).double().mean())
    assert report.val_acc.tolist() == [acc] and report.attrs["val_before"] == acc


def test_denoise_filters_only_the_layers_given():
    net, val, test = _toy(1)
    _, report = filtering.denoise(net, val, shift=False, test=test, layers=["fc1"], fractions=[0.0, 0.5],
                                  progress_bar=False)
    assert report.layer.tolist() == ["fc1"] and report.M.tolist() == [6]


# --------------------------------------------------------------------------- sweeps: options passed on
def test_denoise_passes_method_and_batch_size_to_its_sweeps(monkeypatch):
    net, val, _ = _toy(2)
    real = filtering.removal_sweep
    calls = []

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(filtering, "removal_sweep", spy)
    filtering.denoise(net, val, shift=True, fractions=[0.0, 0.5], method="naive", batch_size=7, progress_bar=False)
    assert len(calls) >= 2  # fc2 then fc1, each at least the plain sweep
    assert all(kw["method"] == "naive" and kw["batch_size"] == 7 and kw["splits"] == ("val",) for kw in calls)


# --------------------------------------------------------------------------- progress bars
def test_denoise_bar_by_default_named_and_cleared(bars_on, capsys):
    net, val = _net(), _split()
    filtering.denoise(net, val, shift=False, fractions=[0.0, 1.0])
    err = capsys.readouterr().err
    # tqdm draws "\rdenoise: ..." and, with leave=False, wipes the line at the end (no newline)
    assert err.startswith("\rdenoise: ") and "\n" not in err


def test_denoise_sweeps_draw_no_bars(bars_on, capsys):
    # the naive sweep draws a bar when asked; denoise's inner sweeps never ask
    net, val = _net(), _split()
    filtering.denoise(net, val, shift=False, fractions=[0.0, 1.0], method="naive", progress_bar=False)
    assert capsys.readouterr().err == ""
    filtering.denoise(net, val, shift=False, fractions=[0.0, 1.0], method="naive", progress_bar=True)
    err = capsys.readouterr().err
    assert "denoise" in err and "removal sweep" not in err


# --------------------------------------------------------------------------- ensemble routing
def _spy_member_by_member(monkeypatch, seen):
    """Replace the member-by-member route by a spy that records what it was given into `seen`."""
    def each(fn, models, per_member, shared):
        seen.update(route="each", fn=fn, per_member=per_member, shared=shared)
        return "each"

    monkeypatch.setattr(filtering, "_for_each_member", each)
    return seen


@pytest.fixture
def routes(monkeypatch):
    """Which route an ensemble takes: the batched one or member by member (with what)."""
    seen = {}

    def batched(models, vals, tests, order, shift_set, fr, batch_size, dev):
        seen.update(route="batched", vals=vals, tests=tests, order=order, dev=dev)
        return "batched"

    monkeypatch.setattr(filtering, "_denoise_ensemble", batched)
    return _spy_member_by_member(monkeypatch, seen)


def test_ensemble_denoise_runs_in_one_batch_when_it_can(routes):
    nets, val, test = [_net(), _net()], _split(), _split(seed=1)
    assert filtering.denoise(nets, val) == "batched"
    assert routes["order"] == ["fc2", "fc1"] and routes["tests"] is None
    # per-member splits of one size, test splits of one size too: still one batch
    assert filtering.denoise(nets, [val, _split(seed=2)], test=[test, _split(seed=3)]) == "batched"
    assert len(routes["tests"]) == 2 and routes["tests"][1] is not test


def test_ensemble_denoise_member_by_member_otherwise(routes):
    nets, val, test = [_net(), _net()], _split(), _split(seed=1)
    # method="naive": member by member
    assert filtering.denoise(nets, val, method="naive") == "each"
    # val splits of different sizes
    assert filtering.denoise(nets, [val, _split(n=11)]) == "each"
    # val splits of one size, test splits of different sizes
    assert filtering.denoise(nets, val, test=[test, _split(n=12)]) == "each"
    # not nn.Sequential
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = _net()

        def forward(self, x):
            return self.seq(x)
    assert filtering.denoise([Net(), Net()], val) == "each"


def test_ensemble_denoise_passes_every_option_member_by_member(routes):
    nets, val, test = [_net(), _net()], _split(), _split(seed=1)
    out = filtering.denoise(nets, val, test=[test, test], shift=False, layers=["fc1"], shift_layers=["fc2"],
                            fractions=[0.5, 1.0], method="naive", batch_size=7, device="cpu", progress_bar=False)
    assert out == "each" and routes["fn"] is filtering.denoise
    assert routes["per_member"]["val"] == [val, val] and routes["per_member"]["test"] == [test, test]
    shared = dict(routes["shared"])
    fr = shared.pop("fractions")
    assert np.array_equal(fr, [0.0, 0.5, 1.0])
    assert shared == dict(shift=False, layers=["fc1"], shift_layers=["fc2"], method="naive", batch_size=7,
                          device="cpu", progress_bar=False)
    # defaults passed on as they are: shift True, no test
    filtering.denoise(nets, val, method="naive")
    assert routes["per_member"]["test"] is None
    shared = dict(routes["shared"])
    shared.pop("fractions")
    assert shared == dict(shift=True, layers=None, shift_layers=None, method="naive", batch_size=1000,
                          device=None, progress_bar=True)


def test_ensemble_denoise_member_by_member_with_tests_reports_them():
    # the real fallback (naive): every member's report has its test accuracy, equal to the member alone
    (a, val, test), (b, _, test_b) = _toy(1), _toy(2)
    many = filtering.denoise([a, b], val, test=[test, test_b], shift=False, fractions=[0.0, 0.5], method="naive",
                             progress_bar=False)
    for net, t, (_, rep) in zip((a, b), (test, test_b), many):
        _, alone = filtering.denoise(net, val, test=t, shift=False, fractions=[0.0, 0.5], method="naive",
                                     progress_bar=False)
        assert rep.test_acc.tolist() == alone.test_acc.tolist()
        assert rep.attrs["test_after"] == alone.attrs["test_after"]


# --------------------------------------------------------------------------- devices (meta: shapes only)
META = "meta-for-test"


@pytest.fixture
def meta_device(monkeypatch):
    """`resolve_device` answering the "meta" device for META (the real one refuses it)."""
    real = filtering.resolve_device
    monkeypatch.setattr(filtering, "resolve_device",
                        lambda d=None: torch.device("meta") if d == META else real(d))


def test_ensemble_denoise_device(routes, meta_device):
    val = _split()
    on_meta = [_net().to("meta"), _net().to("meta")]
    # no device given: the members' own device
    filtering.denoise(on_meta, val)
    assert routes["dev"] == torch.device("meta")
    # a device given: that one
    filtering.denoise([_net(), _net()], val, device=META)
    assert routes["dev"] == torch.device("meta")
    filtering.denoise(on_meta, val, device="cpu")
    assert routes["dev"] == torch.device("cpu")


def test_denoise_device(monkeypatch, meta_device):
    seen = []

    def stop(model, split, batch, device):
        seen.append((device, next(model.parameters()).device))
        raise _Stop

    monkeypatch.setattr(filtering, "_accuracy", stop)
    with pytest.raises(_Stop):  # a CPU model on the device asked for
        filtering.denoise(_net(), _split(), device=META)
    with pytest.raises(_Stop):  # no device given: where the model is
        filtering.denoise(_net().to("meta"), _split())
    meta = torch.device("meta")
    assert seen == [(meta, meta), (meta, meta)]


# --------------------------------------------------------------------------- _ensemble_plan
def _conv_net(groups=1):
    return nn.Sequential(nn.Conv2d(2, 4, 3, groups=groups), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))


def test_ensemble_plan():
    nets = [_net(), _net()]
    assert filtering._ensemble_plan(nets, ["fc1", "fc2"]) == ["flatten", "fc1", "relu1", "fc2", "relu2", "out"]
    assert filtering._ensemble_plan([_conv_net(), _conv_net()], ["0"]) == ["0", "1", "2", "3"]
    # an unfiltered grouped convolution: no batched route
    assert filtering._ensemble_plan([_conv_net(2), _conv_net(2)], ["3"]) is None
    # a layer with parameters that is neither Linear nor Conv2d (no batched product for it)
    norm = [nn.Sequential(nn.Linear(6, 4), nn.LayerNorm(4), nn.Linear(4, 3)) for _ in range(2)]
    assert filtering._ensemble_plan(norm, ["0"]) is None
    # not nn.Sequential, or another architecture
    assert filtering._ensemble_plan([_net(), nn.ModuleList(_net().children())], ["fc1"]) is None
    assert filtering._ensemble_plan([_net(), _net(widths=(8, 5))], ["fc1"]) is None
    # a filtered layer that is not a child of the Sequential
    nested = [nn.Sequential(nn.Sequential(nn.Linear(6, 4)), nn.Linear(4, 3)) for _ in range(2)]
    assert filtering._ensemble_plan(nested, ["0.0"]) is None


# --------------------------------------------------------------------------- _group_size, _stacked_split
class _K:
    def __init__(self, K):
        self.K = K


def _width_net(width):
    # activations per sample: input 1, hidden `width`, output 1: the widest is `width`
    return nn.Sequential(nn.Linear(1, width), nn.Linear(width, 1)).double()


def test_group_size_by_hand():
    cpu = torch.device("cpu")
    x = torch.zeros(5, 1, dtype=torch.float64)
    shared = (x, None, True)
    # 2e7 // (K batch widest): K 2, batch 100, widest 50 -> 2000 groups of fractions, capped at F
    assert filtering._group_size(_K(2), [_width_net(50)], shared, 100, 5000, cpu) == 2000
    assert filtering._group_size(_K(2), [_width_net(50)], shared, 100, 30, cpu) == 30
    # exactly 2e7 numbers per group of one: 1 (and never 0)
    assert filtering._group_size(_K(1), [_width_net(20000)], shared, 1000, 10, cpu) == 1
    assert filtering._group_size(_K(2), [_width_net(20000)], shared, 1000, 10, cpu) == 1
    # one fraction: one group
    assert filtering._group_size(_K(1), [_width_net(1)], shared, 1, 1, cpu) == 1
    # K = batch = widest = 1: 2e7 exactly (a bound hit exactly: not 2e7 + 1)
    assert filtering._group_size(_K(1), [_width_net(1)], shared, 1, 10**8, cpu) == 20_000_000
    # per-member images (K, N, ...): the widest from one member's first image
    per = (torch.zeros(2, 5, 1, dtype=torch.float64), None, False)
    assert filtering._group_size(_K(2), [_width_net(50)], per, 100, 5000, cpu) == 2000


def test_group_size_runs_the_widest_activation_on_the_device():
    # members on the (shapes-only) meta device, images on the CPU: the probe image must be moved
    net = _width_net(50).to("meta")
    x = torch.zeros(5, 1, dtype=torch.float64)
    assert filtering._group_size(_K(2), [net], (x, None, True), 100, 5000, torch.device("meta")) == 2000


def test_stacked_split_refuses_splits_of_different_sizes_whole():
    a, b = _split(n=3), _split(n=4, seed=1)
    with pytest.raises(ValueError, match=r"^the members' splits differ in size \(\[3, 4\]\); an ensemble is "
                                         r"evaluated in one batch only on splits of one size$"):
        filtering._stacked_split([a, b])


# --------------------------------------------------------------------------- shift and _ratio
def test_shift_refusals_are_whole():
    with pytest.raises(TypeError, match=r"^singular_values must be an array of numbers; got a string$"):
        filtering.shift("abc", 1.0, 0.25)
    with pytest.raises(ValueError, match=r"^singular_values must be >= 0$"):
        filtering.shift([2.0, -0.5], 1.0, 0.25)
    with pytest.raises(ValueError, match=r"^singular_values must be >= 0$"):
        filtering.shift_as_printed([-1e-300], 1.0, 0.25)
    # 1e308 / 1e-10 overflows: refused (naming sigma and the remedy), without an overflow warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"^singular_values / sigma overflows \(sigma = 1e-10\); pass sigma "
                                             r"on the scale of the singular values$"):
            filtering.shift([1.0, 1e308], 1e-10, 0.25)
    # zeros are allowed (a rank-deficient matrix) and stay where they are
    assert filtering.shift([0.0, 3.0], 1.0, 0.25)[0] == 0.0


@pytest.mark.parametrize("q, nu", [(0.6724, 1.82), (0.1865, 1.4318564576337838)])
def test_shift_just_above_the_edge_is_finite(q, nu):
    # 1.82 is the float just above the edge 1 + sqrt(0.6724) = 1 + 0.82 as float64 computes it,
    # so it is shifted; there (1 - b)^2 - 4q/x^4 is 0 in exact arithmetic and rounds to -2.8e-17:
    # the square root must see it clipped at 0. Exactly on the edge theta = q^(1/4); one ulp
    # (2.2e-16) above it theta^2 = q^(1/2) + O(sqrt(2.2e-16)) ~ q^(1/2) + 1.5e-8, so theta
    # lies within 1e-7 of q^(1/4) (and the printed form, sqrt(2) theta, within 2e-7 of sqrt(2) q^(1/4))
    assert nu > 1 + math.sqrt(q)
    out = filtering.shift([nu], 1.0, q)
    assert np.isfinite(out).all() and abs(out[0] - q**0.25) < 1e-7
    printed = filtering.shift_as_printed([nu], 1.0, q)
    assert abs(printed[0] - math.sqrt(2) * q**0.25) < 2e-7


# --------------------------------------------------------------------------- removal_sweep's input door
@pytest.fixture
def no_svd(monkeypatch):
    """Any SVD raises: a refusal must come before the first one."""
    from rmtlib import spectra

    def fail(*a, **k):
        raise AssertionError("the sweep started work before refusing")
    monkeypatch.setattr(spectra, "svd", fail)


LAYERS = "valid layer names: \\['fc1', 'fc2', 'out'\\]"


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(method="slow"), ValueError, r"method must be one of \['fast', 'naive'\]; got 'slow'"),
    (dict(batch_size=0), ValueError, r"batch_size must lie in \[1, inf\); got 0"),
    (dict(shift="yes"), TypeError, r"shift must be True or False; got 'yes' \(str\)"),
    (dict(shift=1), TypeError, r"shift must be True or False; got 1 \(int\)"),
    (dict(fractions=[0.5, 1.25]), ValueError, r"fractions must be numbers in \[0, 1\]; got \[.*0\.5\)?, .*1\.25\)?\]"),
    (dict(fractions=[-0.25]), ValueError, r"fractions must be numbers in \[0, 1\]; got \[.*-0\.25\)?\]"),
    (dict(fractions="abc"), TypeError, r"fractions must be an array of numbers; got a string"),
    (dict(layer_names=3), TypeError, r"layer_names must be a layer name or a list of them; got int"),
    (dict(layer_names={"fc1"}), TypeError, r"layer_names must be a layer name or a list of them; got set"),
    (dict(layer_names=["fc1", 2]), TypeError, r"layer names must be strings; got 2 \(int\)"),
    (dict(layer_names=["fc7"]), ValueError, r"layer 'fc7' does not exist; " + LAYERS),
    (dict(layer_names=["fc1", "relu1"]), ValueError, r"layer 'relu1' is not a Linear or Conv layer; " + LAYERS),
    (dict(layer_names=[]), ValueError, r"give at least one layer name; " + LAYERS),
    (dict(shift=True, shift_layers=["out"]), ValueError,
     r"shift_layers \['out'\] are not among the swept layers \['fc1'\]; shift_layers must be a sublist of layer_names"),
    (dict(shift=True, shift_layers="fc2"), ValueError,
     r"shift_layers \['fc2'\] are not among the swept layers \['fc1'\]; shift_layers must be a sublist of layer_names"),
    (dict(data=(1, 2)), TypeError, r"data must be an rmtlib Dataset or a dict of Splits"),
    (dict(splits=("val", "bogus")), ValueError, r"unknown split 'bogus'; choose from \('train', 'val', 'test'\)"),
])
def test_removal_sweep_refusals_are_whole_and_come_first(no_svd, kwargs, error, message):
    val = _split()
    dataset = __import__("rmtlib.data", fromlist=["Dataset"]).Dataset(
        "toy", val, val, val, (0, 1, 2), torch.zeros(10, dtype=torch.bool), val.y)
    args = dict(layer_names=["fc1"], fractions=[0.0, 0.5], data=dataset, splits=("val",))
    args.update(kwargs)
    with pytest.raises(error, match="^" + message + "$"):
        filtering.removal_sweep(_net(), args.pop("layer_names"), args.pop("fractions"), args.pop("data"), **args)


def test_removal_sweep_accepts_the_limits():
    # batch_size 1, fractions exactly 0 and 1, one layer name as a string, shift_layers as a string,
    # a dict of Splits; shift=False ignores shift_layers (nothing is shifted: no check either)
    net, val, _ = _toy(4)
    a = filtering.removal_sweep(net, "fc1", [0.0, 1.0], {"val": val}, splits=("val",), batch_size=1)
    assert a.columns.tolist() == ["fraction", "k_fc1", "val_acc"] and a.k_fc1.tolist() == [0, 6]
    b = filtering.removal_sweep(net, ("fc1",), np.array([0.0, 1.0]), {"val": val}, splits=("val",),
                                shift=False, shift_layers="out")
    assert b.val_acc.tolist() == a.val_acc.tolist()
    with torch.no_grad():
        assert a.val_acc[0] == float((net(val.x).argmax(1) == val.y).double().mean())
    fits = {"fc1": types.SimpleNamespace(sigma=0.05, q=0.75)}
    c = filtering.removal_sweep(net, ["fc1", "fc2"], [0.0], {"val": val}, splits=("val",), shift=True,
                                shift_layers="fc1", fits=fits)
    assert c.columns.tolist() == ["fraction", "k_fc1", "k_fc2", "val_acc"]


# --------------------------------------------------------------------------- filtered_values
def test_filtered_values_refusals_and_limits():
    S = np.array([3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match=r"^k must lie in \[0, 3\]; got 4 \(the number of singular values is 3\)$"):
        filtering.filtered_values(S, 4, shift_values=False)
    with pytest.raises(ValueError, match=r"^k must lie in \[0, 3\]; got -1 \(the number of singular values is 3\)$"):
        filtering.filtered_values(S, -1, shift_values=False)
    with pytest.raises(TypeError, match=r"^k must be an integer; got 1\.5 \(float\)$"):
        filtering.filtered_values(S, 1.5, shift_values=False)
    with pytest.raises(TypeError, match=r"^shift_values must be True or False; got 'no' \(str\)$"):
        filtering.filtered_values(S, 1, shift_values="no")
    with pytest.raises(ValueError, match=r"^shifting needs an MP fit \(fit=\) or the matrix shape \(shape=\)$"):
        filtering.filtered_values(S, 1, shift_values=True)
    with pytest.raises(TypeError, match=r"^S must be an array of numbers; got a string$"):
        filtering.filtered_values("abc", 0, shift_values=False)
    with pytest.raises(ValueError, match=r"^S must be a 1-D array; got shape \(2, 2\)$"):
        filtering.filtered_values([[1.0, 2.0], [3.0, 4.0]], 0, shift_values=False)
    # the limits: k = 0 (nothing removed) and k = len(S) (everything), an int array's float copy
    assert filtering.filtered_values(S, 0, shift_values=False).tolist() == [3.0, 2.0, 1.0]
    assert filtering.filtered_values(S, 3, shift_values=False).tolist() == [0.0, 0.0, 0.0]
    assert filtering.filtered_values(np.array([3, 2, 1]), 1, shift_values=np.bool_(False)).tolist() == [3.0, 2.0, 0.0]
    # the input is not modified
    filtering.filtered_values(S, 2, shift_values=True, fit=types.SimpleNamespace(sigma=1.0, q=0.25))
    assert S.tolist() == [3.0, 2.0, 1.0]


# --------------------------------------------------------------------------- removal_sweep: routes, devices, bars
@pytest.fixture
def sweep_routes(monkeypatch):
    seen = {}

    def batched(models, names, layer_names, fr, datas, splits, shifted, fits, batch_size, dev):
        seen.update(route="batched", names=names, layer_names=layer_names, fr=fr, datas=datas, splits=splits,
                    shifted=shifted, fits=fits, batch_size=batch_size, dev=dev,
                    devices=[next(m.parameters()).device for m in models], training=[m.training for m in models])
        return "batched"

    monkeypatch.setattr(filtering, "_removal_sweep_ensemble", batched)
    return _spy_member_by_member(monkeypatch, seen)


def test_ensemble_removal_sweep_routes(sweep_routes, meta_device):
    nets, val, other = [_net(), _net()], _split(), _split(seed=1)
    nets[1].train()
    fits = {"fc1": types.SimpleNamespace(sigma=1.0, q=0.75)}
    out = filtering.removal_sweep(nets, "fc1", [0.5, 0.0], {"val": val}, splits=("val",), shift=True,
                                  shift_layers=["fc1"], fits=[fits, None], batch_size=9)
    r = sweep_routes
    assert out == "batched" and r["names"] == ["flatten", "fc1", "relu1", "fc2", "relu2", "out"]
    assert r["layer_names"] == ["fc1"] and r["fr"].tolist() == [0.5, 0.0] and r["splits"] == ("val",)
    assert r["shifted"] == {"fc1"} and r["fits"] == [fits, None] and r["batch_size"] == 9
    assert r["datas"] == [{"val": val}, {"val": val}]
    assert r["dev"] == torch.device("cpu") and r["training"] == [False, False]  # evaluated in eval mode
    # shift=False: nothing shifted, whatever shift_layers says
    filtering.removal_sweep(nets, ["fc1", "fc2"], [0.0], {"val": val}, splits=("val",), shift_layers=["fc1"])
    assert r["shifted"] == set() and r["fits"] == [None, None]
    # shift=True without shift_layers: every swept layer
    filtering.removal_sweep(nets, ["fc1", "fc2"], [0.0], [{"val": val}, {"val": other}], splits=("val",), shift=True)
    assert r["shifted"] == {"fc1", "fc2"} and r["datas"] == [{"val": val}, {"val": other}]
    # the device: the members' own, or the one asked for (models moved there)
    filtering.removal_sweep([_net().to("meta"), _net().to("meta")], ["fc1"], [0.0], {"val": val}, splits=("val",))
    assert r["dev"] == torch.device("meta")
    filtering.removal_sweep([_net(), _net()], ["fc1"], [0.0], {"val": val}, splits=("val",), device=META)
    assert r["dev"] == torch.device("meta") and r["devices"] == [torch.device("meta")] * 2
    # member by member: naive, or splits of different sizes in some split
    for kwargs in (dict(method="naive"), dict(data=[{"val": val, "test": val}, {"val": val, "test": _split(n=7)}])):
        args = dict(data={"val": val, "test": val}, splits=("val", "test"), shift=True, shift_layers=["fc2"],
                    fits=[fits, None], batch_size=9, device="cpu", progress_bar=False, method="fast")
        args.update(kwargs)
        out = filtering.removal_sweep(nets, ["fc1", "fc2"], [0.5], **args)
        assert out == "each" and r["fn"] is filtering.removal_sweep
        datas = args["data"] if isinstance(args["data"], list) else [args["data"]] * 2
        assert r["per_member"] == dict(data=datas, fits=[fits, None])
        shared = dict(r["shared"])
        assert shared.pop("fractions").tolist() == [0.5]
        assert shared == dict(layer_names=["fc1", "fc2"], splits=("val", "test"), shift=True, shift_layers=["fc2"],
                              method=args["method"], batch_size=9, device="cpu", progress_bar=False)
    three = {"train": other, "val": val, "test": val}
    filtering.removal_sweep(nets, ["fc1"], [0.5], three, method="naive")
    assert r["per_member"] == dict(data=[three] * 2, fits=[None, None])
    shared = dict(r["shared"])
    shared.pop("fractions")
    assert shared == dict(layer_names=["fc1"], splits=("train", "test"), shift=False, shift_layers=None,
                          method="naive", batch_size=1000, device=None, progress_bar=True)


def test_removal_sweep_moves_the_model_to_the_device(monkeypatch, meta_device):
    from rmtlib import spectra
    seen = []

    def stop(W, **kw):
        seen.append(W.device)
        raise _Stop

    monkeypatch.setattr(spectra, "svd", stop)
    with pytest.raises(_Stop):
        filtering.removal_sweep(_net(), ["fc1"], [0.0], {"val": _split()}, splits=("val",), device=META)
    with pytest.raises(_Stop):
        filtering.removal_sweep(_net().to("meta"), ["fc1"], [0.0], {"val": _split()}, splits=("val",))
    assert seen == [torch.device("meta")] * 2


def test_removal_sweep_naive_bar_by_default_named_and_cleared(bars_on, capsys):
    filtering.removal_sweep(_net(), ["fc1"], [0.0, 1.0], {"val": _split()}, splits=("val",), method="naive")
    err = capsys.readouterr().err
    assert err.startswith("\rremoval sweep (val): ") and "\n" not in err
    filtering.removal_sweep(_net(), ["fc1"], [0.0, 1.0], {"val": _split()}, splits=("val",), method="fast")
    assert capsys.readouterr().err == ""  # the fast route has no loop over fractions to show


# --------------------------------------------------------------------------- small pieces
def test_q_refusal_names_what_q_is():
    for fn in (filtering.shift, filtering.shift_as_printed):
        with pytest.raises(ValueError, match=r"^q must lie in \(0, 1\]; got 1\.5 \(q = M/N, the aspect ratio min/max\)$"):
            fn([2.0], 1.0, 1.5)
        with pytest.raises(ValueError, match=r"^q must lie in \(0, 1\]; got 0\.0 \(q = M/N, the aspect ratio min/max\)$"):
            fn([2.0], 1.0, 0.0)
        # the limits: q = 1 accepted (square matrix), sigma tiny but positive accepted
        assert fn([0.5], 1.0, 1.0).tolist() == [0.5]
        assert fn([0.0], 1e-300, 0.5).tolist() == [0.0]


@pytest.mark.parametrize("conv", [False, True])
def test_factored_layer_casts_and_moves_every_tensor(conv):
    from rmtlib import spectra
    torch.manual_seed(0)
    layer = (nn.Conv2d(2, 4, 3) if conv else nn.Linear(6, 4)).double()  # float64 weights and bias
    dec = spectra.svd(spectra.weight_matrix(layer))  # float64 on the CPU
    f = filtering._Factored(layer, dec, torch.float32, torch.device("meta"))
    tensors = [f.U, f.S, f.Vh, f.bias] + ([f.kernel] if conv else [])
    assert all(t.device.type == "meta" and t.dtype == torch.float32 for t in tensors)
    assert f.conv is conv and f.module is layer
    assert tuple(f.U.shape) == (4, 4) and tuple(f.S.shape) == (4,)
    if conv:
        assert tuple(f.kernel.shape) == (4, 2, 3, 3)
    # no bias: None
    nobias = nn.Linear(6, 4, bias=False)
    assert filtering._Factored(nobias, spectra.svd(nobias.weight), torch.float64, torch.device("cpu")).bias is None


def test_accuracy_evaluates_on_the_device_in_batches(monkeypatch):
    from rmtlib import train
    seen = []

    def spy(model, split, batch_size=2048):
        seen.append((next(model.parameters()).device, batch_size))
        return 0.25, 1.0

    monkeypatch.setattr(train, "evaluate", spy)
    assert filtering._accuracy(_net(), _split(), 7, torch.device("meta")) == 0.25
    assert seen == [(torch.device("meta"), 7)]


@pytest.mark.parametrize("layer", [
    nn.Linear(6, 4), nn.Linear(6, 4, bias=False),
    nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=2), nn.Conv2d(3, 4, 3, dilation=2, bias=False),
], ids=["linear", "linear-nobias", "conv-dilated", "conv-nobias"])
def test_factored_layer_equals_the_layer(layer):
    # U diag(S) Vh applied in two steps equals the layer itself (float64: to 1e-12); with G = 2
    # groups of singular values, the second group halving them halves the output without the bias
    from rmtlib import spectra
    torch.manual_seed(1)
    layer = layer.double()
    dec = spectra.svd(spectra.weight_matrix(layer))
    f = filtering._Factored(layer, dec, torch.float64, torch.device("cpu"))
    x = torch.randn(5, 6, dtype=torch.float64) if isinstance(layer, nn.Linear) else \
        torch.randn(5, 3, 9, 9, dtype=torch.float64)
    p = f.project(x)
    out = f.expand(p.expand(2, *p.shape), torch.stack([dec.S, dec.S / 2]))
    with torch.no_grad():
        ref = layer(x)
        nobias = ref if layer.bias is None else ref - (layer.bias if isinstance(layer, nn.Linear)
                                                         else layer.bias[:, None, None])
    torch.testing.assert_close(out[0], ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[1] - (out[0] - nobias), nobias / 2, rtol=0, atol=1e-12)


def test_sequential_plan():
    net = _net()
    children = list(net.named_children())
    plan = filtering._sequential_plan(net, ["fc2", "fc1"])
    assert plan is not None and plan[0] == children and plan[1] == [1, 3]
    assert filtering._sequential_plan(net, ["out"])[1] == [5]
    conv = _conv_net()
    assert filtering._sequential_plan(conv, ["3", "0"])[1] == [0, 3]
    assert filtering._sequential_plan(_conv_net(2), ["0"]) is None       # a grouped convolution filtered
    assert filtering._sequential_plan(_conv_net(2), ["3"])[1] == [3]     # (unfiltered: not its concern)
    assert filtering._sequential_plan(net, ["fc1", "relu1"]) is None      # not a Linear / Conv2d child
    nested = nn.Sequential(nn.Sequential(nn.Linear(6, 4)), nn.Linear(4, 3))
    assert filtering._sequential_plan(nested, ["0.0"]) is None            # not a child
    assert filtering._sequential_plan(nested, ["1"])[1] == [1]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc1(x)
    assert filtering._sequential_plan(Net(), ["fc1"]) is None              # not nn.Sequential


def test_ensemble_removal_sweep_more_routes(sweep_routes):
    val = _split()
    nets = [_net(), _net()]
    # one member: still an ensemble (a list back), batched
    assert filtering.removal_sweep([_net()], ["fc1"], [0.0], {"val": val}, splits=("val",)) == "batched"
    assert sweep_routes["layer_names"] == ["fc1"]
    # shift in a sublist of the swept layers only
    filtering.removal_sweep(nets, ["fc1", "fc2"], [0.0], {"val": val}, splits=("val",), shift=True,
                            shift_layers=["fc2"])
    assert sweep_routes["shifted"] == {"fc2"}
    with pytest.raises(ValueError, match=r"^data has 3 entries for 2 models; give one per model or one for all$"):
        filtering.removal_sweep(nets, ["fc1"], [0.0], [{"val": val}] * 3, splits=("val",))
    with pytest.raises(ValueError, match=r"^fits has 1 entries for 2 models; give one per model or one for all$"):
        filtering.removal_sweep(nets, ["fc1"], [0.0], {"val": val}, splits=("val",), fits=[{}])


def test_removal_sweep_fits_only_the_shifted_layers_without_goodness_of_fit(monkeypatch):
    from rmtlib import marchenko_pastur as mp
    calls = []

    def spy(S, shape, **kw):  # a made-up fit (a real one needs >= 20 values)
        calls.append((len(S), tuple(shape), kw))
        return types.SimpleNamespace(sigma=0.05, q=len(S) / max(shape))

    monkeypatch.setattr(mp, "fit", spy)
    net, val, _ = _toy(5, widths=(40, 30))
    data = {"val": val}
    given = {"fc2": types.SimpleNamespace(sigma=0.05, q=0.75)}
    # fc2's fit given, fc1 not shifted: no fit at all
    filtering.removal_sweep(net, ["fc1", "fc2"], [0.0, 0.5], data, splits=("val",), shift=True,
                            shift_layers=["fc2"], fits=given)
    assert calls == []
    # fc1 shifted without a fit: fitted once, on its own values and shape, without the goodness of
    # fit (its null would be simulated and cached); fc2 (not shifted) is not fitted
    filtering.removal_sweep(net, ["fc1", "fc2"], [0.0, 0.5], data, splits=("val",), shift=True,
                            shift_layers=["fc1"], fits=given)
    assert len(calls) == 1 and calls[0][:2] == (6, (40, 6)) and not calls[0][2].get("gof", True)


def test_removal_sweep_bounds_the_batched_activations(monkeypatch):
    # group = max(1, min(F, 2e7 // (batch_size * widest))): _net() is 6 -> 8 -> 6 -> 3, widest 8
    seen = []

    def spy(model, layers_sv, plan, x, y, batch, group):
        seen.append((batch, group))
        raise _Stop

    monkeypatch.setattr(filtering, "_fast_correct", spy)
    fr = [0.0, 0.25, 0.5, 0.75, 1.0]
    for batch in (1, 10**6, 2_500_000, 5_000_000):
        with pytest.raises(_Stop):
            filtering.removal_sweep(_net(), ["fc1"], fr, {"val": _split()}, splits=("val",), batch_size=batch)
    # 2e7 // 8 = 2.5e6 > 5; 2e7 // 8e6 = 2; 2e7 // 2e7 = 1; 2e7 // 4e7 = 0 -> at least 1
    assert seen == [(1, 5), (10**6, 2), (2_500_000, 1), (5_000_000, 1)]


def test_filtered_values_fits_from_the_shape_without_goodness_of_fit(monkeypatch):
    from rmtlib import marchenko_pastur as mp
    calls = []

    def spy(S, shape, **kw):  # a made-up fit: sigma 1, q 1/4 (edge 1.5)
        calls.append((np.asarray(S).tolist(), shape, kw))
        return types.SimpleNamespace(sigma=1.0, q=0.25)

    monkeypatch.setattr(mp, "fit", spy)
    out = filtering.filtered_values([3.0, 1.5, 1.0], 1, shift_values=True, shape=(12, 3))
    assert len(calls) == 1 and calls[0][:2] == ([3.0, 1.5, 1.0], (12, 3)) and not calls[0][2].get("gof", True)
    # 3 is shifted: x^2 - q - 1 = 7.75, theta^2 = (7.75 + sqrt(7.75^2 - 1)) / 2; 1.5 is on the edge (kept)
    assert out[0] == pytest.approx(math.sqrt((7.75 + math.sqrt(7.75**2 - 1)) / 2), rel=1e-14)
    assert out[1:].tolist() == [1.5, 0.0]
