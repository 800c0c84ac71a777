"""ERAAdapter's contract: solvers, stages, scikit-learn integration, hybrid mode."""

import joblib
import numpy as np
import pytest
from _bounds import assert_map_within
from sklearn.decomposition import PCA
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from era_sklearn import Corpus, ERAAdapter
from era_sklearn.adapt import Contrastive
from era_sklearn.adapt import Ridge as RidgeAdapt
from era_sklearn.align import LeastSquares, Procrustes, TorchAlign


def planted(n=400, d_q=16, d_d=8, noise=0.0, seed=0, dtype=np.float64):
    """Paired embeddings whose true map is a random semi-orthogonal matrix."""
    rng = np.random.default_rng(seed)
    R = np.linalg.qr(rng.normal(size=(max(d_q, d_d), max(d_q, d_d))))[0][:d_q, :d_d]
    # Centred, whitened inputs (X^T X = n I, zero column means): then the
    # Procrustes objective trace(W^T X^T Y) and ||X W - Y|| agree exactly.
    X = rng.normal(size=(n, d_q))
    X = np.linalg.qr(X - X.mean(axis=0))[0] * np.sqrt(n)
    Y = X @ R + noise * rng.normal(size=(n, d_d))
    return X.astype(dtype), Y.astype(dtype), R


def query_pairs(R, n_queries=60, seed=1, noise=0.3):
    """Labelled rows: each query's relevant documents lie near its mapped embedding."""
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(n_queries, R.shape[0]))
    reps = rng.integers(1, 4, size=n_queries)  # 1-3 relevant documents per query
    X = np.repeat(Q, reps, axis=0)
    Y = X @ R + noise * rng.normal(size=(len(X), R.shape[1]))
    groups = np.repeat(np.arange(n_queries), reps)
    return X, Y, groups


# -- closed-form stage 1 ------------------------------------------------------
@pytest.mark.parametrize("d_q, d_d", [(8, 8), (16, 8), (8, 16)])
def test_procrustes_recovers_planted_map_and_is_semi_orthogonal(d_q, d_d):
    X, Y, R = planted(d_q=d_q, d_d=d_d)
    W = ERAAdapter(normalize_input=False).fit_align(X, Y).align_coef_
    if d_q >= d_d:
        np.testing.assert_allclose(W.T @ W, np.eye(d_d), atol=1e-10)
        np.testing.assert_allclose(W, R, atol=1e-8)  # exact recovery of the planted map
    else:
        np.testing.assert_allclose(W @ W.T, np.eye(d_q), atol=1e-10)
        # X R is fully explained: the recovered map reproduces the targets.
        np.testing.assert_allclose(X @ W, Y, atol=1e-8)


def test_procrustes_scale_recovers_global_factor():
    X, Y, R = planted()
    adapter = ERAAdapter(align=Procrustes(scale=True), normalize_input=False).fit_align(X, 3.0 * Y)
    np.testing.assert_allclose(adapter.align_coef_, 3.0 * R, atol=1e-8)


def test_centering_learns_the_offset():
    X, Y, _R = planted()
    offset = np.linspace(-1, 1, Y.shape[1])
    adapter = ERAAdapter(align=Procrustes(center=True), normalize_input=False, normalize_output=False)
    adapter.fit_align(X + 5.0, Y + offset)
    np.testing.assert_allclose(adapter.transform(X[:5] + 5.0), Y[:5] + offset, atol=1e-8)


def test_lstsq_equals_sklearn_ridge_without_intercept():
    X, Y, _ = planted(noise=0.5)
    adapter = ERAAdapter(align=LeastSquares(alpha=3.0), normalize_input=False).fit_align(X, Y)
    ridge = Ridge(alpha=3.0, fit_intercept=False).fit(X, Y)
    np.testing.assert_allclose(adapter.align_coef_, ridge.coef_.T, atol=1e-10)


# -- stage 2 ---------------------------------------------------------------------
def aligned_and_labels(seed=0):
    X, Y, R = planted(noise=0.2, seed=seed)
    Xl, Yl, groups = query_pairs(R, seed=seed + 1)
    return X, Y, Xl, Yl, groups


def test_stage2_alpha_limits():
    X, Y, Xl, Yl, _ = aligned_and_labels()
    kw = {"normalize_input": False}
    stage1 = ERAAdapter(**kw).fit_align(X, Y).align_coef_
    huge = ERAAdapter(adapt=RidgeAdapt(alpha=1e12), **kw).fit_align(X, Y).fit(Xl, Yl)
    np.testing.assert_allclose(huge.coef_, stage1, atol=1e-8)
    tiny = ERAAdapter(adapt=RidgeAdapt(alpha=0.0), query_weighting="rows", **kw)
    tiny.fit_align(X, Y).fit(Xl, Yl)
    unregularised = np.linalg.lstsq(Xl, Yl, rcond=None)[0]
    np.testing.assert_allclose(tiny.coef_, unregularised, atol=1e-8)


