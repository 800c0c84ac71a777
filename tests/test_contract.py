"""Issue 11's contract: every setting validated, nothing silently ignored or stale.

Each test here reproduces one failure of 0.1.0 (see the issue) and asserts the
fixed behaviour.
"""

import inspect
import threading
from typing import ClassVar

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from era_sklearn import Corpus, ERAAdapter, ExactIndex
from era_sklearn.adapt import Contrastive, Ridge, Softmax
from era_sklearn.align import LeastSquares
from era_sklearn.metrics import retrieval_score


def planted(n=300, d_q=12, d_d=6, seed=0):
    rng = np.random.default_rng(seed)
    R = np.linalg.qr(rng.normal(size=(d_q, d_q)))[0][:, :d_d]
    X = rng.normal(size=(n, d_q))
    return X, X @ R + 0.1 * rng.normal(size=(n, d_d)), R


def labels(R, n_queries=60, seed=1):
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(n_queries, R.shape[0]))
    return Q, Q @ R + 0.2 * rng.normal(size=(n_queries, R.shape[1]))


# -- the surface ---------------------------------------------------------------------
def test_signature_is_small_and_has_no_kwargs():
    kinds = {p.kind for p in inspect.signature(ERAAdapter).parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds
    assert len(ERAAdapter().get_params(deep=False)) <= 14


def test_unknown_parameter_fails_at_set_params():
    with pytest.raises(ValueError, match="Invalid parameter 'alhpa'"):
        ERAAdapter().set_params(alhpa=1)


@pytest.mark.parametrize("solver, match", [
    (Contrastive(lr=-1.0), "'lr' parameter of Contrastive"),
    (Contrastive(lr="fast"), "'lr' parameter of Contrastive"),
    (Contrastive(batch_size=0), "'batch_size' parameter of Contrastive"),
    (Ridge(alpha=-1.0), "'alpha' parameter of Ridge"),
    (Softmax(temperature=0.0), "'temperature' parameter of Softmax"),
])
def test_bad_nested_value_names_the_parameter_before_any_work(solver, match, monkeypatch):
    import era_sklearn._stage2.problem as stage2

    monkeypatch.setattr(stage2.Stage2Problem, "__init__",
                        lambda *a, **k: pytest.fail("the problem was built before validation"))
    _X, _Y, R = planted()
    Q, D = labels(R)
    with pytest.raises(ValueError, match=match):
        ERAAdapter(adapt=solver).fit(Q, D)


def test_bad_nested_align_value_names_the_parameter():
    X, Y, _ = planted()
    with pytest.raises(ValueError, match="'alpha' parameter of LeastSquares"):
        ERAAdapter(align=LeastSquares(alpha=0)).fit_align(X, Y)


def test_blend_without_hybrid_is_an_error_not_ignored():
    X, Y, _ = planted()
    with pytest.raises(ValueError, match="blend=0.5 only applies with hybrid=True"):
        ERAAdapter(blend=0.5).fit_align(X, Y)


@pytest.mark.parametrize("alphas", [[np.nan, 1.0], [-1.0], []])
def test_alpha_grid_is_validated(alphas):
    X, Y, R = planted()
    Q, D = labels(R)
    adapter = ERAAdapter(adapt=Ridge(alphas=alphas), random_state=0).fit_align(X, Y)
    with pytest.raises(ValueError, match="alphas must be a non-empty list of non-negative"):
        adapter.fit(Q, D)


# -- state that cannot go stale --------------------------------------------------------
def test_changed_align_after_fit_align_is_refused():
    X, Y, R = planted()
    Q, D = labels(R)
    adapter = ERAAdapter(random_state=0).fit_align(X, Y)
    adapter.set_params(align="lstsq")
    with pytest.raises(ValueError, match="stage-1 map was fitted with other settings"):
        adapter.fit(Q, D)
    adapter.set_params(align="procrustes", hybrid=True)
    with pytest.raises(ValueError, match="stage-1 map was fitted with other settings"):
        adapter.fit(np.hstack([Q, D]), D)
    adapter.set_params(hybrid=False)
    adapter.fit(Q, D)  # settings back: the stored map is used again


def test_a_hybrid_aligned_adapter_on_a_plain_one_is_refused():
    X, Y, R = planted()
    Q, D = labels(R)
    hybrid = ERAAdapter(hybrid=True).fit_align(np.hstack([X, Y]), Y)
    with pytest.raises(ValueError, match="align is an ERAAdapter with hybrid=True"):
        ERAAdapter(align=hybrid).fit(Q, D)


def test_an_unfitted_adapter_as_align_says_how_to_keep_it():
    _, _, R = planted()
    Q, D = labels(R)
    with pytest.raises(ValueError, match="FrozenEstimator"):
        ERAAdapter(align=ERAAdapter()).fit(Q, D)


# -- wrong answers that became right ---------------------------------------------------------
def test_zero_sample_weight_drops_the_row():
    X, Y, R = planted()
    Q, D = labels(R)
    w = np.ones(len(Q))
    w[0] = 0.0
    weighted = ERAAdapter(adapt="ridge", random_state=0).fit_align(X, Y)
    weighted.fit(Q, D, sample_weight=w)
    dropped = ERAAdapter(adapt="ridge", random_state=0).fit_align(X, Y).fit(Q[1:], D[1:])
    assert np.isfinite(weighted.cv_results_["mean_ndcg@10"]).all()
    np.testing.assert_allclose(weighted.coef_, dropped.coef_)


def test_corpus_without_the_targets_is_an_error():
    X, Y, R = planted()
    Q, D = labels(R)
    unrelated = np.random.default_rng(5).normal(size=(200, D.shape[1]))
    with pytest.raises(ValueError, match="60 of 60 target rows are not in the corpus"):
        ERAAdapter().fit_align(X, Y).fit(Q, D, corpus=Corpus(unrelated))
    with pytest.raises(ValueError, match="target rows are not in the corpus"):
        retrieval_score(D, D, corpus=unrelated)


def test_raw_corpus_as_long_as_x_is_refused():
    X, Y, R = planted()
    Q, D = labels(R)
    corpus = np.vstack([D[:30], D[30:]])  # 60 documents, 60 pairs: could be sliced
    with pytest.raises(ValueError, match="as many rows as X .60.*era_sklearn.Corpus"):
        ERAAdapter().fit_align(X, Y).fit(Q, D, corpus=corpus)


class _SpyCorpus(Corpus):
    """A Corpus that records how many documents each fit saw."""

    seen: ClassVar[list] = []

    @property
    def embeddings(self):
        _SpyCorpus.seen.append(len(self._data))
        return self._data

    @embeddings.setter
    def embeddings(self, value):
        self._data = value


@pytest.mark.parametrize("index", [False, True])
def test_gridsearch_never_slices_the_corpus(index):
    from sklearn.frozen import FrozenEstimator

    X, Y, R = planted()
    Q, D = labels(R, n_queries=90)
    aligned = FrozenEstimator(ERAAdapter(adapt="ridge").fit_align(X, Y))
    # As many documents as pairs: exactly the case scikit-learn would slice.
    if index:
        corpus = ExactIndex().fit(D)
        seen = lambda: None
    else:
        _SpyCorpus.seen = []
        corpus = _SpyCorpus(D)
        seen = lambda: _SpyCorpus.seen
    search = GridSearchCV(ERAAdapter(align=aligned, adapt=Ridge()),
                          {"adapt__alpha": [1.0, 1e6]}, cv=3)
    search.fit(Q, D, corpus=corpus)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    if not index:
        assert set(seen()) == {90}  # every fit got all 90 documents


def test_lazy_streaming_solve_is_thread_safe():
    X, Y, _ = planted(n=2000)
    full = ERAAdapter().fit_align(X, Y)
    for _ in range(3):
        adapter = ERAAdapter()
        for start in range(0, 1000, 100):
            adapter.partial_fit_align(X[start:start + 100], Y[start:start + 100])
        adapter.transform(X[:2])  # solve on the first 1,000 rows
        for start in range(1000, 2000, 100):
            adapter.partial_fit_align(X[start:start + 100], Y[start:start + 100])
        outputs, errors = [], []
        barrier = threading.Barrier(4)

        def read(adapter=adapter, barrier=barrier, outputs=outputs, errors=errors):
            try:
                barrier.wait()
                outputs.append(adapter.transform(X[:20]))
            except Exception as exc:  # noqa: BLE001 (collected, then asserted empty)
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for out in outputs:  # every thread sees the map of all 2,000 rows
            np.testing.assert_allclose(out, full.transform(X[:20]), atol=1e-10)


# -- zero embeddings are data ------------------------------------------------------------
def test_zero_rows_in_alignment_and_labels_are_left_out_with_one_warning():
    X, Y, R = planted()
    Q, D = labels(R)
    Xz, Yz = X.copy(), Y.copy()
    Xz[3] = 0
    Yz[[5, 7]] = 0
    with pytest.warns(UserWarning, match="3 alignment pair.s. with an all-zero embedding"):
        zero = ERAAdapter().fit_align(Xz, Yz)
    clean = np.setdiff1d(np.arange(len(X)), [3, 5, 7])
    np.testing.assert_allclose(zero.align_coef_, ERAAdapter().fit_align(X[clean], Y[clean])
                               .align_coef_, atol=1e-12)
    Dz = D.copy()
    Dz[0] = 0
    with pytest.warns(UserWarning, match="1 labelled pair.s. with an all-zero embedding"):
        zero.fit(Q, Dz)


def test_zero_corpus_row_is_a_document_that_cannot_match():
    X, Y, R = planted()
    Q, D = labels(R)
    corpus = np.vstack([D, np.zeros((1, D.shape[1])), np.ones((40, D.shape[1]))])
    adapter = ERAAdapter(random_state=0).fit_align(X, Y).fit(Q, D, corpus=Corpus(corpus))
    assert np.isfinite(adapter.coef_).all()


def test_zero_query_maps_to_zero_and_hybrid_keeps_the_other_block():
    X, Y, _R = planted()
    adapter = ERAAdapter().fit_align(X, Y)
    Q = X[:3].copy()
    Q[1] = 0
    with pytest.warns(UserWarning, match="all-zero row"):
        out = adapter.transform(Q)
    assert np.all(out[1] == 0) and np.allclose(np.linalg.norm(out[[0, 2]], axis=1), 1)
    hybrid = ERAAdapter(hybrid=True).fit_align(np.hstack([X, Y]), Y)
    H = np.hstack([X[:3], Y[:3]])
    H[1, : X.shape[1]] = 0  # the strong encoder gave nothing; the cheap block remains
    with pytest.warns(UserWarning, match="query-encoder block"):
        out = hybrid.transform(H)
    np.testing.assert_allclose(out[1], Y[1] / np.linalg.norm(Y[1]), atol=1e-12)


# -- the paper's recipe ------------------------------------------------------------------
@pytest.mark.torch
def test_paper_recipe_carries_exactly_the_official_settings(monkeypatch):
    """paper_recipe() hands the torch solvers ERAConfig's settings (PAPER_ALIGN / PAPER_ADAPT),
    the ones benchmarks/paper_parity.py measured against the official code."""
    import era_sklearn._torch.fit as torch_fit
    from era_sklearn import paper_recipe

    seen = {}

    def spy(name, real):
        def call(*args, **kwargs):
            seen[name] = kwargs
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(torch_fit, "train_align_torch",
                        spy("align", torch_fit.train_align_torch))
    monkeypatch.setattr(torch_fit, "train_adapt_torch",
                        spy("adapt", torch_fit.train_adapt_torch))
    X, Y, R = planted(n=200)
    Q, D = labels(R, n_queries=40)
    adapter = paper_recipe(adapt__max_epochs=2, align__device="cpu", adapt__device="cpu",
                           random_state=0)
    adapter.fit_align(X, Y).fit(Q, D)
    for key, value in torch_fit.PAPER_ALIGN.items():
        assert seen["align"][key] == value, key
    for key, value in torch_fit.PAPER_ADAPT.items():
        expected = 2 if key == "max_epochs" else value  # the one override above
        assert seen["adapt"][key] == expected, key
    assert seen["adapt"]["fallback"] is None and seen["adapt"]["validation_fraction"] == 0.1
