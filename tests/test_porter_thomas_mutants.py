"""porter_thomas as a whole module (issue 17, session 4): tests written against the survivors of
the whole-module mutation run. Every expectation is independent of the code under test: whole
error messages naming the argument, hand-worked values on exact boundaries, numpy/scipy
references computed another way. Fast: small matrices and small nulls (samples=100..500)."""
import math
import os
import re
import warnings

import numpy as np
import pytest
import torch
from scipy import special, stats

from rmtlib import porter_thomas as pt
from rmtlib._io import cache_dir, load_checked


def _outside_the_module(rec):
    """Every warning is attributed to a caller, not to a line of porter_thomas.py itself
    (a missing stacklevel would point at the `warnings.warn` line)."""
    return all(os.path.basename(w.filename) != "porter_thomas.py" for w in rec)


def _raises(exc, message):
    """pytest.raises matching the WHOLE message (a mutated name or text fails it)."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


@pytest.fixture
def no_work(monkeypatch):
    """Make any SVD fail loudly: arguments must be refused before the long work starts."""
    def boom(*a, **k):
        raise AssertionError("work started before the arguments were checked")
    monkeypatch.setattr(pt.spectra, "svd", boom)


def _noise(rows, cols, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g, dtype=torch.float64) / math.sqrt(max(rows, cols))


# --------------------------------------------------------------------------- analyze: arguments
@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(seed="a"), TypeError, "seed must be an integer; got 'a' (str)"),
    (dict(window=0), ValueError, "window must lie in [1, inf); got 0"),
    (dict(window=-1), ValueError, "window must lie in [1, inf); got -1"),
    (dict(window=2), ValueError, "window must be odd (a centred window); got 2"),
    (dict(samples=99), ValueError, "samples must lie in [100, inf); got 99"),
    (dict(fpr=0), ValueError, "fpr must lie in (0, 1); got 0.0"),
    (dict(fpr=-0.1), ValueError, "fpr must lie in (0, 1); got -0.1"),
    (dict(fpr=1), ValueError, "fpr must lie in (0, 1); got 1.0"),
    (dict(fpr=1.5), ValueError, "fpr must lie in (0, 1); got 1.5"),
    (dict(confirm=0), ValueError, "confirm must lie in [1, inf); got 0"),
    (dict(control=1), TypeError, "control must be True or False; got 1"),
])
def test_analyze_refuses_bad_arguments_by_name_before_any_work(no_work, kwargs, exc, message):
    with _raises(exc, message):
        pt.analyze(_noise(20, 12), **kwargs)


def test_analyze_messages_for_short_constant_zero_and_rank_one_matrices():
    with _raises(ValueError, "the left singular vectors of a (9, 12) matrix have 9 entries; "
                             "a KS test needs at least 10 (try the other side)"):
        pt.analyze(_noise(9, 12), samples=100)
    with _raises(ValueError, "W is all zero: its singular vectors are arbitrary, there is nothing "
                             "to test; pass a weight matrix with varying entries"):
        pt.analyze(torch.zeros(12, 12), samples=100)
    with _raises(ValueError, "W is constant: its singular vectors are arbitrary, there is nothing "
                             "to test; pass a weight matrix with varying entries"):
        pt.analyze(torch.full((12, 12), -0.5), samples=100)
    # one non-zero column: singular values (|c|, 0, ..., 0), rank exactly 1
    W = torch.zeros(20, 12, dtype=torch.float64)
    W[:, 0] = torch.arange(1, 21, dtype=torch.float64)
    with _raises(ValueError, "W has numerical rank 1 (of 12): its singular vectors "
                             "are not determined by it, there is nothing to test"):
        pt.analyze(W, samples=100)


def test_analyze_boundaries_of_its_arguments_are_accepted():
    W = _noise(10, 12, seed=1)  # exactly MIN_LENGTH = 10 entries on the left side
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer vectors than a window
        res = pt.analyze(W, samples=100, confirm=1, control=False)
    assert res.length == 10 and len(res.pvalues) == 10 and res.alpha == pytest.approx(0.05 / 2)


def test_analyze_of_a_rank_two_matrix_tests_two_vectors_and_says_so():
    # rank 2 is the smallest rank analysed; the warning counts the 10 dropped vectors
    g = torch.Generator().manual_seed(3)
    W = torch.randn(30, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 12, generator=g, dtype=torch.float64)
    with pytest.warns(UserWarning) as rec:
        res = pt.analyze(W, samples=100, window=1, control=False)
    msgs = [str(w.message) for w in rec]
    assert "W has numerical rank 2 < 12: the singular vectors of the 10 zero singular values are " \
           "arbitrary and are left out" in msgs
    assert len(res.pvalues) == 2 and len(res.singular_values) == 2
    assert _outside_the_module(rec)


def test_analyze_warns_about_a_small_layer_with_the_whole_message():
    with pytest.warns(UserWarning) as rec:
        pt.analyze(_noise(20, 12, seed=2), samples=100, control=False)
    assert [str(w.message) for w in rec] == [
        "only 12 singular vectors, fewer than one window of 15: only strongly non-random single "
        "vectors can be detected here"]
    assert _outside_the_module(rec)


def test_a_full_rank_layer_of_exactly_one_window_does_not_warn():
    # 15 singular vectors, window 15, full rank, control on: nothing to warn about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = pt.analyze(_noise(30, 15, seed=4), samples=100)
    assert len(res.pvalues) == 15


def test_analyze_float32_input_is_computed_in_float64():
    W = _noise(20, 15, seed=5).to(torch.float32)
    res = pt.analyze(W, samples=100, control=False)
    ref = np.linalg.svd(W.numpy().astype(np.float64), compute_uv=False)
    # float64 SVD of the same (float32-valued) entries: agreement to ~1e-14, a float32 SVD to ~1e-7
    assert np.allclose(res.singular_values, ref, rtol=1e-12, atol=0)


def test_numpy_float32_rank_deficiency_is_judged_at_float32_precision():
    # a rank-5 product rounded to float32: its 10 "zero" singular values are ~1e-7 of the
    # largest, above float64's threshold (20 * 2.2e-16) but below float32's (20 * 1.2e-7)
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((20, 5)) @ rng.standard_normal((5, 15))).astype(np.float32)
    s = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    assert s[5] / s[0] > 1e-12 and s[5] / s[0] < 20 * np.finfo(np.float32).eps
    with pytest.warns(UserWarning, match=r"^W has numerical rank 5 < 15"):
        res = pt.analyze(W, samples=100, control=False, window=3)
    assert len(res.pvalues) == 5


@pytest.mark.filterwarnings("error")  # nothing to warn about (no deprecated numpy calls either)
def test_analyze_accepts_nested_lists():
    W = _noise(20, 15, seed=6)
    res = pt.analyze(W.tolist(), samples=100)
    assert np.allclose(res.singular_values, np.linalg.svd(W.numpy(), compute_uv=False), rtol=1e-12)


def test_analyze_defaults_seed_samples_confirm_and_control_seed():
    W = _noise(24, 15, seed=7)
    res = pt.analyze(W)
    U = np.linalg.svd(W.numpy(), full_matrices=False)[0].T  # left vectors as rows (length 24)
    d = [stats.kstest(u, stats.norm(scale=1 / math.sqrt(24)).cdf).statistic for u in U]
    null = pt.ks_null(24, samples=50_000, seed=0)
    assert np.allclose(res.pvalues, pt.pvalues_from_null(d, null), atol=1e-12)
    assert res.alpha == pytest.approx(0.05 / 4, rel=1e-15) and res.fpr == 0.05
    # the control is the Gaussian matrix of seed + 1 = 1
    C = pt.gaussian_control((24, 15), seed=1).numpy()
    assert np.allclose(res.control_singular_values, np.linalg.svd(C, compute_uv=False), rtol=1e-12)
    assert res.control_smoothed.shape == (15,) and res.control_n_above is not None


def test_analyze_control_seed_follows_the_seed_and_is_absent_when_off():
    W = _noise(20, 15, seed=8)
    res = pt.analyze(W, seed=2, samples=100)
    C = pt.gaussian_control((20, 15), seed=3).numpy()
    assert np.allclose(res.control_singular_values, np.linalg.svd(C, compute_uv=False), rtol=1e-12)
    off = pt.analyze(W, seed=2, samples=100, control=False)
    assert off.control_singular_values.shape == (0,) and off.control_smoothed.shape == (0,)
    assert off.control_n_above is None


def test_analyze_passes_window_fpr_and_confirm_to_the_rule():
    W = _noise(40, 20, seed=9)
    res = pt.analyze(W, window=3, fpr=0.2, confirm=1, samples=200, control=False)
    assert res.fpr == 0.2 and res.alpha == pytest.approx(0.1, rel=1e-15) and res.window == 3
    p = res.pvalues
    want_raw = int(np.argmax(p >= 0.1)) if (p >= 0.1).any() else len(p)
    assert res.n_raw == want_raw
    # below the raw top, the curve is the centred 3-window mean cut at the ends (by hand)
    rest = p[res.n_raw:]
    ref = np.array([rest[max(i - 1, 0): i + 2].mean() for i in range(len(rest))])
    assert np.allclose(res.smoothed[res.n_raw:], ref, rtol=1e-12)


def _localized(rows, cols, k, seed=0):
    """Noise plus k planted singular vectors, each supported on 5 entries (p-value ~ 0)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64) / math.sqrt(rows)
    U = torch.zeros(rows, k, dtype=torch.float64)
    for j in range(k):
        U[5 * j: 5 * j + 5, j] = 1 / math.sqrt(5)
    V = torch.linalg.qr(torch.randn(cols, k, generator=g, dtype=torch.float64))[0]
    return W + U @ torch.diag(torch.tensor([50.0 - 10 * j for j in range(k)], dtype=torch.float64)) @ V.T