def test_stage2_solves_ridge_toward_the_stage1_map():
    X, Y, Xl, Yl, _ = aligned_and_labels()
    adapter = ERAAdapter(adapt=RidgeAdapt(alpha=2.0), normalize_input=False,
                         query_weighting="rows")
    adapter.fit_align(X, Y).fit(Xl, Yl)
    W, W0 = adapter.coef_, adapter.align_coef_
    # Normal equations of argmin ||X W - Y||^2 + a ||W - W0||^2.
    lhs = (Xl.T @ Xl + 2.0 * np.eye(Xl.shape[1])) @ W
    np.testing.assert_allclose(lhs, Xl.T @ Yl + 2.0 * W0, atol=1e-8)


def test_fit_twice_gives_the_same_map():
    X, Y, Xl, Yl, groups = aligned_and_labels()
    for adapt in ["ridge", "softmax"]:
        adapter = ERAAdapter(adapt=adapt, random_state=0).fit_align(X, Y)
        first = adapter.fit(Xl, Yl, groups=groups).coef_.copy()
        second = adapter.fit(Xl, Yl, groups=groups).coef_
        np.testing.assert_array_equal(first, second)


def test_auto_alpha_keeps_stage1_when_labels_do_not_help():
    # Stage 1 already has the true map; a few very noisy labels can only hurt.
    X, Y, R = planted(noise=0.05)
    Xl, Yl, groups = query_pairs(R, n_queries=40, noise=3.0)
    aligned = ERAAdapter(random_state=0).fit_align(X, Y)
    Xt, Yt, _ = query_pairs(R, n_queries=100, seed=7, noise=0.1)
    for adapt in ["ridge", "softmax"]:
        adapter = ERAAdapter(adapt=adapt, random_state=0).fit_align(X, Y)
        adapter.fit(Xl, Yl, groups=groups)
        assert adapter.score(Xt, Yt) >= aligned.score(Xt, Yt) - 0.01, adapt
    unguarded = ERAAdapter(adapt=RidgeAdapt(alpha=0.01), random_state=0).fit_align(X, Y)
    assert unguarded.fit(Xl, Yl).score(Xt, Yt) < aligned.score(Xt, Yt) - 0.1  # the trap is real


def test_auto_penalty_uses_helpful_labels():
    # Stage 1 from weak alignment data; labels from the true map help.
    X, Y, R = planted(n=30, noise=2.0)
    Xl, Yl, groups = query_pairs(R, n_queries=150, noise=0.05)
    Xt, Yt, _ = query_pairs(R, n_queries=80, seed=9, noise=0.05)
    aligned_only = ERAAdapter(random_state=0).fit_align(X, Y)
    for adapt in ["ridge", "softmax"]:
        adapter = ERAAdapter(adapt=adapt, random_state=0).fit_align(X, Y)
        adapter.fit(Xl, Yl, groups=groups)
        assert np.isfinite(adapter.penalty_), adapt
        assert adapter.score(Xt, Yt) > aligned_only.score(Xt, Yt) + 0.05, adapt


def test_rows_sharing_a_query_are_one_query():
    # Identical X rows without groups are grouped exactly like explicit groups.
    X, Y, Xl, Yl, groups = aligned_and_labels()
    implicit = ERAAdapter(adapt="ridge", random_state=0).fit_align(X, Y).fit(Xl, Yl)
    explicit = ERAAdapter(adapt="ridge", random_state=0).fit_align(X, Y)
    explicit.fit(Xl, Yl, groups=groups)
    np.testing.assert_allclose(implicit.coef_, explicit.coef_, atol=1e-12)
    assert implicit.penalty_ == explicit.penalty_


def test_balanced_weighting_gives_each_query_one_unit():
    # Duplicating every row of one query must not change a balanced fit.
    X, Y, Xl, Yl, groups = aligned_and_labels()
    extra = np.flatnonzero(groups == 0)
    Xd, Yd = np.vstack([Xl, Xl[extra]]), np.vstack([Yl, Yl[extra]])
    kw = {"adapt": RidgeAdapt(alpha=1.0), "normalize_input": False}
    base = ERAAdapter(**kw).fit_align(X, Y).fit(Xl, Yl)
    dup = ERAAdapter(**kw).fit_align(X, Y).fit(Xd, Yd)
    np.testing.assert_allclose(base.coef_, dup.coef_, atol=1e-10)
    rows = ERAAdapter(query_weighting="rows", **kw).fit_align(X, Y).fit(Xd, Yd)
    assert not np.allclose(rows.coef_, base.coef_)


