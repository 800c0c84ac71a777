"""A partial_fit_align stream keeps the settings of its first chunk (issue 20, item 3).

Each test here failed on 4685f9f, where a later chunk with other settings was
mixed in silently, and the map was solved when an attribute was first read,
with the settings current then.
"""

import json
import pickle

import numpy as np
import pytest

import era_sklearn.align
from era_sklearn import ERAAdapter


def _pairs(n=300, d_q=8, d_d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_q))
    Y = X @ rng.normal(size=(d_q, d_d)) + 0.1 * rng.normal(size=(n, d_d))
    return X, Y


def _hybrid_pairs():
    X, Y = _pairs()
    return np.hstack([X, Y]), Y


def test_solver_changed_between_chunks_is_an_error_and_the_map_keeps_its_label():
    X, Y = _pairs()
    est = ERAAdapter(align="procrustes").partial_fit_align(X[:150], Y[:150])
    est.set_params(align="lstsq")
    # The map and its label both come from the solver the chunk was fed with.
    W = est.align_coef_
    np.testing.assert_allclose(W.T @ W, np.eye(W.shape[1]), atol=1e-10)  # orthonormal
    assert json.loads(est.align_fingerprint_)["solver"] == "Procrustes"
    with pytest.raises(ValueError, match="align is .*LeastSquares.* first chunk"):
        est.partial_fit_align(X[150:], Y[150:])


def test_normalize_input_changed_between_chunks_is_an_error():
    X, Y = _pairs()
    est = ERAAdapter().partial_fit_align(X[:150], Y[:150])
    est.set_params(normalize_input=False)
    with pytest.raises(ValueError, match="normalize_input is False .* first chunk"):
        est.partial_fit_align(X[150:], Y[150:])


def test_hybrid_changed_between_chunks_is_an_error():
    X, Y = _hybrid_pairs()
    est = ERAAdapter(hybrid=True).partial_fit_align(X[:150], Y[:150])
    est.set_params(hybrid=False)
    with pytest.raises(ValueError, match="hybrid is False .* first chunk"):
        est.partial_fit_align(X[150:], Y[150:])


def test_blend_is_the_streams_own():
    X, Y = _hybrid_pairs()
    est = ERAAdapter(hybrid=True, blend=0.5).partial_fit_align(X[:150], Y[:150])
    est.set_params(blend=0.8)
    head = est.coef_[: X.shape[1] - Y.shape[1]]
    assert est.blend_ == 0.5  # set_params changes no fitted state
    np.testing.assert_allclose(head, 0.5 * est.align_coef_)
    with pytest.raises(ValueError, match="blend is 0.8 .* first chunk"):
        est.partial_fit_align(X[150:], Y[150:])


def test_reading_a_fitted_attribute_solves_nothing(monkeypatch):
    X, Y = _pairs()
    calls = []
    original = era_sklearn.align.procrustes
    monkeypatch.setattr(era_sklearn.align, "procrustes",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    est = ERAAdapter().partial_fit_align(X[:150], Y[:150]).partial_fit_align(X[150:], Y[150:])
    solved = len(calls)
    assert hasattr(est, "coef_") and est.align_docs_ is not None
    assert len(calls) == solved  # the read ran no solve
    # Fitted attributes are plain instance values: no descriptor on the class.
    for name in ("coef_", "intercept_", "align_coef_", "align_intercept_", "align_docs_"):
        assert name in vars(est) and name not in vars(ERAAdapter)


def test_a_pickled_stream_continues():
    X, Y = _pairs()
    est = pickle.loads(pickle.dumps(ERAAdapter().partial_fit_align(X[:150], Y[:150])))
    full = ERAAdapter().fit_align(X, Y)
    est.partial_fit_align(X[150:], Y[150:])
    np.testing.assert_allclose(est.align_coef_, full.align_coef_, atol=1e-10)
