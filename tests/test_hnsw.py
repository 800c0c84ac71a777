"""Tests for era_sklearn._hnsw.HNSWIndex and era_sklearn._search."""

import json

import joblib
import numpy as np
import pytest
from scipy import sparse
from scipy.stats import ortho_group
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import FunctionTransformer

from era_sklearn import _hnsw
from era_sklearn._hnsw import HNSWIndex
from era_sklearn._search import AdaptedSearch, ExactIndex, search

N_DOCS, DIM, K = 5000, 64, 10


@pytest.fixture(scope="module")
def docs():
    return np.random.default_rng(0).standard_normal((N_DOCS, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def queries(docs):
    rng = np.random.default_rng(1)
    return docs[rng.choice(N_DOCS, 200, replace=False)] + 0.3 * rng.standard_normal((200, DIM))


@pytest.fixture(scope="module")
def doc_ids():
    return np.array([f"doc-{i}" for i in range(N_DOCS)])


@pytest.fixture(scope="module")
def fitted(docs, doc_ids):
    return HNSWIndex(n_jobs=2, random_state=0).fit(docs, ids=doc_ids)


def _small_index(n=50, dim=8, seed=0, **params):
    docs = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return HNSWIndex(random_state=0, **params).fit(docs), docs


def test_recall_against_exact_at_default_ef(fitted, docs, queries):
    exact = ExactIndex().fit(docs).kneighbors(queries, return_distance=False)
    approx = fitted.kneighbors(queries, return_distance=False)
    recall = np.mean([len(set(a) & set(e)) / K for a, e in zip(approx, exact)])
    assert recall >= 0.98


@pytest.mark.parametrize("space, metric", [("cosine", "cosine"), ("l2", "euclidean")])
def test_distances_match_sklearn(space, metric):
    index, docs = _small_index(space=space, n_neighbors=5)
    Q = docs[:10] + 0.1
    dist, ind = index.kneighbors(Q)
    ref_dist, ref_ind = NearestNeighbors(n_neighbors=5, metric=metric).fit(docs).kneighbors(Q)
    np.testing.assert_array_equal(ind, ref_ind)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-5)
    exact_dist, exact_ind = ExactIndex(n_neighbors=5, space=space).fit(docs).kneighbors(Q)
    np.testing.assert_array_equal(exact_ind, ref_ind)
    np.testing.assert_allclose(exact_dist, ref_dist, atol=1e-5)


def test_query_none_excludes_self():
    index, docs = _small_index(n_neighbors=3)
    ind = index.kneighbors(return_distance=False)
    ref = (
        NearestNeighbors(n_neighbors=3, metric="cosine").fit(docs).kneighbors(return_distance=False)
    )
    assert ind.shape == (50, 3)
    np.testing.assert_array_equal(ind, ref)


def test_ids_mapping(fitted, docs, doc_ids):
    pos = fitted.kneighbors(docs[:20], return_distance=False)
    ids = fitted.kneighbors(docs[:20], return_distance=False, return_ids=True)
    np.testing.assert_array_equal(ids, doc_ids[pos])
    assert ids[0, 0] == "doc-0"


def test_default_ids_are_positions():
    index, docs = _small_index()
    np.testing.assert_array_equal(index.ids_, np.arange(50))
    assert index.kneighbors(docs[:1], return_distance=False, return_ids=True)[0, 0] == 0


def test_add_finds_new_documents():
    index, docs = _small_index(n=100)
    index.fit(docs, ids=np.arange(100) * 10)
    new = np.random.default_rng(5).standard_normal((300, 8)).astype(np.float32)
    index.add(new, ids=np.arange(1000, 1300))  # forces several resizes
    assert index.n_samples_fit_ == 400 and index.index_.get_current_count() == 400
    assert index.kneighbors(
        new[:50], n_neighbors=1, return_distance=False, return_ids=True
    ).ravel().tolist() == list(range(1000, 1050))


def test_partial_fit_fits_then_adds():
    docs = np.random.default_rng(0).standard_normal((40, 4))
    index = HNSWIndex(n_neighbors=1).partial_fit(docs[:20]).partial_fit(docs[20:])
    assert index.n_samples_fit_ == 40
    np.testing.assert_array_equal(
        index.kneighbors(docs, return_distance=False).ravel(), np.arange(40)
    )


@pytest.mark.parametrize("first, second", [(["a", "b"], ["c", "a"]), ([1, 2], [3, 3])])
def test_duplicate_ids_raise(first, second):
    docs = np.eye(4)
    with pytest.raises(ValueError, match="Duplicate document ids"):
        HNSWIndex().fit(docs[:2], ids=first).add(docs[2:], ids=second)
    with pytest.raises(ValueError, match="Duplicate document ids"):
        HNSWIndex().fit(docs, ids=first + second)


def test_mixing_positional_and_given_ids_raises():
    with pytest.raises(ValueError, match="pass ids"):
        HNSWIndex().fit(np.eye(3), ids=["a", "b", "c"]).add(np.ones((1, 3)))
    with pytest.raises(ValueError, match="without ids"):
        HNSWIndex().fit(np.eye(3)).add(np.ones((1, 3)), ids=["x"])


def test_save_load_identical_neighbours(fitted, queries, tmp_path):
    path = fitted.save(tmp_path / "idx")
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == _hnsw.FORMAT_VERSION and meta["element_count"] == N_DOCS
    assert {"dim", "space", "params", "ids", "hnswlib_version", "era_sklearn_version"} <= set(meta)
    loaded = HNSWIndex.load(path)
    for a, b in zip(
        fitted.kneighbors(queries, return_ids=True), loaded.kneighbors(queries, return_ids=True)
    ):
        np.testing.assert_array_equal(a, b)
    assert loaded.get_params() == fitted.get_params()


def test_loaded_index_accepts_adds(tmp_path):
    index, docs = _small_index()
    loaded = HNSWIndex.load(index.save(tmp_path / "idx"))
    loaded.add(docs[:5] + 10)
    assert loaded.n_samples_fit_ == 55
    np.testing.assert_array_equal(loaded.ids_, np.arange(55))


def test_save_overwrites_existing(tmp_path):
    small, _ = _small_index(n=20)
    big, _ = _small_index(n=30)
    small.save(tmp_path / "idx")
    big.save(tmp_path / "idx")
    assert HNSWIndex.load(tmp_path / "idx").n_samples_fit_ == 30
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temp dirs left behind


def test_atomic_save_keeps_old_index_on_failure(tmp_path, monkeypatch):
    old, docs = _small_index(n=20)
    path = old.save(tmp_path / "idx")
    new, _ = _small_index(n=30, seed=1)

    def crash(self):
        raise OSError("disk full")

    # The hnswlib file is already written when the metadata step crashes.
    monkeypatch.setattr(HNSWIndex, "_metadata", crash)
    with pytest.raises(OSError, match="disk full"):
        new.save(path)
    monkeypatch.undo()
    loaded = HNSWIndex.load(path)
    assert loaded.n_samples_fit_ == 20
    np.testing.assert_array_equal(
        loaded.kneighbors(docs, return_distance=False), old.kneighbors(docs, return_distance=False)
    )
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_load_newer_format_raises(tmp_path):
    index, _ = _small_index()
    path = index.save(tmp_path / "idx")
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = _hnsw.FORMAT_VERSION + 1
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="Upgrade era_sklearn"):
        HNSWIndex.load(path)


