"""rmtlib.validation, the one input door: what it accepts, what it returns, and the exact
messages it gives (issue 17, mutation testing).

The project promises errors that name the argument, say what was wrong and what to do; the
messages below are written out by hand from that promise and matched whole (anchored with ^
and $), so that a message that loses its argument name, its range or its hint fails here.
Boundaries are tested on the boundary itself (a closed end accepts the value, an open end
refuses it).
"""
import re

import numpy as np
import pytest
import torch

from rmtlib import validation as V


def whole(text):
    """A pattern matching exactly `text` (pytest.raises(match=) searches)."""
    return "^" + re.escape(text) + "$"


# --------------------------------------------------------------------------- as_array
def test_default_names_are_the_conventional_ones():
    # as_array and as_vector call their input x, as_matrix W, check_unit_rows "vectors"
    with pytest.raises(ValueError, match=r"^x contains NaN"):
        V.as_array([1.0, float("nan")])
    with pytest.raises(ValueError, match=whole("x must be a 1-D array; got shape (1, 1)")):
        V.as_vector([[1.0]])
    with pytest.raises(ValueError, match=r"^W must be a 2-D matrix"):
        V.as_matrix([1.0, 2.0])
    with pytest.raises(ValueError, match=r"^vectors: 1 of 1 rows are not unit vectors"):
        V.check_unit_rows(torch.tensor([[3.0, 4.0]]))


def test_too_few_entries_say_the_minimum_and_why_only_when_given():
    with pytest.raises(ValueError, match=whole("x has 1 entries; at least 3 are needed")):
        V.as_array([1.0], min_size=3)
    with pytest.raises(ValueError, match=whole("x has 1 entries; at least 3 are needed (two spacings)")):
        V.as_array([1.0], min_size=3, why="two spacings")
    with pytest.raises(ValueError, match=whole("x is empty (shape (0,)); pass at least 1 entries")):
        V.as_array([])
    with pytest.raises(ValueError, match=whole("v is empty (shape (0,)); pass at least 5 entries")):
        V.as_array(np.zeros(0), "v", min_size=5)


def test_wrong_number_of_dimensions_names_what_is_wanted():
    with pytest.raises(ValueError, match=whole(
            "W must be a 2-D matrix; got shape (2, 3, 4) "
            "(use rmtlib.spectra.weight_matrix(layer) for a layer's weight)")):
        V.as_array(np.zeros((2, 3, 4)), "W", ndim=2)
    # a 3-D array where 1-D is wanted: no weight_matrix hint
    with pytest.raises(ValueError, match=whole("v must be a 1-D array; got shape (2, 3, 4)")):
        V.as_array(np.zeros((2, 3, 4)), "v", ndim=1)
    # dimensions without a name in words are written "d-D"
    with pytest.raises(ValueError, match=whole("T must be 3-D; got shape (3,)")):
        V.as_array(np.zeros(3), "T", ndim=3)
    with pytest.raises(ValueError, match=whole("L must be 0-D or a 1-D array; got shape (2, 2)")):
        V.as_array(np.ones((2, 2)), "L", ndim=(0, 1))
    assert V.as_array(2.5, "L", ndim=(0, 1)).shape == ()


def test_object_string_and_complex_inputs_are_refused_with_a_reason():
    with pytest.raises(TypeError, match=whole(
            "w must be an array of numbers; got entries of type object (ragged lists or mixed types?)")):
        V.as_array([1.0, None], "w")
    with pytest.raises(TypeError, match=r"^w must be an array of numbers; got <U"):
        V.as_array(["1", "2"], "w")
    msg = "W is complex; rmtlib analyses real weight matrices: pass x.real if the imaginary part is zero"
    with pytest.raises(TypeError, match=whole(msg)):
        V.as_array(np.array([1 + 1j, 2.0]), "W")
    with pytest.raises(TypeError, match=whole(msg)):
        V.as_array(torch.tensor([1 + 1j, 2.0]), "W")


def test_non_contiguous_and_read_only_arrays_are_copied():
    a = np.arange(12.0).reshape(3, 4)
    t = V.as_array(a[:, ::2])  # a strided view
    assert t.tolist() == [[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]]
    b = np.arange(3.0)
    b.flags.writeable = False
    assert V.as_array(b).tolist() == [0.0, 1.0, 2.0]


# --------------------------------------------------------------------------- as_matrix, as_vector, as_numpy
def test_as_matrix_names_its_argument_and_casts_to_the_dtype_asked_for():
    with pytest.raises(ValueError, match=r"^A must be a 2-D matrix; got shape \(2,\)"):
        V.as_matrix([1.0, 2.0], "A")
    W = torch.ones(3, 2, dtype=torch.float32)
    assert V.as_matrix(W, dtype=torch.float64).dtype == torch.float64
    assert V.as_matrix(W).dtype == torch.float32  # float32 keeps its dtype by default


