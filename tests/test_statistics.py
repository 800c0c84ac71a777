"""Stage-1 statistics: the blocked pass, overflow-safe norms, Dask and the document reservoir."""

import doctest
import tracemalloc
import warnings

import numpy as np
import pytest
from _bounds import (
    assert_map_within,
    assert_statistics_within,
    assert_within,
    closed_form_map,
    gamma,
    transform_reference,
)
from threadpoolctl import threadpool_limits

from era_sklearn import ERAAdapter
from era_sklearn._stage1.closed_form import procrustes, ridge
from era_sklearn._stage1.reservoir import Reservoir
from era_sklearn._stage1.statistics import PairStatistics, working_bytes
from era_sklearn._utils.validation import l2_normalize, row_norms
from era_sklearn.align import Procrustes


def _pairs(n=600, d_q=12, d_d=7, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_q)) + 0.3
    Y = X @ rng.normal(size=(d_q, d_d)) / np.sqrt(d_q) + 0.1 * rng.normal(size=(n, d_d))
    return X.astype(dtype), Y.astype(dtype)


def _assert_close(got, expected, rtol, err_msg=""):
    """Equal up to ``rtol`` times the largest entry (float64 computations only)."""
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(got, expected, rtol=0, atol=rtol * scale, err_msg=err_msg)


# -- the blocked pass ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_from_arrays_equals_the_definition(dtype, normalize, weighted):
    X, Y = _pairs(dtype=dtype)
    w = np.random.default_rng(1).uniform(0, 2, len(X)) if weighted else None
    # 97-row blocks: a ragged last block, and float32 partial sums flushed often.
    stats = PairStatistics.from_arrays(X, Y, w, normalize=normalize, block_rows=97)
    assert_statistics_within(stats, X, Y, w, normalize)
    assert stats.n_dropped == 0
    no_gram = PairStatistics.from_arrays(X, Y, w, gram=False, normalize=normalize)
    assert no_gram.xtx is None
    assert_statistics_within(no_gram, X, Y, w, normalize)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("error", ["row left out", "row counted twice"])
def test_the_bound_catches_a_one_row_error(dtype, normalize, weighted, error):
    """The error bound the tests use is not so loose that it cannot fail: statistics off
    by one row of the 600 (the smallest real bug a pass can have) break it, every field."""
    X, Y = _pairs(dtype=dtype)
    w = np.random.default_rng(1).uniform(0.5, 2, len(X)) if weighted else None
    stats = PairStatistics.from_arrays(X, Y, w, normalize=normalize)
    row = PairStatistics.from_arrays(X[7:8], Y[7:8], None if w is None else w[7:8],
                                     normalize=normalize)
    sign = -1 if error == "row left out" else 1
    for name in ("weight_sum", "x_sum", "y_sum", "xty", "xtx", "x_sqnorm"):
        wrong = PairStatistics(**vars(stats))
        setattr(wrong, name, getattr(stats, name) + sign * getattr(row, name))
        with pytest.raises(AssertionError, match=f"{name}: error .* exceeds its bound"):
            assert_statistics_within(wrong, X, Y, w, normalize, names=[name])


def test_statistics_add_up_over_chunks():
    X, Y = _pairs(n=900)
    w = np.random.default_rng(2).uniform(0.5, 2, len(X))
    parts = [PairStatistics.from_arrays(X[s:s + 250], Y[s:s + 250], w[s:s + 250],
                                        normalize=True) for s in range(0, 900, 250)]
    assert_statistics_within(sum(parts[1:], parts[0]), X, Y, w, normalize=True)


def test_zero_rows_are_left_out_and_counted():
    X, Y = _pairs()
    X[[3, 50]] = 0
    Y[[50, 77, 600 - 1]] = 0
    stats = PairStatistics.from_arrays(X, Y, normalize=True)
    assert stats.n_dropped == 4  # rows 3, 50, 77 and the last: row 50 once
    assert stats.weight_sum == len(X) - 4
    assert_statistics_within(stats, X, Y, normalize=True)
    assert (stats.centered().n_dropped, (stats + stats).n_dropped) == (4, 8)


