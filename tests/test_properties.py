"""Property-based tests of the closed-form solvers and of refitting."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from era_sklearn import ERAAdapter
from era_sklearn._stage1.closed_form import procrustes, ridge
from era_sklearn._stage1.statistics import PairStatistics
from era_sklearn.adapt import Ridge, Softmax
from era_sklearn.align import LeastSquares, Procrustes

FAST = settings(max_examples=25, deadline=None)


@st.composite
def pairs(draw, max_dim=12):
    """Random (X, Y) with n, d_q, d_d drawn independently (wide and tall)."""
    n = draw(st.integers(2, 40))
    d_q, d_d = draw(st.integers(1, max_dim)), draw(st.integers(1, max_dim))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.normal(size=(n, d_q)), rng.normal(size=(n, d_d)), rng


@FAST
@given(pairs())
def test_procrustes_is_semi_orthogonal(data):
    X, Y, _ = data
    W, factor = procrustes(PairStatistics.from_arrays(X, Y, gram=False))
    d_q, d_d = W.shape
    assert (d_q, d_d) == (X.shape[1], Y.shape[1]) and factor == 1.0
    # U V^T from the thin SVD is semi-orthogonal whatever the rank of X^T Y.
    if d_q >= d_d:
        np.testing.assert_allclose(W.T @ W, np.eye(d_d), atol=1e-8)
    else:
        np.testing.assert_allclose(W @ W.T, np.eye(d_q), atol=1e-8)


@FAST
@given(pairs(), st.floats(1e-3, 1e3))
def test_ridge_toward_prior_is_optimal(data, alpha):
    """The gradient of ||X W - Y||^2 + a ||W - W0||^2 vanishes at the solution."""
    X, Y, rng = data
    prior = rng.normal(size=(X.shape[1], Y.shape[1]))
    stats = PairStatistics.from_arrays(X, Y)
    W = ridge(stats, alpha, prior)
    lhs = (X.T @ X + alpha * np.eye(X.shape[1])) @ W
    rhs = X.T @ Y + alpha * prior
    np.testing.assert_allclose(lhs, rhs, atol=1e-8 * max(1.0, np.abs(rhs).max()))


@FAST
@given(pairs(), st.booleans())
def test_ridge_limits(data, with_prior):
    """alpha=inf returns the prior; alpha=0 solves the normal equations."""
    X, Y, rng = data
    prior = rng.normal(size=(X.shape[1], Y.shape[1])) if with_prior else None
    stats = PairStatistics.from_arrays(X, Y)
    expected_inf = prior if with_prior else np.zeros((X.shape[1], Y.shape[1]))
    np.testing.assert_array_equal(ridge(stats, np.inf, prior), expected_inf)
    W0 = ridge(stats, 0.0)
    np.testing.assert_allclose(X.T @ X @ W0, X.T @ Y, atol=1e-6 * max(1.0, np.abs(X.T @ Y).max()))


@settings(max_examples=10, deadline=None)
@given(
    pairs(max_dim=8),
    st.sampled_from([Procrustes, LeastSquares]),
    st.sampled_from([Ridge(alpha=1.0), Ridge(), Softmax()]),
    st.booleans(),
)
def test_refitting_is_idempotent(data, align, adapt, center):
    """Stage 2 restarts from the stored stage-1 map: a second fit changes nothing."""
    X, Y, _ = data
    est = ERAAdapter(align=align(center=center), adapt=adapt, random_state=0)
    est.fit_align(X, Y).fit(X, Y)
    first = est.coef_.copy(), est.intercept_.copy(), est.transform(X)
    est.fit(X, Y)
    np.testing.assert_array_equal(est.coef_, first[0])
    np.testing.assert_array_equal(est.intercept_, first[1])
    np.testing.assert_array_equal(est.transform(X), first[2])