def test_label_only_without_fit_align():
    _, _, R = planted()
    Xl, Yl, groups = query_pairs(R, n_queries=120, noise=0.05)
    for adapt in ["ridge", "softmax"]:
        with pytest.warns(UserWarning, match="fit without a stage-1 map learns from the 120"):
            adapter = ERAAdapter(adapt=adapt, random_state=0).fit(Xl, Yl, groups=groups)
        assert adapter.align_coef_ is None
        assert adapter.score(Xl, Yl) > 0.9, adapt


def test_corpus_is_used_for_heldout_ranking():
    X, Y, Xl, Yl, _groups = aligned_and_labels()
    rng = np.random.default_rng(3)
    # Near-duplicates of the targets: hard distractors that only the corpus contains.
    corpus = np.vstack([Yl, Yl + 0.05 * rng.normal(size=Yl.shape)])
    adapter = ERAAdapter(adapt="ridge", random_state=0).fit_align(X, Y)
    adapter.fit(Xl, Yl, corpus=Corpus(corpus))
    assert set(adapter.cv_results_) == {"alpha", "blend", "mean_ndcg@10"}
    # Against those distractors the held-out scores are lower than without the corpus.
    targets_only = ERAAdapter(adapt="ridge", random_state=0).fit_align(X, Y).fit(Xl, Yl)
    assert max(adapter.cv_results_["mean_ndcg@10"]) < max(
        targets_only.cv_results_["mean_ndcg@10"])
    with pytest.raises(ValueError, match="corpus has 3 features but Y has 8"):
        ERAAdapter().fit_align(X, Y).fit(Xl, Yl, corpus=Corpus(corpus[:, :3]))


def test_transform_output_is_normalised_and_float32_stays_float32():
    X, Y, Xl, Yl, _ = aligned_and_labels()
    adapter = ERAAdapter(random_state=0).fit_align(X.astype(np.float32), Y.astype(np.float32))
    adapter.fit(Xl.astype(np.float32), Yl.astype(np.float32))
    out = adapter.transform(Xl.astype(np.float32))
    assert adapter.coef_.dtype == np.float32 and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert adapter.transform(Xl).dtype == np.float64


def test_score_is_ndcg_against_distinct_targets():
    X, Y, _R = planted()
    adapter = ERAAdapter(normalize_input=False).fit_align(X, Y)
    assert adapter.score(X[:50], Y[:50]) == pytest.approx(1.0)
    shuffled = Y[:50][np.random.default_rng(0).permutation(50)]
    assert adapter.score(X[:50], shuffled) < 0.5


# -- scikit-learn integration -----------------------------------------------------
def test_pipeline_with_pca():
    _X, _Y, Xl, Yl, _ = aligned_and_labels()
    rng = np.random.default_rng(0)
    Xwide = np.hstack([Xl, rng.normal(size=(len(Xl), 80))])
    pipe = Pipeline([("pca", PCA(64, random_state=0)), ("era", ERAAdapter(random_state=0))])
    with pytest.warns(UserWarning, match="fit without a stage-1 map"):  # PCA -> label-only
        out = pipe.fit(Xwide, Yl).transform(Xwide)
    assert out.shape == (len(Xl), Yl.shape[1])
    assert pipe.named_steps["era"].n_features_in_ == 64


def test_gridsearch_keeps_stage1_through_a_frozen_aligned_adapter():
    X, Y, Xl, Yl, _ = aligned_and_labels()
    aligned = ERAAdapter(normalize_input=False).fit_align(X, Y)
    search = GridSearchCV(
        ERAAdapter(align=FrozenEstimator(aligned), adapt=RidgeAdapt(), normalize_input=False),
        {"adapt__alpha": [1e12]},
        cv=3,
    ).fit(Xl, Yl)
    best = search.best_estimator_
    # A huge alpha returns the prior: the stage-1 map survived clone().
    np.testing.assert_allclose(best.coef_, aligned.align_coef_, atol=1e-8)
    with pytest.warns(UserWarning, match="fit without a stage-1 map"):
        label_only = ERAAdapter(adapt=RidgeAdapt(alpha=1e12), normalize_input=False).fit(Xl, Yl)
    assert np.abs(label_only.coef_).max() < 1e-6  # without stage 1, the prior is zero


