"""Stage 2 with few labels: the penalty rule, the hybrid's plain-ERA candidate, the warning."""

import numpy as np
import pytest

from era_sklearn import Corpus, ERAAdapter
from era_sklearn._stage2.softmax import SoftmaxProblem
from era_sklearn._stage2.softmax_search import (
    choose_penalty,
    random_ranking_ndcg,
    select_and_fit,
)


def _unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _missing_direction(seed, n_queries=216, d_in=12, d_out=8, n_docs=400):
    """Queries whose relevant document is the best under ``W_true``; the prior misses
    ``W_true``'s action on one query direction ``v``, which every query leans on."""
    rng = np.random.default_rng(seed)
    W_true = rng.normal(size=(d_in, d_out))
    v = _unit(rng.normal(size=(1, d_in)))[0]
    W0 = W_true - np.outer(v, v @ W_true)  # blind along v
    docs = _unit(rng.normal(size=(n_docs, d_out)))
    X = _unit(rng.normal(size=(n_queries, d_in)) + 2.0 * rng.choice([-1, 1], (n_queries, 1)) * v)
    positive = np.argmax(_unit(X @ W_true) @ docs.T, axis=1)
    return X, docs, positive, W0


def _problem(X, docs, positive):
    return SoftmaxProblem.from_pairs(X, positive, docs, qids=np.arange(len(X)))


@pytest.mark.parametrize("seed", range(4))
def test_sixteen_queries_learn_a_helpful_direction(seed):
    X, docs, positive, W0 = _missing_direction(seed)
    train = _problem(X[:16], docs, positive[:16])
    heldout = _problem(X[16:], docs, positive[16:])  # 200 queries the fit never sees
    W, lam, history = select_and_fit(train, W0, random_state=0)
    assert np.isfinite(lam) and history["gain"] > 0
    assert heldout.ndcg(W) >= heldout.ndcg(W0) + 0.05


@pytest.mark.parametrize("seed", range(4))
def test_labels_without_signal_keep_the_prior(seed):
    """Relevant documents drawn at random: no penalty scores above stage 1 held out."""
    X, docs, _, W0 = _missing_direction(seed)
    noise = np.random.default_rng(seed + 100).integers(0, len(docs), 16)
    W, lam, history = select_and_fit(_problem(X[:16], docs, noise), W0, random_state=0)
    assert lam == np.inf and np.array_equal(W, W0)
    assert history["chosen_C"] == np.inf and history["gain"] <= 0


def test_the_rule_is_deterministic_for_a_random_state():
    X, docs, positive, W0 = _missing_direction(7)
    problem = _problem(X[:24], docs, positive[:24])
    runs = [select_and_fit(problem, W0, random_state=s) for s in (3, 3, 4)]
    assert runs[0][1] == runs[1][1] and np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][2]["heldout_ndcg"] == runs[1][2]["heldout_ndcg"]
    # Another random_state draws other folds (the choice may or may not differ).
    assert runs[0][2]["path"] != runs[2][2]["path"]


def test_choose_penalty_lands_on_the_default_among_indistinguishable_C():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 30)
    # The best C (8) is ahead of the others by far less than one paired standard error.
    shift = {4.0: 0.0, 8.0: 0.002, 16.0: 0.0, 32.0: -0.001, 64.0: -0.002}
    jitter = 0.05 * rng.normal(size=30)
    jitter -= jitter.mean()
    noise = {C: base + d + (jitter if C == 8.0 else 0) for C, d in shift.items()}
    C, summary = choose_penalty(noise, base - 0.05, default=16.0)
    assert C == 16.0 and summary["candidate_C"] == 16.0
    assert choose_penalty(noise, base - 0.05, default=64.0)[0] == 64.0
    # A C clearly better than all others wins over the default.
    clear = {**noise, 4.0: base + 0.3}
    assert choose_penalty(clear, base, default=16.0)[0] == 4.0
    # Stage 1 clearly better: kept. Within the noise: the default is the fallback.
    assert choose_penalty(noise, base + 0.2, default=16.0)[0] == np.inf
    wobble = 0.05 * rng.normal(size=30)
    wobble -= wobble.mean()
    assert choose_penalty(noise, base + 0.004 + wobble, default=16.0)[0] == 16.0
    # Stage 1 no better than chance on the held-out labels: C must gain clearly.
    chance = base - 0.001
    assert choose_penalty(noise, base - 0.004 + wobble, 16.0, random_scores=chance)[0] == np.inf
    assert choose_penalty(noise, base - 0.1, 16.0, random_scores=base - 0.1)[0] == 16.0