@pytest.mark.parametrize(
    "dtype, factor",
    [(np.float32, 1e20), (np.float32, 1e35), (np.float32, 1e-30), (np.float64, 1e300),
     (np.float64, 1e-300), (np.float64, 1e-310)],
)
@pytest.mark.parametrize("gram", [False, True])
def test_normalised_statistics_ignore_the_scale_of_rows(dtype, factor, gram):
    """Squares of 1e20 overflow float32; of 1e-30 underflow; 1e-310 is subnormal itself."""
    X, Y = _pairs(dtype=dtype)
    Xs, Ys = X * dtype(factor), Y * dtype(factor)  # the data as scaled (and rounded)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow/underflow RuntimeWarning either
        scaled = PairStatistics.from_arrays(Xs, Ys, gram=gram, normalize=True)
    assert_statistics_within(scaled, Xs, Ys, normalize=True)


@pytest.mark.parametrize("gram", [False, True])
def test_a_few_extreme_rows_among_ordinary_ones(gram):
    """Blocks with and without rows that need rescaling, X contiguous or a column slice."""
    X, Y = _pairs(n=1000)
    factors = np.ones(len(X), dtype=np.float32)
    factors[[5, 400]], factors[[6, 990]] = 1e25, 1e-40  # huge; subnormal
    Xe, Ye = X * factors[:, None], Y * factors[::-1, None]
    wide = np.hstack([Xe, Ye])  # X as a column slice: not C-contiguous
    for Xin in (Xe, wide[:, : X.shape[1]]):
        stats = PairStatistics.from_arrays(Xin, Ye, gram=gram, normalize=True, block_rows=128)
        assert (stats.xtx is None) == (not gram)
        assert_statistics_within(stats, Xe, Ye, normalize=True)


@pytest.mark.parametrize("dtype, factor", [(np.float32, 1e20), (np.float64, 1e160)])
def test_unnormalised_statistics_refuse_values_too_large_to_square(dtype, factor):
    X, Y = _pairs(dtype=dtype)
    with pytest.raises(ValueError, match="X has values too large for unnormalised fitting"):
        PairStatistics.from_arrays(X * dtype(factor), Y)
    with pytest.raises(ValueError, match="Y has values too large for unnormalised fitting"):
        PairStatistics.from_arrays(X, Y * dtype(factor), gram=False)


@pytest.mark.parametrize("bad, message", [(np.nan, "Input Y contains NaN"),
                                          (np.inf, "Input Y contains infinity")])
@pytest.mark.parametrize("normalize", [False, True])
def test_non_finite_values_are_found_in_the_pass(bad, message, normalize):
    X, Y = _pairs()
    Y[123, 4] = bad
    with pytest.raises(ValueError, match=message):
        PairStatistics.from_arrays(X, Y, normalize=normalize)


def test_float32_stays_float32_in_the_blocks_and_sums_are_float64():
    X, Y = _pairs(dtype=np.float32)
    stats = PairStatistics.from_arrays(X, Y.astype(np.float64), normalize=True)
    assert stats.xtx.dtype == stats.xty.dtype == np.float64
    # Y is taken in X's dtype (float32), as fit_align does.
    same = PairStatistics.from_arrays(X, Y, normalize=True)
    np.testing.assert_array_equal(stats.xty, same.xty)