def test_gridsearch_over_nested_setting_and_over_solver_objects():
    X, Y, Xl, Yl, _groups = aligned_and_labels()
    aligned = FrozenEstimator(ERAAdapter(random_state=0).fit_align(X, Y))
    nested = GridSearchCV(
        ERAAdapter(align=aligned, adapt=RidgeAdapt(), random_state=0),
        {"adapt__alpha": [0.1, 1e12]}, cv=3,
    ).fit(Xl, Yl)
    assert set(nested.cv_results_["param_adapt__alpha"]) == {0.1, 1e12}
    choice = GridSearchCV(
        ERAAdapter(align=aligned, random_state=0),
        {"adapt": [RidgeAdapt(alpha=1e12), RidgeAdapt(alpha=0.1)]}, cv=3,
    ).fit(Xl, Yl)
    scores = choice.cv_results_["mean_test_score"]
    assert len(scores) == 2 and scores[0] != scores[1]


def test_joblib_round_trip(tmp_path):
    X, Y, Xl, Yl, _ = aligned_and_labels()
    adapter = ERAAdapter(random_state=0).fit_align(X, Y).fit(Xl, Yl)
    joblib.dump(adapter, tmp_path / "a.joblib")
    loaded = joblib.load(tmp_path / "a.joblib")
    np.testing.assert_array_equal(loaded.transform(Xl), adapter.transform(Xl))


def test_partial_fit_align_equals_fit_align_and_solves_once_per_chunk(monkeypatch):
    X, Y, _ = planted(n=1000, noise=0.3, dtype=np.float32)
    for align in [Procrustes(), LeastSquares()]:
        solves = []
        original = type(align).solve
        monkeypatch.setattr(type(align), "solve",
                            lambda self, p, original=original, solves=solves: (solves.append(1)
                                                                        or original(self, p)))
        full = ERAAdapter(align=align).fit_align(X, Y)
        streamed = ERAAdapter(align=align)
        solves.clear()
        for start in range(0, len(X), 100):
            streamed.partial_fit_align(X[start:start + 100], Y[start:start + 100])
        assert len(solves) == 10  # ten chunks, one solve at the end of each
        kind = "lstsq" if isinstance(align, LeastSquares) else "procrustes"
        # Both within the float32 error bound of the exact map; reading solves nothing.
        assert_map_within(streamed, X, Y, kind=kind)
        assert len(solves) == 10
        assert_map_within(full, X, Y, kind=kind)


# -- torch path through the estimator -------------------------------------------
def fast_contrastive(**kw):
    return Contrastive(**{"max_epochs": 5, "batch_size": 32, "device": "cpu", **kw})


@pytest.mark.torch
def test_contrastive_is_deterministic_and_records_history():
    X, Y, Xl, Yl, groups = aligned_and_labels()
    # No validation split: plain training, so seeds must show in the weights.
    solver = fast_contrastive(patience=None, validation_fraction=0.0)
    fit = lambda seed: ERAAdapter(adapt=solver, random_state=seed) \
        .fit_align(X, Y).fit(Xl, Yl, groups=groups)
    a, b, c = fit(0), fit(0), fit(1)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)
    assert not np.allclose(a.coef_, a.align_coef_)  # training moved the map
    epochs = a.history_["epochs"]
    assert len(epochs) == 5 and a.history_["stop_reason"] == "max_epochs"
    assert {"epoch", "train_loss", "valid_loss"} <= set(epochs[0])


@pytest.mark.torch
def test_contrastive_skips_training_with_too_few_queries():
    X, Y, Xl, Yl, groups = aligned_and_labels()
    few = np.isin(groups, np.arange(12))  # 12 queries < 2 x min_valid_queries
    adapter = ERAAdapter(adapt=fast_contrastive(), random_state=0)
    adapter.fit_align(X, Y).fit(Xl[few], Yl[few], groups=groups[few])
    assert adapter.history_["stop_reason"] == "too_few_queries"
    ridge_only = ERAAdapter(adapt="ridge", random_state=0).fit_align(X, Y)
    ridge_only.fit(Xl[few], Yl[few], groups=groups[few])
    np.testing.assert_array_equal(adapter.coef_, ridge_only.coef_)


