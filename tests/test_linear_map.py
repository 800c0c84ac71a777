"""transform's blocked linear pass (era_sklearn/_transform/linear.py, issue 18).

The pass multiplies X as it is and scales the output rows; it must equal the
definition (normalise, multiply, add, normalise) within its rounding bound in
every configuration, block size and thread count, find NaN/inf, all-zero,
huge and tiny rows itself, and report them exactly as the definition's path
does (validate_data's error, the all-zero-row warning with the row's index).
"""

import re
import tracemalloc
import warnings

import numpy as np
import pytest
from _bounds import assert_within, transform_reference
from sklearn.utils.validation import validate_data

from era_sklearn import ERAAdapter
from era_sklearn._transform import linear as _linear_map
from era_sklearn._transform.linear import map_rows
from era_sklearn._utils.validation import FLOAT_DTYPES
from era_sklearn.align import Procrustes


def _data(n=600, d_q=24, d_d=10, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d_q)) + 0.2) * rng.uniform(0.1, 10, size=(n, 1))
    W = rng.normal(size=(d_q, d_d)) / np.sqrt(d_q)
    b = 0.3 * rng.normal(size=d_d)
    return X.astype(dtype), W.astype(dtype), b.astype(dtype)


def _adapter(dtype=np.float32, center=False, **params):
    """Aligned on planted pairs; ``center=True`` gives it an intercept."""
    X, W, _ = _data(n=400, dtype=dtype, seed=1)
    Y = X @ W + 0.5 * center
    return ERAAdapter(align=Procrustes(center=center), **params).fit_align(X, Y)


@pytest.fixture(params=["default blocks", "97-row blocks, 2 threads"])
def blocks(request, monkeypatch):
    """transform's pass as it runs on small X (one block, the caller's thread), or on
    many short blocks taken by two threads, as it runs on large X."""
    if request.param != "default blocks":
        monkeypatch.setattr(_linear_map, "block_rows_for", lambda *args, **kwargs: 97)
        monkeypatch.setattr(_linear_map, "n_threads_for", lambda n_threads: 2)
    return request.param


def _assert_transform_within(est, X, out):
    expected, bound = transform_reference(est.coef_, est.intercept_, X, est.normalize_input,
                                          est.normalize_output)
    assert_within(out, expected, bound, err_msg="transform")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalize_input", [True, False])
@pytest.mark.parametrize("normalize_output", [True, False])
@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_map_rows_equals_the_definition(dtype, normalize_input, normalize_output, intercept,
                                        n_threads):
    X, W, b = _data(dtype=dtype)
    b = b if intercept else None
    # 97-row blocks: a ragged last block, and each thread takes several.
    out, suspect = map_rows(X, W, b, normalize_input=normalize_input,
                            normalize_output=normalize_output, block_rows=97,
                            n_threads=n_threads)
    assert out.dtype == dtype and out.shape == (len(X), W.shape[1])
    assert suspect.size == 0  # ordinary rows are all computed by the pass
    expected, bound = transform_reference(W, np.zeros(W.shape[1]) if b is None else b, X,
                                          normalize_input, normalize_output)
    assert_within(out, expected, bound, err_msg="map_rows")


@pytest.mark.parametrize("n", [1, 2, 5000])
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("normalize_output", [True, False])
def test_transform_equals_the_definition(n, center, normalize_output):
    est = _adapter(center=center, normalize_output=normalize_output)
    assert np.any(est.intercept_) == center
    X = _data(n=n, seed=2)[0]
    out = est.transform(X)
    _assert_transform_within(est, X, out)
    if n > 1:  # one query at a time: the same rows, up to the same bound
        _assert_transform_within(est, X[:2], np.vstack([est.transform(x[None]) for x in X[:2]]))