def test_boundary_value_when_every_vector_is_informative():
    # left vectors of a diagonal (20 x 12) matrix are unit basis vectors: p = 0 for all 12
    W = torch.zeros(20, 12, dtype=torch.float64)
    W[:12, :12] = torch.diag(torch.arange(12, 0, -1, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pt.analyze(W, samples=100, control=False)
    assert res.n_above == 12 and res.n_raw == 12
    assert res.boundary == 1.0 and res.fraction_above == 1.0  # the smallest singular value


def test_boundary_value_with_one_informative_vector():
    W = _localized(120, 60, 1, seed=0)
    res = pt.analyze(W, samples=500, control=False)
    sv = np.linalg.svd(W.numpy(), compute_uv=False)
    assert res.n_above == 1
    assert res.boundary == pytest.approx(sv[1], rel=1e-12)


# --------------------------------------------------------------------------- small helpers
def test_rows_messages_name_the_vectors():
    with _raises(ValueError, "vectors: vectors of length 5 are too short for a meaningful KS test "
                             "(need at least 10 entries)"):
        pt.ks_distance(np.ones((2, 5)) / math.sqrt(5))
    with _raises(ValueError, "vectors must be a 1-D array or a 2-D matrix; got shape (2, 2, 12) "
                             "(use rmtlib.spectra.weight_matrix(layer) for a layer's weight)"):
        pt.ks_distance(np.ones((2, 2, 12)))
    with _raises(ValueError, "vectors: 1 of 1 rows are not unit vectors (for example norm 2); pass "
                             "singular vectors, or normalise each row by its Euclidean norm first"):
        pt.ks_distance(np.full(16, 0.5))


def test_rows_names_the_argument_it_is_given():
    # the private door takes the caller's name and passes it on to both checks
    with _raises(ValueError, "u: 1 of 1 rows are not unit vectors (for example norm 2); pass "
                             "singular vectors, or normalise each row by its Euclidean norm first"):
        pt._rows(np.full(16, 0.5), "u")
    with _raises(ValueError, "u must be a 1-D array or a 2-D matrix; got shape (2, 2, 12) "
                             "(use rmtlib.spectra.weight_matrix(layer) for a layer's weight)"):
        pt._rows(np.ones((2, 2, 12)), "u")
    assert pt._rows(np.full(16, 2.0), "u", unit=False).shape == (1, 16)


def test_ks_distance_of_one_vector():
    v = np.full(10, 1 / math.sqrt(10))  # a 1-D vector is one row: D = Phi(1) (hand-worked)
    assert pt.ks_distance(v).shape == (1,)
    assert pt.ks_distance(v)[0] == pytest.approx(stats.norm.cdf(1.0), rel=1e-12)


def test_check_null_boundaries_and_messages():
    ok = np.array([0.0, 0.5, 1.0])  # a KS distance may be exactly 0 or 1
    assert pt._check_null(ok, 3) is ok
    with _raises(ValueError, "contains distances outside [0, 1]"):
        pt._check_null(np.array([0.1, 0.2, 1.5]), 3)
    with _raises(ValueError, "is not sorted"):
        pt._check_null(np.array([0.3, 0.2, 0.4]), 3)
    with _raises(ValueError, "contains NaN or Inf"):
        pt._check_null(np.array([0.1, np.inf, 0.3]), 3)


@pytest.mark.filterwarnings("error")  # np.finfo(None) is deprecated: it will raise in numpy
def test_input_eps_is_the_precision_the_input_came_in():
    assert pt._input_eps(np.zeros(3, dtype=np.float32)) == 2.0 ** -23
    assert pt._input_eps(np.zeros(3, dtype=np.float16)) == 2.0 ** -10
    assert pt._input_eps(np.zeros(3, dtype=np.int64)) == 2.0 ** -52
    assert pt._input_eps([[1.0, 2.0]]) == 2.0 ** -52
    assert pt._input_eps(torch.zeros(2, dtype=torch.bfloat16)) == 2.0 ** -7


def test_numerical_rank_by_hand():
    eps = 1 / 16  # dyadic values: the threshold S[0] * max(shape) * eps is exact
    assert pt._numerical_rank(np.array([1.0, 0.25]), (4, 2), eps) == 1  # 0.25 == threshold: not counted
    assert pt._numerical_rank(np.array([1.0, 0.0, 0.0]), (3, 3), 2.0 ** -52) == 1
    assert pt._numerical_rank(np.array([0.5, 0.25]), (2, 2), 2.0 ** -52) == 2
    assert pt._numerical_rank(np.array([0.0, 0.0]), (2, 2), 2.0 ** -52) == 0


def test_null_path_is_under_the_ks_null_cache_folder():
    assert pt._null_path(20, 100, 3) == cache_dir() / "ks_null" / "ks_null_L20_K100_s3.safetensors"


def test_classical_ks_cdf_by_hand_and_its_messages():
    # L = 1: D = max(U, 1 - U), so P(D <= d) = 2 d - 1 on [1/2, 1]
    assert pt.classical_ks_cdf([0.7, 0.9], 1) == pytest.approx([0.4, 0.8], rel=1e-12)
    with _raises(ValueError, "length must lie in [1, inf); got 0"):
        pt.classical_ks_cdf([0.1], 0)
    with _raises(TypeError, "d must be an array of numbers; got a string"):
        pt.classical_ks_cdf("0.1", 10)


def test_gaussian_control_defaults_boundaries_and_messages():
    g = torch.Generator().manual_seed(0)
    want = torch.randn(1, 5, generator=g, dtype=torch.float64) / math.sqrt(5)
    assert torch.equal(pt.gaussian_control((1, 5)), want)  # seed 0 by default, 1 row allowed
    assert pt.gaussian_control((5, 1)).shape == (5, 1)
    with _raises(ValueError, "shape[0] must lie in [1, inf); got 0"):
        pt.gaussian_control((0, 5))
    with _raises(ValueError, "shape[1] must lie in [1, inf); got 0"):
        pt.gaussian_control((5, 0))
    with _raises(TypeError, "seed must be an integer; got 'a' (str)"):
        pt.gaussian_control((5, 5), seed="a")


# --------------------------------------------------------------------------- information_boundary
@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(pvalues="p"), TypeError, "pvalues must be an array of numbers; got a string"),
    (dict(pvalues=[0.5, 1.5]), ValueError, "pvalues must lie in [0, 1]"),
    (dict(pvalues=[0.5, -0.5]), ValueError, "pvalues must lie in [0, 1]"),
    (dict(window=2), ValueError, "window must be odd (a centred window); got 2"),
    (dict(fpr=0), ValueError, "fpr must lie in (0, 1); got 0.0"),
    (dict(fpr=-0.5), ValueError, "fpr must lie in (0, 1); got -0.5"),
    (dict(fpr=1), ValueError, "fpr must lie in (0, 1); got 1.0"),
    (dict(confirm=0), ValueError, "confirm must lie in [1, inf); got 0"),
])
def test_information_boundary_refuses_bad_arguments_by_name(kwargs, exc, message):
    args = dict(pvalues=[0.5] * 20)
    args.update(kwargs)
    p = args.pop("pvalues")
    with _raises(exc, message):
        pt.information_boundary(p, **args)


