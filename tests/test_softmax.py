"""The softmax stage 2 (pure functions) and its candidate sets."""

import warnings

import numpy as np
import pytest

from era_sklearn._stage2.candidates import bounded_candidates
from era_sklearn._stage2.corpus import match_targets
from era_sklearn._stage2.softmax import (
    SoftmaxProblem,
    _loss_grad_Z,
    fit_softmax,
    label_only_prior,
)
from era_sklearn._stage2.softmax_search import select_and_fit


def softmax_loss_grad(W, problem, lam, W0):
    """The objective by its definition: the data term (the package's block kernel,
    ``_loss_grad_Z``, as every fit uses it) plus ``lam ||W - W0||^2``, in float64."""
    W = np.asarray(W, dtype=problem.X.dtype)
    loss, grad_Z = _loss_grad_Z(problem.X @ W, problem)
    diff = W.astype(np.float64) - W0
    return (loss + lam * float(np.sum(diff * diff)),
            (problem.X.T @ grad_Z).astype(np.float64) + 2.0 * lam * diff)


def _unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _planted(seed, n_queries=80, d_in=10, d_out=6, n_docs=120, noise=1.5):
    """Queries whose relevant document is the best under a hidden map ``W_true``."""
    rng = np.random.default_rng(seed)
    W_true = rng.normal(size=(d_in, d_out))
    docs = _unit(rng.normal(size=(n_docs, d_out)))
    X = _unit(rng.normal(size=(n_queries, d_in)))
    positive = np.argmax(_unit(X @ W_true) @ docs.T, axis=1)
    W0 = W_true + noise * rng.normal(size=W_true.shape)  # a poor prior
    return X, docs, positive, W0


def _problem(X, docs, positive, **kw):
    qids = np.arange(len(X))
    return SoftmaxProblem.from_pairs(X, positive, docs, qids=qids, **kw)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    n_q, d_in, d_out, n_docs = 7, 5, 4, 30
    # Several rows per query with graded, repeated and many positives.
    qids = np.repeat(np.arange(n_q), 3)
    X = rng.normal(size=(n_q, d_in))[qids]
    docs = rng.normal(size=(n_docs, d_out))
    docs[4] = 0  # an all-zero document
    doc_idx = rng.integers(0, n_docs, size=len(qids))
    grades = rng.integers(1, 3, size=len(qids)).astype(float)
    problem = SoftmaxProblem.from_pairs(
        X, doc_idx, docs, qids=qids, grades=grades, query_weight=rng.uniform(0.5, 2, n_q),
        intercept=0.1 * rng.normal(size=d_out), temperature=0.2,
    )
    W0 = rng.normal(size=(d_in, d_out))
    W = W0 + 0.5 * rng.normal(size=W0.shape)
    loss, grad = softmax_loss_grad(W, problem, 0.3, W0)
    eps = 1e-6
    numeric = np.zeros_like(W)
    for idx in np.ndindex(*W.shape):
        step = np.zeros_like(W)
        step[idx] = eps
        numeric[idx] = (softmax_loss_grad(W + step, problem, 0.3, W0)[0]
                        - softmax_loss_grad(W - step, problem, 0.3, W0)[0]) / (2 * eps)
    assert np.isfinite(loss)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_solver_objective_is_the_loss_in_whitened_gauge_fixed_coordinates():
    """The function L-BFGS sees: same loss, exact gradient, W - W0 orthogonal to W0."""
    from era_sklearn._stage2.softmax import _Objective

    rng = np.random.default_rng(1)
    qids = np.repeat(np.arange(9), 2)
    X = rng.normal(size=(9, 6))[qids]
    problem = SoftmaxProblem.from_pairs(X, rng.integers(0, 25, 18), rng.normal(size=(25, 4)),
                                        qids=qids, intercept=0.1 * rng.normal(size=4),
                                        temperature=0.3)
    W0 = rng.normal(size=(6, 4))
    objective = _Objective(problem, W0, 0.2, True)
    x = 0.3 * rng.normal(size=W0.size)
    loss, grad = objective(x)
    W = objective.W_of(x)
    assert loss == pytest.approx(softmax_loss_grad(W, problem, 0.2, W0)[0], rel=1e-12)
    assert abs(np.sum((W - W0) * W0)) < 1e-12
    np.testing.assert_allclose(objective.W_of(objective.x_of(W)), W, atol=1e-12)
    step = 1e-6 * np.eye(x.size)
    numeric = [(objective(x + e)[0] - objective(x - e)[0]) / 2e-6 for e in step]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_targets_are_the_normalised_grades():
    docs = np.eye(4)
    problem = SoftmaxProblem.from_pairs(np.ones((3, 2)), [0, 1, 1], docs, qids=[5, 5, 5],
                                        grades=[2.0, 1.0, 1.0])
    # One query; a repeated pair keeps its largest grade: targets 2/3, 1/3.
    assert problem.n_queries == 1
    np.testing.assert_allclose(problem.target_mean, [[2 / 3, 1 / 3, 0, 0]])