def test_joblib_round_trip(tmp_path):
    index, docs = _small_index(ef=37)
    index.fit(docs, ids=[f"d{i}" for i in range(50)])
    joblib.dump(index, tmp_path / "index.joblib")
    loaded = joblib.load(tmp_path / "index.joblib")
    assert loaded.ef == 37 and loaded.index_.get_current_count() == 50
    for a, b in zip(
        index.kneighbors(docs, return_ids=True), loaded.kneighbors(docs, return_ids=True)
    ):
        np.testing.assert_array_equal(a, b)
    loaded.add(docs[:2] * 3, ids=["n0", "n1"])
    assert loaded.n_samples_fit_ == 52


def test_unfitted_raises():
    with pytest.raises(NotFittedError):
        HNSWIndex().kneighbors(np.ones((1, 3)))
    with pytest.raises(NotFittedError):
        HNSWIndex().add(np.ones((1, 3)))
    with pytest.raises(NotFittedError):
        HNSWIndex().save("unused")


def test_wrong_dimension_names_both_dims():
    index, _ = _small_index(dim=8)
    with pytest.raises(ValueError, match=r"5 features.*expecting 8"):
        index.kneighbors(np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"5 features.*expecting 8"):
        index.add(np.ones((2, 5)))


def test_k_larger_than_index_raises():
    index, _ = _small_index(n=20)
    with pytest.raises(ValueError, match="n_neighbors = 21, n_samples_fit = 20"):
        index.kneighbors(np.ones((1, 8)), n_neighbors=21)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_raises(bad):
    X = np.ones((3, 4))
    X[1, 2] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        HNSWIndex().fit(X)
    with pytest.raises(ValueError, match="NaN|infinity"):
        HNSWIndex().fit(np.ones((3, 4))).kneighbors(X, n_neighbors=1)


