"""Stage 1 past memory: ``partial_fit_align`` chunk by chunk, and Dask arrays."""

import numpy as np
import pytest
from _bounds import assert_map_within, assert_within, closed_form_map

from era_sklearn import ERAAdapter
from era_sklearn.align import ALIGN_SOLVERS


def _pairs(n, d_q, d_d, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_q)) + 0.5  # an offset, so center=True matters
    Y = X @ rng.normal(size=(d_q, d_d)) / np.sqrt(d_q) + 0.1 * rng.normal(size=(n, d_d))
    return X.astype(dtype), Y.astype(dtype)


def _streamed(est, X, Y, chunk):
    for start in range(0, len(X), chunk):
        est.partial_fit_align(X[start:start + chunk], Y[start:start + chunk])
    return est


@pytest.mark.parametrize("align", ["procrustes", "lstsq"])
@pytest.mark.parametrize("center", [False, True])
def test_partial_fit_align_matches_fit_align(align, center):
    X, Y = _pairs(3000, 24, 12)
    solver = ALIGN_SOLVERS[align](center=center)
    full = ERAAdapter(align=solver).fit_align(X, Y)
    streamed = _streamed(ERAAdapter(align=solver), X, Y, chunk=700)
    # The reservoir of document rows sees the stream as fit_align sees the whole.
    np.testing.assert_allclose(streamed.align_docs_, full.align_docs_)
    assert streamed.coef_.dtype == np.float32
    # Both within the float32 error bound of the exact map (they block the sums differently).
    for est in (full, streamed):
        assert_map_within(est, X, Y, kind=align, center=center)


@pytest.mark.parametrize("align", ["procrustes", "lstsq"])
def test_partial_fit_align_at_scale(align):
    """1e5 x 96 -> 48 pairs in chunks of 1e4 give the in-memory map."""
    X, Y = _pairs(100_000, 96, 48, seed=1)
    full = ERAAdapter(align=align).fit_align(X, Y)
    streamed = _streamed(ERAAdapter(align=align), X, Y, chunk=10_000)
    for est in (full, streamed):
        assert_map_within(est, X, Y, kind=align)


def test_fit_align_resets_streamed_statistics():
    X, Y = _pairs(400, 8, 4)
    est = ERAAdapter().partial_fit_align(X[:200], Y[:200]).fit_align(X[200:], Y[200:])
    np.testing.assert_allclose(est.coef_, ERAAdapter().fit_align(X[200:], Y[200:]).coef_)
    # Its statistics are gone: continuing it by streaming would silently drop them.
    with pytest.raises(ValueError, match="partial_fit_align cannot continue it"):
        est.partial_fit_align(X, Y)


# -- Dask ----------------------------------------------------------------------
da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize(
    "params",
    [{}, {"align": ALIGN_SOLVERS["lstsq"](center=True)},
     {"hybrid": True, "align": ALIGN_SOLVERS["procrustes"](center=True)}],
    ids=["procrustes", "lstsq_centered", "hybrid"],
)
def test_dask_fit_align_matches_in_memory(client, params):
    X, Y = _pairs(4000, 32, 16)
    if params.get("hybrid"):
        X = np.hstack([X, Y])
    w = np.random.default_rng(2).uniform(0.5, 2.0, size=len(X))
    full = ERAAdapter(**params).fit_align(X, Y, sample_weight=w)
    dX = da.from_array(X, chunks=(900, 10))  # ragged rows, split columns
    dY = da.from_array(Y, chunks=(1300, -1))  # rows not aligned with X's
    est = ERAAdapter(**params).fit_align(dX, dY, sample_weight=da.from_array(w, chunks=500))
    assert est.coef_.dtype == np.float32 and est.n_features_in_ == X.shape[1]
    np.testing.assert_allclose(est.align_docs_, full.align_docs_)  # same reservoir sample
    align = params.get("align", ALIGN_SOLVERS["procrustes"]())
    kind = "lstsq" if isinstance(align, ALIGN_SOLVERS["lstsq"]) else "procrustes"
    for fitted in (full, est):
        if params.get("hybrid"):  # stage 1 maps the query block; the rest is fixed
            W, b, dW, db = closed_form_map(X[:, :32], Y, w, kind=kind, center=align.center)
            assert_within(np.linalg.norm(fitted.align_coef_ - W), 0, dW, err_msg="align_coef_")
            assert_within(fitted.align_intercept_, b, db, err_msg="align_intercept_")
        else:
            assert_map_within(fitted, X, Y, w, kind=kind, center=align.center)


def test_dask_mixed_inputs_and_int_dtype(client):
    X, Y = _pairs(1000, 8, 4)
    Xi = np.rint(X * 10).astype(np.int64)
    est = ERAAdapter().fit_align(da.from_array(Xi, chunks=300), Y)
    full = ERAAdapter().fit_align(Xi, Y)
    assert est.coef_.dtype == full.coef_.dtype  # the in-memory dtype rule, whatever it is
    np.testing.assert_allclose(est.coef_, full.coef_, atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_dask_non_finite_input_fails_clearly(client, bad):
    X, Y = _pairs(1000, 8, 4)
    X[777, 3] = bad
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        ERAAdapter().fit_align(da.from_array(X, chunks=250), da.from_array(Y, chunks=250))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda X, Y: (X[:-1], Y), "same number of rows"),
        (lambda X, Y: (X[:, 0], Y), "Expected 2D arrays"),
        (lambda X, Y: (X[:1], Y[:1]), "minimum of 2 is required"),
    ],
    ids=["row_mismatch", "1d_X", "one_row"],
)
def test_dask_bad_shapes_fail_clearly(make, message):
    X, Y = _pairs(100, 8, 4)
    dX, dY = make(da.from_array(X, chunks=30), da.from_array(Y, chunks=30))
    with pytest.raises(ValueError, match=message):
        ERAAdapter().fit_align(dX, dY)


def test_dask_torch_align_is_refused():
    X, Y = _pairs(100, 8, 4)
    with pytest.raises(ValueError, match="closed-form align"):
        ERAAdapter(align="torch").fit_align(da.from_array(X, chunks=30), Y)