#: Row factors whose squares (or products) over- or underflow the dtype, down to subnormal.
EXTREME = {
    np.float32: [1e20, 1e30, 1e37, 3e38, 1e-20, 1e-30, 1e-40],
    np.float64: [1e160, 1e300, 1e307, 1e-160, 1e-300, 1e-310],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("normalize_output", [True, False])
def test_extreme_rows_among_ordinary_ones(dtype, center, normalize_output, blocks):
    est = _adapter(dtype, center=center, normalize_output=normalize_output)
    X = _data(n=3000, dtype=dtype, seed=3)[0]
    rows = np.arange(len(EXTREME[dtype])) * 401 + 7  # in several blocks
    peak = np.abs(X[rows]).max(axis=1, keepdims=True)
    X[rows] = X[rows] / peak * np.array(EXTREME[dtype], dtype=dtype)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value RuntimeWarning either
        out = est.transform(X)
    _assert_transform_within(est, X, out)
    intercept = est.intercept_ if center else None
    _, suspect = map_rows(X, est.coef_, intercept, normalize_output=normalize_output)
    np.testing.assert_array_equal(suspect, rows)  # left to the definition's path, and only they


@pytest.mark.filterwarnings("ignore:overflow encountered in matmul")  # then the error, as before
def test_unnormalised_input_huge_rows_map_or_overflow_as_before(blocks):
    est = _adapter(normalize_input=False)
    X = _data(n=2000, seed=4)[0]
    X[[3, 1500]] *= np.float32(1e20)  # squares overflow, the product does not
    _assert_transform_within(est, X, est.transform(X))
    X[700] = np.float32(3e38)  # the product itself overflows
    with pytest.raises(ValueError, match=re.escape("The mapped queries overflow (X is too large "
                                                   "for normalize_input=False)")):
        est.transform(X)


def _validate_data_error(est, X):
    """The message validate_data gives for X (what transform raised before issue 18)."""
    with pytest.raises(ValueError) as error:
        validate_data(est, X, reset=False, dtype=FLOAT_DTYPES)
    return str(error.value)


@pytest.mark.parametrize("bad", [
    [(1700, 3, np.nan)],
    [(1700, 3, np.inf)],
    [(0, 0, -np.inf)],
    [(1700, 5, np.inf), (1700, 9, np.nan)],  # inf first in its row: "infinity"
    [(1700, 9, np.nan), (2500, 2, np.inf)],
    [(900, 1, np.inf), (2999, 23, np.nan)],
    [(900, 1, 1e38), (900, 2, np.nan)],  # with a value whose product overflows
])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("normalize_input", [True, False])
def test_non_finite_input_gets_validate_datas_error(bad, order, normalize_input, blocks):
    est = _adapter(normalize_input=normalize_input)
    X = _data(n=3000, seed=5)[0]
    X[100] = 0  # an all-zero row before the bad ones: no warning may come before the error
    for row, col, value in bad:
        X[row, col] = value
    X = np.asarray(X, order=order)
    expected = _validate_data_error(est, X)
    assert expected.startswith("Input X contains")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=re.escape(expected)):
            est.transform(X)


@pytest.mark.parametrize("normalize_output", [True, False])
def test_zero_rows_warn_with_their_index_in_X(normalize_output, blocks):
    est = _adapter(normalize_output=normalize_output)
    X = _data(n=3000, seed=6)[0]
    X[[1500, 2900]] = 0
    X[2000, 0] = np.float32(-0.0)
    X[2000, 1:] = 0
    with pytest.warns(UserWarning, match=re.escape(
            "X has 3 all-zero row(s) (first at index 1500); they stay zero")):
        out = est.transform(X)
    assert not out[[1500, 2000, 2900]].any()
    keep = np.ones(len(X), dtype=bool)
    keep[[1500, 2000, 2900]] = False
    _assert_transform_within(est, X[keep], out[keep])
    raw = _adapter(normalize_input=False, normalize_output=normalize_output)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning without input normalisation, as before
        assert not raw.transform(X)[[1500, 2900]].any()


def test_regression_transform_makes_no_copy_of_X():
    """Issue 18: transform L2-normalised a copy of X before the product; the pass scales the
    output rows instead, so it allocates the output and a few per-row vectors per block."""
    X = _data(n=40_000, d_q=24, seed=7)[0]
    X = np.hstack([X] * 4)  # 96 columns: a copy of X is 4 times the 10-column output
    est = ERAAdapter().fit_align(X[:500], X[:500, :10])
    est.transform(X[:10])  # warm-up: imports, the thread pool's first objects
    tracemalloc.start()
    out = est.transform(X)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Blocks of at least 256 rows: their per-row vectors (norms, sums of squares) are
    # O(n) in all; 1 MB covers them and the thread pool's objects.
    assert peak <= out.nbytes + 2**20, (peak, out.nbytes, X.nbytes)