def test_information_boundary_default_confirm_and_the_all_small_top():
    assert pt.information_boundary([0.5] * 20).alpha == pytest.approx(0.05 / 4, rel=1e-15)
    b = pt.information_boundary(np.full(8, 1e-4), window=3)
    assert b.n_raw == 8 and b.n_above == 8  # every p-value below alpha: all single vectors


def test_information_boundary_raw_test_is_strict_at_alpha():
    alpha = 0.2 / 4  # fpr 0.2, confirm 3: alpha is exactly the float nearest 0.05
    b = pt.information_boundary([alpha] + [0.5] * 10, window=1, fpr=0.2)
    assert b.n_raw == 0 and b.n_above == 0  # p == alpha is not below alpha


def test_information_boundary_band_edges_count_as_inside():
    # window 1: each mean is one p-value, its band the size-1 band [alpha/2, 1 - alpha/2]
    # (uniform quantiles); fpr 0.5, confirm 1: alpha = 0.25, band [0.125, 0.875], dyadic so
    # that the window sums are exact. The first value (1.0) lies above the band, the second
    # exactly on an edge, which counts as inside (>=, <=)
    lo, hi = (float(x[0]) for x in pt.window_band([1], 0.25))
    assert (lo, hi) == (0.125, 0.875)
    for edge in (lo, hi):
        b = pt.information_boundary([1.0, edge], window=1, fpr=0.5, confirm=1)
        assert b.n_raw == 0 and b.n_above == 1 and b.curve[1] == edge