def test_random_ranking_ndcg_is_the_mean_over_permutations():
    from scipy import sparse

    from era_sklearn.metrics import ndcg_at_k

    rel = sparse.csr_matrix(np.array([[0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0],
                                      [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], float))
    rng = np.random.default_rng(0)
    draws = np.mean([ndcg_at_k(rng.normal(size=rel.shape), rel, k=10, average=False)
                     for _ in range(20000)], axis=0)
    np.testing.assert_allclose(random_ranking_ndcg(rel), draws, atol=0.01)


# -- through the estimator ---------------------------------------------------------
def _hybrid_data(seed=0, n_docs=400, n_queries=40):
    rng = np.random.default_rng(seed)
    d_s, d_c = 16, 8
    R = np.linalg.qr(rng.normal(size=(d_s, d_s)))[0][:, :d_c]
    docs_s = rng.normal(size=(n_docs, d_s))
    docs_c = docs_s @ R + 0.3 * rng.normal(size=(n_docs, d_c))
    rel = rng.integers(0, n_docs, n_queries)
    Q = docs_s[rel] + 0.5 * rng.normal(size=(n_queries, d_s))
    Qc = docs_c[rel] + 2.0 * rng.normal(size=(n_queries, d_c))  # a weak cheap encoder
    return docs_s, docs_c, rel, Q, Qc


@pytest.mark.parametrize("blend", [1.0, "auto"])
def test_hybrid_plain_candidate_equals_plain_era(blend):
    docs_s, docs_c, rel, Q, Qc = _hybrid_data()
    plain = ERAAdapter(random_state=0).fit_align(docs_s, docs_c)
    plain.fit(Q, docs_c[rel], corpus=Corpus(docs_c))
    hybrid = ERAAdapter(hybrid=True, blend=blend, random_state=0)
    hybrid.fit_align(np.hstack([docs_s, docs_c]), docs_c)
    hybrid.fit(np.hstack([Q, Qc]), docs_c[rel], corpus=Corpus(docs_c))
    # The cheap encoder is too weak to help here: auto picks plain ERA (blend 1.0), whose
    # cheap block is held at zero, so the hybrid maps exactly as the plain adapter does.
    assert hybrid.blend_ == 1.0 and hybrid.penalty_ == plain.penalty_
    np.testing.assert_array_equal(hybrid.coef_[16:], 0)
    np.testing.assert_allclose(hybrid.transform(np.hstack([Q, Qc])), plain.transform(Q),
                               rtol=0, atol=1e-12)
    if blend == "auto":
        report = hybrid.heldout_ndcg_
        assert report["plain ERA chosen"]["mean"] > report["hybrid blend 0.3 chosen"]["mean"]
        assert {"stage 1", "chosen", "gain over stage 1", "cheap encoder"} <= set(report)


def test_label_only_fit_with_few_labels_warns():
    _, docs_c, rel, Q, _ = _hybrid_data()
    with pytest.warns(UserWarning, match=r"fit without a stage-1 map .* call fit_align"):
        ERAAdapter(random_state=0).fit(Q, docs_c[rel], corpus=Corpus(docs_c))


def test_heldout_report_reads_as_the_choice():
    docs_s, docs_c, rel, Q, _ = _hybrid_data()
    est = ERAAdapter(random_state=0).fit_align(docs_s, docs_c)
    est.fit(Q, docs_c[rel], corpus=Corpus(docs_c))
    report = est.heldout_ndcg_
    assert report["n_queries"] == 40
    gain = report["gain over stage 1"]["mean"]
    assert gain == pytest.approx(report["chosen"]["mean"] - report["stage 1"]["mean"])
    assert (est.penalty_ == np.inf) == (gain <= 0)