@pytest.mark.torch
def test_mixing_closed_form_and_torch_stages():
    X, Y, Xl, Yl, groups = aligned_and_labels()
    torch_then_ridge = ERAAdapter(align=TorchAlign(max_epochs=2, device="cpu"), adapt="ridge",
                                  random_state=0)
    torch_then_ridge.fit_align(X, Y).fit(Xl, Yl, groups=groups)
    assert torch_then_ridge.align_history_ and torch_then_ridge.history_ is None
    mlp = ERAAdapter(adapt=fast_contrastive(model="mlp", hidden_size=16), random_state=0)
    mlp.fit_align(X, Y).fit(Xl, Yl, groups=groups)
    assert mlp.module_params_ is not None
    out = mlp.transform(Xl)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_from_era_checkpoint_matches_eras_formula(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(6, 10)).astype(np.float32)  # (d_d, d_q) as nn.Linear stores it
    bias = rng.normal(size=6).astype(np.float32)
    torch.save({"proj.weight": torch.from_numpy(weight), "proj.bias": torch.from_numpy(bias)},
               tmp_path / "era.pt")
    adapter = ERAAdapter.from_era_checkpoint(tmp_path / "era.pt")
    x = rng.normal(size=(4, 10)).astype(np.float32)
    expected = x @ weight.T + bias
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(adapter.transform(x), expected, atol=1e-6)


# -- hybrid queries ----------------------------------------------------------------
def hybrid_data(seed=0):
    """[strong, cheap] embeddings of texts; the cheap block is y itself for documents."""
    X, Y, R = planted(noise=0.3, seed=seed)
    Xl, Yl, groups = query_pairs(R, seed=seed + 1)
    cheap_q = Xl @ R + 0.5 * np.random.default_rng(seed).normal(size=Yl.shape)
    return np.hstack([X, Y]), Y, np.hstack([Xl, cheap_q]), Yl, groups, cheap_q


def test_hybrid_blend_zero_is_the_cheap_baseline():
    Xa, Ya, Xh, _, _, cheap_q = hybrid_data()
    adapter = ERAAdapter(hybrid=True, blend=0.0).fit_align(Xa, Ya)
    expected = cheap_q / np.linalg.norm(cheap_q, axis=1, keepdims=True)
    np.testing.assert_allclose(adapter.transform(Xh), expected, atol=1e-12)


def test_hybrid_without_the_cheap_half_equals_plain_era():
    X, Y, Xl, Yl, _ = aligned_and_labels()
    kw = {"adapt": RidgeAdapt(alpha=0.5), "normalize_input": False, "normalize_output": False}
    plain = ERAAdapter(**kw).fit_align(X, Y).fit(Xl, Yl)
    hybrid = ERAAdapter(hybrid=True, blend=1.0, **kw)
    hybrid.fit_align(np.hstack([X, Y]), Y).fit(np.hstack([Xl, np.zeros_like(Yl)]), Yl)
    np.testing.assert_allclose(
        hybrid.transform(np.hstack([Xl, np.zeros_like(Yl)])), plain.transform(Xl), atol=1e-10
    )


def test_hybrid_auto_blend_is_chosen_from_heldout_queries():
    Xa, Ya, Xh, Yl, groups, _ = hybrid_data()
    adapter = ERAAdapter(hybrid=True, adapt="ridge", random_state=0).fit_align(Xa, Ya)
    assert adapter.blend_ == 0.3  # the documented 0-label default
    adapter.fit(Xh, Yl, groups=groups)
    compared = adapter.cv_results_["blend"]
    assert len(np.unique(compared)) == 8  # every blend of the grid was scored
    best = np.argmax(adapter.cv_results_["mean_ndcg@10"])
    assert adapter.blend_ in set(compared) and adapter.blend_ in (compared[best], 0.3)


def test_hybrid_layout_errors():
    Xa, Ya, _Xh, _Yl, _, _ = hybrid_data()
    with pytest.raises(ValueError, match="not more than the 8 of the document space"):
        ERAAdapter(hybrid=True).fit_align(Xa[:, :8], Ya)
    shuffled = np.hstack([Xa[:, :-8], Ya[::-1]])
    with pytest.raises(ValueError, match="mean cosine with y"):
        ERAAdapter(hybrid=True).fit_align(shuffled, Ya)


# -- errors ----------------------------------------------------------------------
def test_dimension_mismatch_between_stages():
    X, Y, Xl, Yl, _ = aligned_and_labels()
    adapter = ERAAdapter().fit_align(X, Y)
    with pytest.raises(ValueError, match="X has 5 features, but ERAAdapter is expecting 16"):
        adapter.fit(Xl[:, :5], Yl)
    with pytest.raises(ValueError, match="Y has 3 features, but the stage-1 map"):
        adapter.fit(Xl, Yl[:, :3])
    with pytest.raises(ValueError, match="same number of rows"):
        adapter.fit(Xl, Yl[:-1])