def test_information_boundary_confirms_with_fewer_windows_at_the_very_end():
    # window 1, confirm 3: means = p; outside, outside, outside, inside, inside. Only two
    # windows remain after position 3, both inside: the boundary is 3 (not 5)
    b = pt.information_boundary([1.0, 1.0, 1.0, 0.5, 0.5], window=1, fpr=0.2, confirm=3)
    assert b.n_raw == 0 and b.n_above == 3


# --------------------------------------------------------------------------- ks_null, ks_pvalues
@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(length=9), ValueError, "length must lie in [10, inf); got 9 (a KS test on fewer entries says little)"),
    (dict(samples=99), ValueError, "samples must lie in [100, inf); got 99 (the null's resolution is 1/samples)"),
    (dict(seed=-1), ValueError, "seed must lie in [0, inf); got -1"),
    (dict(seed="a"), TypeError, "seed must be an integer; got 'a' (str)"),
    (dict(chunk=0), ValueError, "chunk must lie in [1, inf); got 0 (vectors drawn per batch)"),
    (dict(cache=1), TypeError, "cache must be True or False; got 1"),
])
def test_ks_null_refuses_bad_arguments_by_name(kwargs, exc, message):
    args = dict(length=10, samples=100)
    args.update(kwargs)
    with _raises(exc, message):
        pt.ks_null(**args)