def test_infinite_penalty_returns_the_prior_exactly():
    X, docs, positive, W0 = _planted(0)
    problem = _problem(X, docs, positive)
    W0 = W0.astype(np.float32)
    W, info = fit_softmax(problem, W0, lam=np.inf)
    assert np.array_equal(W, W0) and info["n_eval"] == 0
    W, lam, _ = select_and_fit(problem, W0, lam=np.inf)
    assert np.array_equal(W, W0) and lam == np.inf


def test_planted_positives_are_ranked_first():
    X, docs, positive, W0 = _planted(1, n_queries=250)
    train, test = np.arange(150), np.arange(150, 250)
    problem = _problem(X[train], docs, positive[train])
    heldout = _problem(X[test], docs, positive[test])

    def top1(W):  # share of unseen queries whose planted positive ranks first
        return np.mean(np.argmax(heldout.mapped(W) @ docs.T, axis=1) == positive[test])

    lams = np.array([1.0, 0.1, 0.01]) / len(train)
    W, lam, history = select_and_fit(problem, W0, lams=lams, random_state=0)
    assert lam == lams[-1] and history["heldout_ndcg"] == sorted(history["heldout_ndcg"])
    assert top1(W0) < 0.2 and top1(W) >= 0.8


def test_few_labels_keep_the_prior():
    """Three labelled queries cannot show a gain beyond noise: the prior stays."""
    X, docs, positive, W0 = _planted(2)
    problem = _problem(X[:3], docs, positive[:3])
    W, lam, history = select_and_fit(problem, W0, random_state=0)
    assert lam == np.inf and np.array_equal(W, W0)
    # Three folds of one query, repeated (HELDOUT_EVALUATIONS / 3 > MAX_REPEATS = 2).
    assert history["n_folds"] == 6 and history["n_repeats"] == 2


def test_same_random_state_gives_the_same_map():
    X, docs, positive, W0 = _planted(3)
    problem = _problem(X, docs, positive)
    lams = np.array([4.0, 1.0]) / problem.n_queries
    W1, lam1, _ = select_and_fit(problem, W0, lams=lams, random_state=7)
    W2, lam2, _ = select_and_fit(problem, W0, lams=lams, random_state=7)
    assert lam1 == lam2 and np.array_equal(W1, W2)


def test_label_only_prior_is_a_usable_start():
    X, docs, positive, _ = _planted(4, n_queries=150)
    problem = _problem(X, docs, positive)
    W0 = label_only_prior(problem)
    W, _info = fit_softmax(problem, W0, lam=1.0 / problem.n_queries)
    assert problem.ndcg(W) > problem.ndcg(W0) + 0.1


def test_bad_shapes_raise():
    X, docs, positive, W0 = _planted(10, n_queries=20)
    with pytest.raises(ValueError, match="one entry per row"):
        SoftmaxProblem.from_pairs(X, positive[:-1], docs, qids=np.arange(20))
    with pytest.raises(ValueError, match="past the 120 candidates"):
        SoftmaxProblem.from_pairs(X, positive + 120, docs, qids=np.arange(20))
    problem = _problem(X, docs, positive)
    with pytest.raises(ValueError, match=r"shape \(d_in, d_out\) = \(10, 6\)"):
        fit_softmax(problem, W0.T, lam=1.0)
    with pytest.raises(ValueError, match="NaN"):
        select_and_fit(problem, np.full_like(W0, np.nan))