def test_as_matrix_minimum_shape():
    # a single column (3 x 1) is a matrix: both minima default to 1
    assert V.as_matrix(np.ones((3, 1))).shape == (3, 1)
    assert V.as_matrix(np.ones((1, 3))).shape == (1, 3)
    with pytest.raises(ValueError, match=whole("W has shape (1, 3); at least 2 x 1 is needed")):
        V.as_matrix(np.ones((1, 3)), min_rows=2)
    with pytest.raises(ValueError, match=whole("W has shape (1, 3); at least 1 x 4 is needed (a fit)")):
        V.as_matrix(np.ones((1, 3)), min_cols=4, why="a fit")


def test_as_vector_returns_its_input():
    v = V.as_vector([1.0, 2.0, 3.0], "v")
    assert v.tolist() == [1.0, 2.0, 3.0] and v.dtype == torch.float64


def test_as_numpy_is_a_float64_copy_on_the_cpu():
    t = torch.tensor([0.1, 0.2], dtype=torch.float32)
    a = V.as_numpy(t)
    assert isinstance(a, np.ndarray) and a.dtype == np.float64
    assert a.tolist() == [float(np.float32(0.1)), float(np.float32(0.2))]


# --------------------------------------------------------------------------- check_int
def test_check_int_accepts_integers_and_refuses_the_rest():
    assert V.check_int(3, "n") == 3
    assert V.check_int(np.int64(4), "n") == 4
    assert V.check_int(torch.tensor(5), "n") == 5
    for bad in (2.5, torch.tensor(2.5), torch.tensor([1, 2]), True, "3"):
        with pytest.raises(TypeError, match=r"^k must be an integer; got "):
            V.check_int(bad, "k")
    with pytest.raises(TypeError, match=whole("k must be an integer; got 2.5 (float)")):
        V.check_int(2.5, "k")


def test_check_int_range_message_shows_both_ends():
    with pytest.raises(ValueError, match=whole("n must lie in [1, inf); got 0")):
        V.check_int(0, "n", min=1)
    with pytest.raises(ValueError, match=whole("n must lie in (-inf, 3]; got 4")):
        V.check_int(4, "n", max=3)
    with pytest.raises(ValueError, match=whole("n must lie in [0, 3]; got 5 (a layer of 4 units)")):
        V.check_int(5, "n", min=0, max=3, why="a layer of 4 units")
    assert V.check_int(3, "n", min=0, max=3) == 3 and V.check_int(0, "n", min=0, max=3) == 0


def test_check_int_odd():
    assert V.check_int(3, "window", odd=True) == 3
    with pytest.raises(ValueError, match=whole("window must be odd (a centred window); got 4")):
        V.check_int(4, "window", odd=True)


# --------------------------------------------------------------------------- check_float
def test_check_float_accepts_real_numbers_and_0d_tensors():
    assert V.check_float(0.5, "a") == 0.5
    assert V.check_float(np.float32(0.25), "a") == 0.25
    assert V.check_float(torch.tensor(0.75), "a") == 0.75
    assert V.check_float(2, "a") == 2.0
    with pytest.raises(TypeError, match=whole("a must be a real number; got '1' (str)")):
        V.check_float("1", "a")
    with pytest.raises(TypeError, match=r"^a must be a real number; got tensor"):
        V.check_float(torch.tensor([0.5]), "a")
    with pytest.raises(ValueError, match=whole("a must be finite; got inf")):
        V.check_float(float("inf"), "a")


def test_check_float_closed_and_open_ends():
    # closed ends accept the boundary, open ends refuse it
    assert V.check_float(1.0, "a", max=1.0) == 1.0
    assert V.check_float(0.0, "a", min=0.0) == 0.0
    with pytest.raises(ValueError, match=whole("a must lie in [0.0, 1.0); got 1.0")):
        V.check_float(1.0, "a", min=0.0, max=1.0, max_open=True)
    with pytest.raises(ValueError, match=whole("a must lie in (0.0, inf); got 0.0")):
        V.check_float(0.0, "a", min=0.0, min_open=True)


def test_check_float_range_message_shows_infinite_ends():
    with pytest.raises(ValueError, match=whole("a must lie in (-inf, 1.0]; got 5.0")):
        V.check_float(5.0, "a", max=1.0)
    with pytest.raises(ValueError, match=whole("a must lie in [0.0, inf); got -1.0 (a width)")):
        V.check_float(-1.0, "a", min=0.0, why="a width")
    assert V.check_float(-1e300, "a") == -1e300  # no bounds: anything finite