def _reference_null(length, samples, seed, chunk=4096):
    """The null drawn the documented way: float32 N(0, 1) rows from torch's seeded generator,
    normalized, KS distance to N(0, 1/L) by scipy (float64), sorted."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        g = torch.randn(n, length, generator=gen, dtype=torch.float32).numpy().astype(np.float64)
        g = np.sort(g / np.linalg.norm(g, axis=1, keepdims=True), axis=1)
        c = special.ndtr(g * math.sqrt(length))  # the N(0, 1/L) CDF, by scipy
        i = np.arange(1, length + 1)
        out.append(np.maximum((i / length - c).max(axis=1), (c - (i - 1) / length).max(axis=1)))
    return np.sort(np.concatenate(out))


def test_ks_null_defaults_and_smallest_arguments():
    # default seed 0 and chunk 4096; samples = 100 and chunk = 1 are allowed; float32 draws
    # put D within ~1e-6 of the float64 reference
    ref = _reference_null(10, 100, 0)
    assert np.allclose(pt.ks_null(10, samples=100, cache=False), ref, atol=1e-6)
    assert np.allclose(pt.ks_null(10, samples=100, cache=False, chunk=1),
                       _reference_null(10, 100, 0, chunk=1), atol=1e-6)
    # more samples than one chunk: the draws come in batches of 4096 rows
    assert np.allclose(pt.ks_null(10, samples=4200, cache=False), _reference_null(10, 4200, 0), atol=1e-6)
    assert pt.ks_null(10).shape == (50_000,)


def test_ks_null_does_not_depend_on_torch_default_dtype():
    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        got = pt.ks_null(12, samples=200, seed=4, cache=False)
    finally:
        torch.set_default_dtype(before)
    assert np.allclose(got, _reference_null(12, 200, 4), atol=1e-6)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RMTLIB_CACHE", str(tmp_path))
    pt._NULLS.clear()
    yield tmp_path
    pt._NULLS.clear()


def test_ks_null_file_format(own_cache):
    pt.ks_null(11, samples=100, seed=7)
    tensors, meta = load_checked(own_cache / "ks_null" / "ks_null_L11_K100_s7.safetensors")
    assert meta == {"kind": "ks_null", "key": [11, 100, 7], "format_version": 1}
    assert np.allclose(tensors["null"].numpy(), _reference_null(11, 100, 7), atol=1e-6)


def test_ks_null_without_cache_never_reads_the_disk(own_cache, monkeypatch):
    pt.ks_null(11, samples=100, seed=8)  # on disk now
    pt._NULLS.clear()

    def boom(path):
        raise AssertionError("read the disk with cache=False")
    monkeypatch.setattr(pt, "load_checked", boom)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        null = pt.ks_null(11, samples=100, seed=8, cache=False)
    assert null.flags.writeable and not pt._NULLS


@pytest.mark.parametrize("meta", [
    {"kind": "ks_null", "key": [11, 100, 0]},  # another table's key
    {"kind": "ks_null"},  # no key at all
    {"kind": "other", "key": [11, 100, 9]},  # not a null
])
def test_ks_null_file_of_another_table_is_rebuilt(own_cache, meta):
    from rmtlib._io import save_checked
    path = pt._null_path(11, 100, 9)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checked(path, {"null": torch.linspace(0.1, 0.2, 100, dtype=torch.float64)}, meta)
    with pytest.warns(UserWarning) as rec:
        null = pt.ks_null(11, samples=100, seed=9)
    assert [str(w.message) for w in rec] == [
        "KS null cache ks_null_L11_K100_s9.safetensors unusable (contents do not match); rebuilding"]
    assert _outside_the_module(rec)
    assert np.allclose(null, _reference_null(11, 100, 9), atol=1e-6)


def test_ks_null_that_cannot_be_saved_is_kept_in_memory_with_a_warning(own_cache, monkeypatch):
    def full(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(pt, "save_checked", full)
    with pytest.warns(UserWarning) as rec:
        null = pt.ks_null(11, samples=100, seed=10)
    assert [str(w.message) for w in rec] == [
        "KS null could not be cached (OSError: disk full); it is kept in memory for this process only"]
    assert _outside_the_module(rec)
    assert pt.ks_null(11, samples=100, seed=10) is null


def test_ks_pvalues_defaults_boundaries_and_messages():
    rng = np.random.default_rng(11)
    v = rng.standard_normal((3, 16))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    d = [stats.kstest(r, stats.norm(scale=1 / 4).cdf).statistic for r in v]
    want = pt.pvalues_from_null(d, pt.ks_null(16, samples=50_000, seed=0))
    assert np.allclose(pt.ks_pvalues(v), want, atol=1e-12)  # defaults: 50,000 samples, seed 0
    assert pt.ks_pvalues(v, samples=100).shape == (3,)  # the smallest null allowed
    with _raises(ValueError, "samples must lie in [100, inf); got 99"):
        pt.ks_pvalues(v, samples=99)
    with _raises(TypeError, "seed must be an integer; got 'a' (str)"):
        pt.ks_pvalues(v, seed="a")


# --------------------------------------------------------------------------- pt_cdf, pvalues_from_null
def test_pt_cdf_and_pvalues_from_null_messages():
    with _raises(TypeError, "x must be an array of numbers; got a string"):
        pt.pt_cdf("0.1", 10)
    with _raises(ValueError, "length must lie in [1, inf); got 0"):
        pt.pt_cdf([0.1], 0)
    with _raises(ValueError, "null must be sorted in increasing order (as ks_null returns it)"):
        pt.pvalues_from_null([0.1], [0.3, 0.2])
    with _raises(TypeError, "distances must be an array of numbers; got a string"):
        pt.pvalues_from_null("0.1", [0.1, 0.2])
    with _raises(TypeError, "null must be an array of numbers; got a string"):
        pt.pvalues_from_null([0.1], "0.1")


# --------------------------------------------------------------------------- window_average, window_band
def test_window_average_default_window_and_messages():
    x = np.arange(20.0)
    # default window 15 (half-width 7): position 0 averages 0..7, position 10 averages 3..17
    out = pt.window_average(x)
    assert out[0] == 3.5 and out[10] == 10.0 and out[19] == np.mean(np.arange(12, 20))
    with _raises(ValueError, "window must lie in [1, inf); got -1"):
        pt.window_average(x, -1)
    with _raises(ValueError, "window=5 is larger than the number of values (3); use a smaller window"):
        pt.window_average([1.0, 2.0, 3.0], 5)
    with _raises(TypeError, "values must be an array of numbers; got a string"):
        pt.window_average("123", 1)


@pytest.mark.parametrize("alpha, message", [
    (0, "alpha must lie in (0, 1); got 0.0"), (-0.5, "alpha must lie in (0, 1); got -0.5"),
    (1, "alpha must lie in (0, 1); got 1.0"), (1.5, "alpha must lie in (0, 1); got 1.5"),
])
def test_window_band_refuses_alpha_outside_the_open_unit_interval(alpha, message):
    with _raises(ValueError, message):
        pt.window_band([5], alpha)


def test_window_band_messages_for_sizes():
    with _raises(TypeError, "sizes must be an array of numbers; got a string"):
        pt.window_band("5", 0.1)
    with _raises(ValueError, "sizes must be positive integers (numbers of p-values averaged); got [0.]"):
        pt.window_band([0], 0.1)
    # a single uniform p-value: the band is [alpha/2, 1 - alpha/2] (hand-worked)
    lo, hi = pt.window_band([1, 1], 0.1)
    assert np.allclose(lo, 0.05, rtol=1e-9) and np.allclose(hi, 0.95, rtol=1e-9)


# --------------------------------------------------------------------------- PTResult.to_frame
def test_to_frame_columns_and_band_edges():
    sv = np.array([3.0, 2.0, 1.0, 0.5])
    res = pt.PTResult(sv, np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.2, 0.8, 0.1, 0.95]),
                      np.array([]), np.array([]), (0.2, 0.8), 2.0, 1, 0.25, "left", 20, 3,
                      lower=np.array([0.2, 0.2, 0.2, 0.2]), upper=np.array([0.8, 0.8, 0.8, 0.8]))
    f = res.to_frame()
    assert list(f.columns) == ["rank", "singular_value", "pvalue", "smoothed", "lower", "upper",
                               "outside_band"]
    assert list(f["singular_value"]) == list(sv) and list(f["pvalue"]) == [0.1, 0.2, 0.3, 0.4]
    assert list(f["smoothed"]) == [0.2, 0.8, 0.1, 0.95]
    assert list(f["lower"]) == [0.2] * 4 and list(f["upper"]) == [0.8] * 4
    # on an edge (0.2 = lower, 0.8 = upper) is inside; 0.1 and 0.95 are outside
    assert list(f["outside_band"]) == [False, False, True, True]


# --------------------------------------------------------------------------- two_sigma_boundary
@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(pvalues="p"), TypeError, "pvalues must be an array of numbers; got a string"),
    (dict(pvalues=[0.5, 1.2]), ValueError, "pvalues must lie in [0, 1]"),
    (dict(pvalues=[-0.1, 0.5]), ValueError, "pvalues must lie in [0, 1]"),
    (dict(window=0), ValueError, "window must lie in [1, inf); got 0"),
    (dict(window=-1), ValueError, "window must lie in [1, inf); got -1"),
    (dict(window=4), ValueError, "window must be odd (a centred window); got 4"),
    (dict(sigma=0), ValueError, "sigma must lie in (0, 0.5]; got 0.0 (the standard deviation of a "
                                "window mean of p-values, e.g. 0.05)"),
    (dict(sigma=-0.1), ValueError, "sigma must lie in (0, 0.5]; got -0.1 (the standard deviation of "
                                   "a window mean of p-values, e.g. 0.05)"),
    (dict(sigma=0.6), ValueError, "sigma must lie in (0, 0.5]; got 0.6 (the standard deviation of a "
                                  "window mean of p-values, e.g. 0.05)"),
    (dict(sigma="0.05"), TypeError, "sigma must be a real number; got '0.05' (str)"),
    (dict(k=0), ValueError, "k must lie in (0, inf); got 0.0 (how many standard deviations, e.g. 2)"),
    (dict(k=-1), ValueError, "k must lie in (0, inf); got -1.0 (how many standard deviations, e.g. 2)"),
    (dict(k="2"), TypeError, "k must be a real number; got '2' (str)"),
])
def test_two_sigma_boundary_refuses_bad_arguments_by_name(kwargs, exc, message):
    args = dict(pvalues=[0.5] * 20)
    args.update(kwargs)
    p = args.pop("pvalues")
    with _raises(exc, message):
        pt.two_sigma_boundary(p, **args)


def test_two_sigma_boundary_accepts_its_boundaries():
    # p-values exactly 0 and 1, window 1, sigma 0.5 (the largest allowed): threshold 0.5 - k/2
    assert pt.two_sigma_boundary([0.0, 1.0, 0.5], 1, sigma=0.5, k=0.5) == 1  # 0 < 0.25
    assert pt.two_sigma_boundary([1.0, 0.0], 1, sigma=0.125, k=1) == 0


def test_two_sigma_boundary_defaults_by_hand():
    # 20 zeros then 0.5 (see test_pt_paper_rule): defaults window 15, k 2, exact sigma
    # sqrt(1/180): 23 leading means lie below 0.5 - 2 sigma
    assert pt.two_sigma_boundary(np.r_[np.zeros(20), np.full(200, 0.5)]) == 23
    # window 1, k 1: default sigma = sqrt(1/12) = 0.288675, threshold 0.211325
    assert pt.two_sigma_boundary([0.2, 0.9], 1, k=1) == 1
    assert pt.two_sigma_boundary([0.215, 0.9], 1, k=1) == 0  # above 0.211 (below 1/2 - 1/sqrt(13))
    # window 3, k 1: sigma = 1/6, threshold 1/3; means 0.3, 0.3, 0.5, ...
    assert pt.two_sigma_boundary([0.3, 0.3, 0.3, 0.9, 0.9, 0.9], 3, k=1) == 2
    # k = 2 by default: with sigma = 0.125 the threshold is exactly 0.25
    assert pt.two_sigma_boundary([0.2, 0.3], 1, sigma=0.125) == 1


def test_two_sigma_boundary_is_strict_and_uses_the_window_means():
    # dyadic threshold 0.5 - 2 * 0.125 = 0.25: a mean equal to it is not below
    assert pt.two_sigma_boundary([0.25, 0.1], 1, sigma=0.125, k=2) == 0
    # window 3, means (by hand): [0.1, 0.1, 0.3667, 0.5, 0.5]; threshold 0.25 -> 2
    assert pt.two_sigma_boundary([0.1, 0.1, 0.1, 0.9, 0.5], 3, sigma=0.125, k=2) == 2
    assert pt.two_sigma_boundary([0.1, 0.1, 0.1], 3, sigma=0.125, k=2) == 3  # all below
    assert pt.two_sigma_boundary([0.9, 0.1, 0.1], 3, sigma=0.125, k=2) == 0


# --------------------------------------------------------------------------- other devices
def test_rows_on_another_device_are_sorted_and_measured_there():
    # the meta device carries shapes only: enough to show that a non-CPU tensor takes the
    # torch route (numpy cannot read it), is sorted along each row and stays on its device
    v = torch.empty(3, 12, device="meta", dtype=torch.float64)
    s = pt._sort_rows(v)
    assert s.shape == (3, 12) and s.device.type == "meta"
    d = pt._ks_distance(v)
    assert d.shape == (3,) and d.device.type == "meta"
    # and on the CPU the rows are sorted one by one (numpy's sort, row-wise)
    x = torch.tensor([[3.0, 1.0, 2.0], [0.0, -1.0, 5.0]], dtype=torch.float64)
    assert torch.equal(pt._sort_rows(x), torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 5.0]], dtype=torch.float64))