def test_empty_input_raises():
    with pytest.raises(ValueError, match="0 sample"):
        HNSWIndex().fit(np.empty((0, 4)))
    with pytest.raises(ValueError, match="0 sample"):
        HNSWIndex().fit(np.eye(4)).kneighbors(np.empty((0, 4)))


def test_bad_space_raises():
    with pytest.raises(ValueError, match="space must be one of"):
        HNSWIndex(space="manhattan").fit(np.eye(3))


@pytest.mark.parametrize("mode", ["connectivity", "distance"])
def test_kneighbors_graph(mode):
    index, docs = _small_index(n_neighbors=4)
    Q = docs[:7] + 0.05
    graph = index.kneighbors_graph(Q, mode=mode)
    ref = NearestNeighbors(n_neighbors=4, metric="cosine").fit(docs).kneighbors_graph(Q, mode=mode)
    assert sparse.issparse(graph) and graph.format == "csr"
    assert graph.shape == (7, 50) and graph.nnz == 28
    np.testing.assert_allclose(graph.toarray(), ref.toarray(), atol=1e-5)
    assert index.kneighbors_graph().shape == (50, 50)


def test_search_matches_exact_with_orthogonal_adapter(docs, doc_ids, fitted):
    rotation = ortho_group.rvs(DIM, random_state=0)
    adapter = FunctionTransformer(lambda X: X @ rotation.T)  # query space -> doc space
    raw = docs[:30] @ rotation + 0.05  # raw queries live in the rotated space
    ids, scores = AdaptedSearch(adapter, fitted).search(raw, k=5)
    exact_ids, exact_scores = search(adapter, ExactIndex().fit(docs, ids=doc_ids), raw, k=5)
    assert ids.shape == scores.shape == (30, 5)
    np.testing.assert_array_equal(ids[:, 0], doc_ids[:30])
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    # Scores are cosine similarities of the adapted queries with the documents.
    adapted = adapter.transform(raw)
    cos = (adapted[0] @ docs[0]) / np.linalg.norm(adapted[0]) / np.linalg.norm(docs[0])
    assert scores[0, 0] == pytest.approx(cos, abs=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_exact_index_add_and_chunking(docs):
    from sklearn import config_context

    exact = ExactIndex(n_neighbors=3).fit(docs[:100])
    exact.add(docs[100:200])
    with config_context(working_memory=0.01):  # forces many query chunks
        chunked = exact.kneighbors(docs[150:160], return_distance=False)
    np.testing.assert_array_equal(chunked[:, 0], np.arange(150, 160))