# --------------------------------------------------------------------------- check_unit_rows, check_choice
def test_check_unit_rows_accepts_unit_rows_and_says_which_are_not():
    v = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]])
    assert V.check_unit_rows(v) is v
    with pytest.raises(ValueError, match=whole(
            "u: 1 of 2 rows are not unit vectors (for example norm 2); pass singular vectors, "
            "or normalise each row by its Euclidean norm first")):
        V.check_unit_rows(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "u")


def test_check_choice_lists_the_valid_names():
    assert V.check_choice("a", "method", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=whole("method must be one of ['a', 'b']; got 'c'")):
        V.check_choice("c", "method", ("a", "b"))


# ------------------------------------------------------------------ whole-module survivors
# (issue 17, whole-module run: the survivors of `mutmut run` on all of rmtlib.validation)
def test_integer_and_low_precision_inputs_become_float64():
    assert V.as_array([1, 2]).dtype == torch.float64
    assert V.as_array(np.array([1, 2], dtype=np.int32)).dtype == torch.float64
    for dt in (torch.float16, torch.bfloat16):
        t = V.as_array(torch.tensor([0.5, 2.0], dtype=dt))
        assert t.dtype == torch.float64 and t.tolist() == [0.5, 2.0]
    # numpy float16 is treated as torch float16 is (the docstring's promise): float64, and
    # its (exactly representable) values kept
    t = V.as_array(np.array([0.5, 2.0], dtype=np.float16))
    assert t.dtype == torch.float64 and t.tolist() == [0.5, 2.0]
    # ... while float32 and float64 arrays keep their dtype, as tensors do (no silent doubling of
    # a float32 weight matrix's memory)
    for dt, want in ((np.float32, torch.float32), (np.float64, torch.float64)):
        assert V.as_array(np.array([0.5, 2.0], dtype=dt)).dtype == want


def test_nan_and_inf_are_counted_separately():
    with pytest.raises(ValueError, match=whole(
            "x contains NaN or Inf entries (1 NaN and 2 Inf out of 4); "
            "check the computation that produced it")):
        V.as_array([float("nan"), float("inf"), -float("inf"), 1.0])


def test_strings_and_unknown_types_are_refused_with_the_promised_message():
    with pytest.raises(TypeError, match=whole("x must be an array of numbers; got a string")):
        V.as_array("abc")
    with pytest.raises(TypeError, match=whole("v must be an array of numbers; got a string")):
        V.as_array(np.str_("abc"), "v")
    with pytest.raises(TypeError, match=whole(
            "x must be a numpy array, a torch tensor or a nested list of numbers; got dict")):
        V.as_array({1: 2.0})


def test_read_only_and_reversed_numpy_arrays_are_copied_without_warning():
    import warnings

    a = np.arange(6.0).reshape(2, 3)
    a.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on a non-writable array
        assert V.as_matrix(a).tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
        assert V.as_vector(np.arange(4.0)[::-1]).tolist() == [3.0, 2.0, 1.0, 0.0]


def test_as_vector_passes_its_arguments_on():
    assert V.as_vector([5.0]).tolist() == [5.0]  # one entry is enough by default
    with pytest.raises(ValueError, match=whole("x has 1 entries; at least 2 are needed")):
        V.as_vector([5.0], min_size=2)
    with pytest.raises(ValueError, match=whole("x has 1 entries; at least 2 are needed (a spacing)")):
        V.as_vector([5.0], min_size=2, why="a spacing")
    with pytest.raises(ValueError, match=whole("lam must be a 1-D array; got shape (1, 1)")):
        V.as_vector([[1.0]], "lam")
    assert V.as_vector([1, 2], dtype=torch.float32).dtype == torch.float32


def test_unit_rows_boundary_and_precision():
    v = torch.tensor([0.6, 0.8])
    assert V.check_unit_rows(v) is v  # a single vector (1-D) is one row
    w = torch.tensor([[1.5, 0.0]])
    assert V.check_unit_rows(w, rtol=0.5) is w  # |1.5 - 1| = rtol exactly: accepted
    # float16 row (1, 0.02): norm 1.0002 in float64, refused at rtol 1e-4; computed in
    # float16 it would round to 1.0 (spacing 2**-10) and pass
    with pytest.raises(ValueError, match=r"^vectors: 1 of 1 rows are not unit vectors"):
        V.check_unit_rows(torch.tensor([[1.0, 0.02]], dtype=torch.float16), rtol=1e-4)