@pytest.mark.parametrize("gram", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_memory_is_one_block_and_the_sums(gram, normalize, n_threads):
    """No copy of X or Y: the peak is the block buffers and the sums, whatever n is."""
    X = np.random.default_rng(0).standard_normal((40_000, 96), dtype=np.float32)
    Y = X[:, :40] + 1
    w = np.ones(len(X))
    bound = working_bytes(96, 40, np.float32, gram=gram, block_rows=500, n_threads=n_threads)
    # Many tiny GEMMs on a multi-threaded BLAS crawl on a busy machine: one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        # First use of the thread pool and threadpoolctl caches objects once per process.
        PairStatistics.from_arrays(X[:1000], Y[:1000], w[:1000], gram=gram, normalize=normalize,
                                   block_rows=500, n_threads=n_threads)
        tracemalloc.start()
        PairStatistics.from_arrays(X, Y, w, gram=gram, normalize=normalize, block_rows=500,
                                   n_threads=n_threads)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= bound < X.nbytes / 10


@pytest.mark.parametrize("normalize", [False, True])
def test_threads_change_nothing_but_rounding(normalize):
    X, Y = _pairs(n=3000)
    w = np.random.default_rng(5).uniform(0, 2, len(X))
    for n_threads in (1, 3):
        stats = PairStatistics.from_arrays(X, Y, w, normalize=normalize, block_rows=128,
                                           n_threads=n_threads)
        assert_statistics_within(stats, X, Y, w, normalize)
    three = PairStatistics.from_arrays(X, Y, w, normalize=normalize, block_rows=128,
                                       n_threads=3)
    again = PairStatistics.from_arrays(X, Y, w, normalize=normalize, block_rows=128,
                                       n_threads=3)
    for name, value in vars(three).items():  # bit for bit: each thread's blocks are fixed
        np.testing.assert_array_equal(getattr(again, name), value)


def test_bad_shapes_and_weights_fail_clearly():
    X, Y = _pairs()
    with pytest.raises(ValueError, match="same number of rows"):
        PairStatistics.from_arrays(X, Y[:-1])
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        PairStatistics.from_arrays(X, Y, np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        PairStatistics.from_arrays(X, Y, -np.ones(len(X)))
    with pytest.raises(ValueError, match="block_rows"):
        PairStatistics.from_arrays(X, Y, block_rows=0)
    with pytest.raises(ValueError, match="n_threads"):
        PairStatistics.from_arrays(X, Y, n_threads=0)


# -- overflow-safe row norms ----------------------------------------------------
@pytest.mark.parametrize(
    "dtype, factor",
    [(np.float32, 1.0), (np.float32, 1e20), (np.float32, 3e37), (np.float32, 1e-25),
     (np.float64, 1e300), (np.float64, 1e-320)],
)
def test_row_norms_and_l2_normalize_are_overflow_safe(dtype, factor):
    X = _pairs(dtype=dtype)[0][:50]
    d = X.shape[1]
    exact = np.linalg.norm(X.astype(np.float64), axis=1)
    A = X * dtype(factor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        norms, unit = row_norms(A), l2_normalize(A)
    # Bound: the scaled input is rounded (u per entry, or half the smallest subnormal
    # where it is subnormal: 1e-320 keeps only a few digits), then a sum of d squares,
    # a square root and a division (gamma_(d+3) relative).
    lost = np.sqrt(d) * np.finfo(dtype).smallest_subnormal  # absolute, on the norm
    rel = gamma(d + 3, dtype)
    assert_within(norms, exact * factor, rel * exact * factor + lost, err_msg="norms")
    assert unit.dtype == dtype
    assert_within(unit, X / exact[:, None], 2 * (rel + lost / (exact * factor))[:, None],
                  err_msg="unit rows")


def test_row_norms_of_non_finite_and_zero_rows():
    A = np.array([[np.nan, 1.0], [np.inf, 1.0], [0.0, 0.0], [3.0, 4.0]])
    norms = row_norms(A)
    assert np.isnan(norms[0]) and norms[1] == np.inf and list(norms[2:]) == [0.0, 5.0]


def test_l2_normalize_zero_rows_and_in_place():
    A = np.array([[3.0, 4.0], [0.0, 0.0], [1e300, 1e300]])
    with pytest.raises(ValueError, match="1 all-zero row"):
        l2_normalize(A)
    with pytest.warns(UserWarning, match="1 all-zero row"):
        out = l2_normalize(A, zero_rows="warn", copy=False)
    assert out is A
    np.testing.assert_allclose(A, [[0.6, 0.8], [0, 0], [0.5**0.5, 0.5**0.5]])


# -- regressions against the public estimator (fail on f831c95) ---------------
def _planted(dtype=np.float32):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 32))
    R = np.linalg.qr(rng.normal(size=(32, 32)))[0][:, :16]
    Y = X @ R + 0.1 * rng.normal(size=(500, 16))
    return X.astype(dtype), Y.astype(dtype)


@pytest.mark.parametrize("dtype, factor", [(np.float32, 1e20), (np.float64, 1e300)])
def test_regression_fit_align_on_huge_rows_equals_unscaled(dtype, factor):
    X, Y = _planted(dtype)
    Xh = X * dtype(factor)
    plain = ERAAdapter().fit_align(X, Y)
    huge = ERAAdapter().fit_align(Xh, Y)
    for est, data in ((plain, X), (huge, Xh)):
        assert_map_within(est, data, Y, kind="procrustes")
    assert huge.score(X, Y) == pytest.approx(plain.score(X, Y)) and plain.score(X, Y) > 0.9


def test_regression_transform_of_huge_rows_is_finite():
    X, Y = _planted()
    est = ERAAdapter().fit_align(X, Y)
    for data in (X, X * np.float32(1e20)):
        expected, bound = transform_reference(est.coef_, est.intercept_, data)
        assert_within(est.transform(data), expected, bound, err_msg="transform")


@pytest.mark.parametrize("align", ["lstsq", "procrustes"])
def test_regression_unnormalised_huge_values_are_refused(align):
    X, Y = _planted()
    with pytest.raises(ValueError, match="too large for unnormalised fitting"):
        ERAAdapter(align=align, normalize_input=False).fit_align(X * np.float32(1e20), Y)


# -- Dask -------------------------------------------------------------------
@pytest.fixture(scope="module")
def da():
    return pytest.importorskip("dask.array")


@pytest.mark.parametrize("gram", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_dask_statistics_equal_in_memory(da, gram, normalize, weighted):
    from era_sklearn._stage1.dask import dask_pair_statistics

    X, Y = _pairs(n=1000)
    X[10], Y[500] = 0, 0
    w = np.random.default_rng(3).uniform(0, 2, len(X)) if weighted else None
    in_memory = PairStatistics.from_arrays(X, Y, w, gram=gram, normalize=normalize)
    dw = None if w is None else da.from_array(w, chunks=400)
    stats, reservoir = dask_pair_statistics(
        da.from_array(X, chunks=(300, 5)), da.from_array(Y, chunks=(170, -1)), dw,
        gram=gram, normalize=normalize,
    )
    assert reservoir is None and stats.n_dropped == in_memory.n_dropped
    assert (stats.xtx is None) == (not gram)
    # Each against the float64 definition, within the bound of its float32 sums: the two
    # paths block the rows differently, so they round differently (Intel and AMD kernels too).
    assert_statistics_within(stats, X, Y, w, normalize)
    assert_statistics_within(in_memory, X, Y, w, normalize)


def test_dask_reservoir_equals_streamed_reservoir(da):
    from era_sklearn._stage1.dask import dask_pair_statistics

    X, Y = _pairs(n=1000)
    Y[::7] = 0  # never sampled
    _, merged = dask_pair_statistics(
        da.from_array(X, chunks=130), da.from_array(Y, chunks=130), gram=False, normalize=True,
        reservoir=Reservoir(capacity=50, random_state=4, normalize=True),
    )
    streamed = Reservoir(capacity=50, random_state=4, normalize=True).add(Y)
    assert merged.n_seen == 1000
    np.testing.assert_array_equal(merged.sample(), streamed.sample())
    # Unit rows in float32: a sum of d squares, a root, a division and the norm's own rounding.
    assert_within(np.linalg.norm(merged.sample().astype(np.float64), axis=1), 1,
                  gamma(X.shape[1] + 3, np.float32), err_msg="norms")


@pytest.mark.parametrize("params", [{"align": Procrustes(scale=True)},
                                    {"align": Procrustes(scale=True, center=True)},
                                    {"align": "lstsq", "normalize_input": False}])
def test_regression_dask_fit_align_equals_in_memory(da, params):
    """Procrustes with scale and d_q != d_d needs the Gram matrix (it was skipped on Dask;
    the unnormalised lstsq case is a control that already held on f831c95)."""
    X, Y = _pairs(n=800, d_q=12, d_d=7)
    full = ERAAdapter(**params).fit_align(X, Y)
    est = ERAAdapter(**params).fit_align(da.from_array(X, chunks=300), da.from_array(Y, 300))
    align = params["align"]
    kind = "lstsq" if align == "lstsq" else "procrustes"
    center = False if isinstance(align, str) else align.center
    scale = False if isinstance(align, str) else align.scale
    for fitted in (full, est):
        assert_map_within(fitted, X, Y, kind=kind, center=center, scale=scale)


def test_closed_form_solves_agree_on_dask_and_in_memory_statistics(da):
    from era_sklearn._stage1.dask import dask_pair_statistics

    X, Y = _pairs(n=800, d_q=12, d_d=7)
    local = PairStatistics.from_arrays(X, Y, normalize=True).centered()
    remote = dask_pair_statistics(da.from_array(X, chunks=300), da.from_array(Y, chunks=300),
                                  normalize=True)[0].centered()
    for kind, solve in (
        ("procrustes", lambda s: procrustes(s, scale=True)[0] * procrustes(s, scale=True)[1]),
        ("lstsq", lambda s: ridge(s, 0.1)),
    ):
        W, _, bound, _ = closed_form_map(X, Y, kind=kind, center=True, scale=True)
        for stats in (local, remote):
            assert_within(np.linalg.norm(solve(stats) - W), 0, bound, err_msg=kind)


# -- the document reservoir -------------------------------------------------------
def _indexed_rows(n):
    """Row i is [i + 1]: a kept row tells its stream position."""
    return np.arange(1, n + 1, dtype=np.float64)[:, None]


def test_reservoir_is_deterministic_and_independent_of_chunking():
    rows = _indexed_rows(5000)
    whole = Reservoir(capacity=300, random_state=7).add(rows)
    chunked = Reservoir(capacity=300, random_state=7)
    for start in range(0, 5000, 333):
        chunked.add(rows[start:start + 333])
    blocks = [Reservoir(capacity=300, random_state=7, start=s).add(rows[s:s + 1200])
              for s in range(0, 5000, 1200)]
    merged = blocks[0]
    for block in blocks[1:]:
        merged = merged.merge(block)
    sample = whole.sample()
    assert sample.shape == (300, 1) and np.all(np.diff(sample[:, 0]) > 0)  # stream order
    np.testing.assert_array_equal(chunked.sample(), sample)
    np.testing.assert_array_equal(merged.sample(), sample)
    other = Reservoir(capacity=300, random_state=8).add(rows).sample()
    assert len(np.intersect1d(other, sample)) < 60  # about 300 * 300 / 5000 = 18 by chance


def test_reservoir_inclusion_is_uniform():
    n, capacity, runs = 2000, 200, 300
    counts = np.zeros(n)
    for seed in range(runs):
        kept = Reservoir(capacity=capacity, random_state=seed).add(_indexed_rows(n)).sample()
        counts[kept[:, 0].astype(int) - 1] += 1
    # Each tenth of the stream holds a tenth of the picks: 6000 each, sd about 70.
    per_tenth = counts.reshape(10, -1).sum(axis=1)
    np.testing.assert_allclose(per_tenth, capacity * runs / 10, rtol=0.05)
    assert counts.max() < 3 * capacity * runs / n  # no row picked far more than others


def test_reservoir_holds_at_most_capacity_rows():
    rng = np.random.default_rng(0)
    reservoir = Reservoir(capacity=100, random_state=0)
    assert reservoir.sample() is None
    for _ in range(5):
        chunk = rng.normal(size=(40_000, 64)).astype(np.float32)
        tracemalloc.start()
        reservoir.add(chunk)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert reservoir._rows.shape == (100, 64) and len(reservoir) == 100
        # Keys and indices for the chunk, the rows kept: far below a copy of the chunk.
        assert peak < chunk.nbytes / 4
    assert reservoir.n_seen == 200_000 and reservoir.sample().dtype == np.float32


def test_reservoir_skips_zero_rows_and_zero_weights_and_normalises():
    rows = _indexed_rows(100) * np.array([[1.0, 2.0]])
    rows[::2] = 0
    weights = np.ones(100)
    weights[1::4] = 0
    kept = Reservoir(capacity=1000, random_state=0, normalize=True).add(rows, weights).sample()
    assert len(kept) == 25  # rows 3, 7, 11, ...: odd positions with non-zero weight
    np.testing.assert_allclose(kept, np.tile([[1, 2]] / np.sqrt(5), (25, 1)))


def test_reservoir_docstring_example_runs():
    import era_sklearn._stage1.reservoir as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("capacity", [0, -1, 2.5, True])
def test_reservoir_bad_capacity(capacity):
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        Reservoir(capacity=capacity)


@pytest.mark.parametrize("shape", [(40, 12), (12, 40), (9, 9)])
@pytest.mark.parametrize("conditioning", ["well", "ill", "rank-deficient"])
def test_polar_factor_matches_the_svd(shape, conditioning):
    """Procrustes' map from the Gram eigendecomposition, or the SVD fallback, equals U V^T."""
    from era_sklearn._stage1.closed_form import _polar

    rng = np.random.default_rng(0)
    M = rng.normal(size=shape)
    k = min(shape)
    if conditioning == "ill":
        M = M @ np.diag(np.logspace(0, -7, shape[1]))  # singular values over 7 decades
    elif conditioning == "rank-deficient":
        M[:, 0] = 0 if shape[0] >= shape[1] else M[:, 0]
        M[0] = 0 if shape[0] < shape[1] else M[0]
    W, s = _polar(M)
    U, S, Vt = np.linalg.svd(M, full_matrices=False)
    np.testing.assert_allclose(s, S, atol=1e-10 * S[0])
    if conditioning == "rank-deficient":  # U V^T is not unique: check what is
        np.testing.assert_allclose(np.einsum("ij,ij->", W, M), S.sum(), rtol=1e-10)
        np.testing.assert_allclose(W @ W.T if shape[0] < shape[1] else W.T @ W, np.eye(k),
                                   atol=1e-10)
    else:
        np.testing.assert_allclose(W, U @ Vt, atol=1e-8)


@pytest.mark.parametrize("kind, center", [("procrustes", False), ("procrustes", True),
                                          ("lstsq", False), ("lstsq", True)])
def test_the_map_bound_catches_a_one_row_error(kind, center):
    """The closed-form maps' bound (tests/_bounds.py) is tight enough that a map fitted
    with one of the 600 alignment rows left out breaks it."""
    from era_sklearn.align import ALIGN_SOLVERS

    X, Y = _pairs()
    est = ERAAdapter(align=ALIGN_SOLVERS[kind](center=center)).fit_align(X, Y)
    assert_map_within(est, X, Y, kind=kind, center=center)
    one_short = ERAAdapter(align=ALIGN_SOLVERS[kind](center=center)).fit_align(X[1:], Y[1:])
    with pytest.raises(AssertionError, match="exceeds its bound"):
        assert_map_within(one_short, X, Y, kind=kind, center=center)