def test_target_missing_from_the_corpus_raises():
    rng = np.random.default_rng(5)
    corpus = rng.normal(size=(50, 8)).astype(np.float32)
    Y = np.vstack([corpus[[3, 7, 7]], rng.normal(size=(2, 8))]).astype(np.float32)
    with pytest.raises(ValueError, match="2 of 5 target rows are not in the corpus"):
        match_targets(Y, corpus)
    # A near copy (a re-encoding in float16, say) still matches.
    Y_close = corpus[[3, 7]] + 1e-4 * rng.normal(size=(2, 8)).astype(np.float32)
    np.testing.assert_array_equal(match_targets(Y_close, corpus), [3, 7])


def test_zero_corpus_rows_do_not_produce_nan():
    X, docs, positive, W0 = _planted(6)
    docs = docs.copy()
    zero = np.setdiff1d(np.arange(len(docs)), positive)[:10]
    docs[zero] = 0
    C, doc_idx, _ = bounded_candidates(docs, match_targets(docs[positive], docs))
    problem = SoftmaxProblem.from_pairs(X, doc_idx, C, qids=np.arange(len(X)))
    loss, grad = softmax_loss_grad(W0, problem, 0.1, W0)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert not problem.C[zero].any()
    W, _ = fit_softmax(problem, W0, lam=0.1, max_iter=20)
    assert np.isfinite(W).all() and np.isfinite(problem.ndcg(W))


def test_zero_target_rows_are_left_out():
    corpus = np.vstack([np.eye(3), np.zeros((1, 3))])
    problem = SoftmaxProblem.from_pairs(np.ones((2, 2)), np.array([0, -1]), corpus, qids=[0, 1])
    assert problem.n_queries == 1  # query 1's only target cannot be ranked


def test_large_corpus_gives_a_bounded_deterministic_set():
    rng = np.random.default_rng(8)
    corpus = rng.normal(size=(3000, 6)).astype(np.float32)
    positives = np.array([5, 17, 17, 2999])
    queries = _unit(rng.normal(size=(4, 6))).astype(np.float32)
    kw = {"queries": queries, "max_candidates": 400, "top_k": 50, "random_state": 0}
    C, doc_idx, chosen = bounded_candidates(corpus, positives, **kw)
    assert len(C) == 400 == len(np.unique(chosen))
    np.testing.assert_array_equal(chosen[doc_idx], positives)
    # Every query's best documents under the prior are in, and the set is reproducible.
    best = np.argmax(queries @ _unit(corpus).T, axis=1)
    assert np.isin(best, chosen).all()
    np.testing.assert_array_equal(bounded_candidates(corpus, positives, **kw)[2], chosen)
    small = bounded_candidates(corpus[:500], positives[:3], queries=queries,
                               max_candidates=1000)[2]
    np.testing.assert_array_equal(small, np.arange(500))  # a small corpus is used whole


def test_float32_problem_stays_float32_and_finite():
    X, docs, positive, W0 = _planted(9)
    problem = _problem(X.astype(np.float32), docs, positive)
    assert problem.C.dtype == np.float32 == problem.target_mean.dtype
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in exp at a small temperature
        loss, grad = softmax_loss_grad(W0 * 100, problem, 0.0, W0)
    assert np.isfinite(loss) and grad.dtype == np.float64


def test_fits_with_different_priors_on_one_problem_do_not_share_products():
    """The per-problem product cache must never serve one prior's products to another."""
    X, docs, positive, W0 = _planted(10, n_queries=60)
    problem = _problem(X, docs, positive)
    other = W0 + 0.5 * np.random.default_rng(3).normal(size=W0.shape)
    first = fit_softmax(problem, W0 + 0.0, lam=0.5, max_iter=5)[0]
    shared = fit_softmax(problem, other + 0.0, lam=0.5, max_iter=5)[0]
    fresh = fit_softmax(_problem(X, docs, positive), other, lam=0.5, max_iter=5)[0]
    np.testing.assert_allclose(shared, fresh, rtol=1e-10, atol=1e-12)
    assert not np.allclose(first, shared)
