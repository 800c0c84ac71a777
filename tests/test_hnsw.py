"""Tests for era_sklearn._index: HNSWIndex, ExactIndex and search."""

import json
import os
import textwrap
import tracemalloc

import joblib
import numpy as np
import pytest
from scipy import sparse
from scipy.stats import ortho_group
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import FunctionTransformer

from era_sklearn._index import hnsw as _hnsw
from era_sklearn._index.exact import ExactIndex
from era_sklearn._index.hnsw import HNSWIndex
from era_sklearn._index.search import AdaptedSearch, search

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


@pytest.mark.parametrize("cls", [HNSWIndex, ExactIndex])
def test_bad_space_raises(cls):
    with pytest.raises(ValueError, match="'space' parameter of .* must be a str among"):
        cls(space="manhattan").fit(np.eye(3))


@pytest.mark.parametrize("index_class", [HNSWIndex, ExactIndex])
def test_search_returns_values_first_like_kneighbors(index_class):
    docs = np.random.default_rng(2).standard_normal((60, 8)).astype(np.float32)
    index = index_class().fit(docs, ids=[f"d{i}" for i in range(60)])
    dist, neighbours = index.kneighbors(docs[:4], n_neighbors=3, return_ids=True)
    for scores, ids in (search(None, index, docs[:4], k=3),
                        AdaptedSearch(None, index).search(docs[:4], k=3)):
        assert scores.dtype == np.float32 and ids.dtype.kind == "U"
        np.testing.assert_array_equal(ids, neighbours)
        np.testing.assert_allclose(scores, 1 - dist, rtol=0, atol=1e-6)
        assert ids[0, 0] == "d0" and scores[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_search_ids_first_is_the_deprecated_old_order():
    docs = np.random.default_rng(3).standard_normal((30, 4)).astype(np.float32)
    index = ExactIndex().fit(docs, ids=[f"d{i}" for i in range(30)])
    scores, ids = search(None, index, docs[:2], k=2)
    for call in (lambda: search(None, index, docs[:2], k=2, ids_first=True),
                 lambda: AdaptedSearch(None, index).search(docs[:2], k=2, ids_first=True)):
        with pytest.warns(FutureWarning, match=r"ids_first=True is deprecated.*0\.4") as caught:
            old_ids, old_scores = call()
        assert caught[0].filename == __file__  # points at the caller's line
        np.testing.assert_array_equal(old_ids, ids)
        np.testing.assert_array_equal(old_scores, scores)
    with pytest.raises(TypeError, match="ids_first must be True or False, got 'yes'"):
        search(None, index, docs[:2], ids_first="yes")


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
    scores, ids = AdaptedSearch(adapter, fitted).search(raw, k=5)
    exact_scores, exact_ids = search(adapter, ExactIndex().fit(docs, ids=doc_ids), raw, k=5)
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


# --- hardening (issue 13) ------------------------------------------------------------


def _run_isolated(code, timeout=120):
    """Run ``code`` in a fresh interpreter: a segfault fails the test, not the test run."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False, cwd=root, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_M_zero_is_refused_in_a_child_process():
    # era_sklearn 0.1 handed M=0 to hnswlib, which segfaulted (exit 139).
    done = _run_isolated(
        """
        import numpy as np
        from era_sklearn import HNSWIndex
        try:
            HNSWIndex(M=0).fit(np.random.default_rng(0).normal(size=(50, 8)))
        except ValueError as e:
            print("refused:", e)
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused: The 'M' parameter of HNSWIndex must be an int in the range [2, 10000]" in (
        done.stdout
    )


def test_load_with_dim_edited_to_a_million_is_refused_in_a_child_process():
    # era_sklearn 0.1 passed the edited dim to hnswlib, which read past its buffers (segfault).
    done = _run_isolated(
        """
        import json, tempfile
        import numpy as np
        from era_sklearn import HNSWIndex
        docs = np.random.default_rng(0).normal(size=(50, 8))
        path = HNSWIndex().fit(docs).save(tempfile.mkdtemp() + "/idx")
        meta = json.loads((path / "meta.json").read_text())
        meta["dim"] = 1_000_000
        (path / "meta.json").write_text(json.dumps(meta))
        try:
            HNSWIndex.load(path).kneighbors(np.ones((1, 1_000_000)), n_neighbors=3)
        except ValueError as e:
            print("refused:", e)
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stores vectors of 8 values, the metadata says dim=1000000" in done.stdout


def _saved(tmp_path, space="cosine", ids=None, n=40):
    docs = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
    index = HNSWIndex(space=space, M=4, random_state=0).fit(docs, ids=ids)
    return index.save(tmp_path / "idx"), docs


def _edit_meta(path, **fields):
    meta = json.loads((path / "meta.json").read_text())
    for key, value in fields.items():
        if key.startswith("params_"):
            meta["params"][key[len("params_") :]] = value
        else:
            meta[key] = value
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"dim": 4096}, "stores vectors of 8 values, the metadata says dim=4096"),
        ({"dim": 7}, "stores vectors of 8 values"),
        ({"dim": True}, "dim must be a positive int"),
        ({"element_count": 41}, "max_elements 40 < element_count 41"),
        ({"element_count": 39, "ids": list(range(39))}, "cur_element_count is 40, expected 39"),
        ({"max_elements": 3}, "max_elements 3 < element_count 40"),
        ({"space": "l2"}, "space 'l2' differs from params' 'cosine'"),
        ({"space": "l2", "params_space": "l2"}, None),  # loads: unit vectors are valid l2 data
        ({"space": "euclid"}, "space must be one of"),
        ({"format_version": "1"}, "format_version must be a positive int"),
        ({"params_M": 0}, "invalid params: The 'M' parameter"),
        ({"params_ef": True}, "invalid params: The 'ef' parameter"),
        ({"params_bogus": 1}, "params must have exactly the keys"),
        ({"ids": list(range(39))}, r"invalid ids: ids must have shape \(40,\)"),
        ({"ids": [0] * 40}, "invalid ids: Duplicate document ids"),
        ({"ids": [0.5] * 40}, "invalid ids: Document ids must be str or int"),
        ({"ids": list(range(1, 41))}, "positional_ids is true but ids are not 0 .. 39"),
        ({"ids_dtype": "<f8"}, "invalid ids: ids_dtype must be an int, str or object dtype"),
        ({"ids_dtype": "|i1", "ids": list(range(100, 140))}, "do not fit ids_dtype"),
        ({"positional_ids": "yes"}, "positional_ids must be true or false"),
    ],
)
def test_load_checks_every_metadata_field(tmp_path, fields, message):
    path, _ = _saved(tmp_path)
    _edit_meta(path, **fields)
    if message is None:
        assert HNSWIndex.load(path).space == "l2"
        return
    with pytest.raises(ValueError, match=message):
        HNSWIndex.load(path)


def test_load_keeps_str_ids_from_being_truncated(tmp_path):
    path, _ = _saved(tmp_path, ids=[f"doc-{i}" for i in range(40)])
    _edit_meta(path, ids_dtype="<U2")
    with pytest.raises(ValueError, match="do not fit ids_dtype '<U2'"):
        HNSWIndex.load(path)


@pytest.mark.parametrize("width", [2_000_000, 50_000_000])
def test_load_does_not_pad_str_ids_to_an_edited_width(tmp_path, width):
    # Issue 17: ids_dtype "<U2000000" made 200 ids take 1.5 GB, "<U50000000" a MemoryError.
    ids = [f"doc-{i}" for i in range(200)]
    path, _ = _saved(tmp_path, ids=ids, n=200)
    _edit_meta(path, ids_dtype=f"<U{width}")
    tracemalloc.start()
    try:
        loaded = HNSWIndex.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded.ids_.tolist() == ids and loaded.ids_.dtype == np.dtype("<U7")  # "doc-199"
    assert peak < 2**24, peak  # the padded array would take 200 * width * 4 bytes


@pytest.mark.skipif(not (hasattr(os, "mkfifo") and os.path.exists("/dev/zero")), reason="POSIX")
@pytest.mark.parametrize("name", ["meta.json", "index.hnsw"])
@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_load_refuses_files_that_are_not_regular(tmp_path, name, kind):
    # Issue 17: a meta.json FIFO made load hang, a symlink to /dev/zero read until MemoryError.
    # Run in a child bounded in time and address space, so that neither can stall the suite.
    path, _ = _saved(tmp_path)
    (path / name).unlink()
    if kind == "fifo":
        os.mkfifo(path / name)
    else:
        os.symlink("/dev/zero", path / name)
    done = _run_isolated(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        from era_sklearn import HNSWIndex
        try:
            HNSWIndex.load({str(path)!r})
        except ValueError as e:
            print("refused:", e)
        """,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"refused: {path / name} is not a regular file" in done.stdout


def _edit_index(path, offset, value, fmt="<I"):
    import struct

    data = bytearray((path / "index.hnsw").read_bytes())
    struct.pack_into(fmt, data, offset, value)
    (path / "index.hnsw").write_bytes(bytes(data))


@pytest.mark.parametrize(
    "edit, message",
    [
        # Header offsets: see era_sklearn/_hnsw_format.HEADER.
        (lambda p, h, r: _edit_index(p, 48, 7, "<i"), "top level 7 disagrees"),
        (lambda p, h, r: _edit_index(p, 52, 40), "entry point 40 is past the last element"),
        (lambda p, h, r: _edit_index(p, 72, 5, "<Q"), "header maxM is 4, expected 5"),
        (lambda p, h, r: _edit_index(p, 80, 0.0, "<d"), "header mult is 0.0"),
        (lambda p, h, r: _edit_index(p, 88, 1, "<Q"), "ef_construction 1 is below M"),
        # Level-0 record of element 3: link count, first neighbour, deleted mark, label.
        (lambda p, h, r: _edit_index(p, r(3), 9), "lists 9 level-0 neighbours, more than 8"),
        (lambda p, h, r: _edit_index(p, r(3) + 4, 40), "level-0 link points past the last"),
        (lambda p, h, r: _edit_index(p, r(3) + 2, 1, "<B"), "element 3 is marked deleted"),
        (lambda p, h, r: _edit_index(p, r(3) + h["offset_data"], np.nan, "<f"), "NaN"),
        (lambda p, h, r: _edit_index(p, r(3) + h["offset_data"], 3.0, "<f"), "not 1: the index"),
        (lambda p, h, r: _edit_index(p, r(3) + h["label_offset"], 4, "<Q"), "label 4 is stored"),
        (lambda p, h, r: _edit_index(p, r(3) + h["label_offset"], 99, "<Q"), "label 99, past"),
        # Upper levels: the size word of element 0, then the tail of the file.
        (lambda p, h, r: _edit_index(p, r(40), 5), "5 bytes of upper links"),
        (lambda p, h, r: (p / "index.hnsw").write_bytes((p / "index.hnsw").read_bytes()[:-4]),
         "past the end of the file|ends before|not whole|trailing"),
        (lambda p, h, r: (p / "index.hnsw").write_bytes((p / "index.hnsw").read_bytes() + b"\0" * 4),
         "4 trailing bytes"),
        (lambda p, h, r: (p / "index.hnsw").write_bytes(b""), "shorter than the 96-byte header"),
    ],
)  # fmt: skip
def test_load_checks_the_index_file(tmp_path, edit, message):
    from era_sklearn._index.hnsw_format import HEADER

    path, _ = _saved(tmp_path)
    raw = (path / "index.hnsw").read_bytes()
    header = np.frombuffer(raw[: HEADER.itemsize], dtype=HEADER)[0]
    h = {name: int(header[name]) for name in ("offset_data", "label_offset")}

    def record(i):
        return HEADER.itemsize + i * int(header["size_data_per_element"])

    edit(path, h, record)
    with pytest.raises(ValueError, match=f"not a valid hnswlib index.*({message})"):
        HNSWIndex.load(path)


def test_load_checks_upper_level_links(tmp_path):
    from era_sklearn._index.hnsw_format import HEADER

    path, _ = _saved(tmp_path, n=300)
    raw = bytearray((path / "index.hnsw").read_bytes())
    header = np.frombuffer(raw[: HEADER.itemsize], dtype=HEADER)[0]
    words = np.frombuffer(
        raw[HEADER.itemsize + 300 * int(header["size_data_per_element"]) :], "<u4"
    )
    first = int(np.flatnonzero(words)[0])  # size word of the first element above level 0
    at = len(raw) - 4 * (len(words) - first - 2)  # its first upper-level neighbour id
    raw[at : at + 4] = (299 + 1).to_bytes(4, "little")
    (path / "index.hnsw").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="upper-level link points past the last element"):
        HNSWIndex.load(path)


@pytest.mark.parametrize(
    "params, name",
    [
        ({"M": 0}, "M"),
        ({"M": 1}, "M"),  # hnswlib divides by log(M)
        ({"M": 10_001}, "M"),  # hnswlib would silently cap it at 10000
        ({"M": True}, "M"),
        ({"ef": 0}, "ef"),
        ({"ef": True}, "ef"),
        ({"ef_construction": -1}, "ef_construction"),
        ({"ef_construction": 2.0}, "ef_construction"),
        ({"n_neighbors": True}, "n_neighbors"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"n_jobs": True}, "n_jobs"),
        ({"random_state": -1}, "random_state"),
        ({"random_state": True}, "random_state"),
    ],
)
def test_invalid_params_are_refused(params, name):
    with pytest.raises(ValueError, match=f"The '{name}' parameter of HNSWIndex must be"):
        HNSWIndex(**params).fit(np.eye(4))


def test_ef_is_checked_at_query_time():
    index, docs = _small_index()
    index.set_params(ef=0)
    with pytest.raises(ValueError, match="The 'ef' parameter"):
        index.kneighbors(docs[:1])


@pytest.mark.parametrize("cls", [HNSWIndex, ExactIndex])
@pytest.mark.parametrize("k", [True, False, np.bool_(True), 1.0, "2"])
def test_n_neighbors_must_be_an_int_not_a_bool(cls, k):
    index = cls().fit(np.random.default_rng(0).standard_normal((20, 4)))
    with pytest.raises(TypeError, match="n_neighbors must be an int"):
        index.kneighbors(np.ones((1, 4)), n_neighbors=k)
    with pytest.raises(TypeError, match="n_neighbors must be an int"):
        search(None, index, np.ones((1, 4)), k=k)
    with pytest.raises(ValueError, match="'n_neighbors' parameter"):
        cls(n_neighbors=True).fit(np.eye(4))


def test_query_none_needs_fewer_neighbours_than_documents():
    index = ExactIndex(n_neighbors=1).fit(np.ones((1, 3)))
    with pytest.raises(ValueError, match="n_neighbors < n_samples_fit when Q is None.*= 1,"):
        index.kneighbors()


@pytest.mark.parametrize("cls", [HNSWIndex, ExactIndex])
def test_add_while_querying_from_another_thread(cls):
    import threading

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((200, 16)).astype(np.float32)
    index = cls(n_neighbors=5).fit(docs, ids=[f"d{i}" for i in range(200)])
    errors, results, stop = [], [], threading.Event()

    def query():
        while not stop.is_set():
            try:
                results.append(index.kneighbors(docs[:20], return_ids=True)[1])
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(e)
                return

    reader = threading.Thread(target=query)
    reader.start()
    for batch in range(150):
        new = rng.standard_normal((10, 16)).astype(np.float32)
        index.add(new, ids=[f"n{batch}-{i}" for i in range(10)])
    stop.set()
    reader.join()
    assert errors == []
    assert index.n_samples_fit_ == index.index_.get_current_count() if cls is HNSWIndex else True
    assert len(results) > 0 and set(np.concatenate(results).ravel()) <= set(index.ids_)


@pytest.mark.parametrize("cls", [HNSWIndex, ExactIndex])
@pytest.mark.parametrize("scale", [1e-40, 1e-20, 1e20, 1e30])
def test_cosine_results_do_not_depend_on_scale(cls, scale):
    # era_sklearn 0.1 squared each row: 1e20 overflowed and 1e-40 underflowed, both
    # rows turned into zeros, and every distance came back as 1.
    _, docs = _small_index(n_neighbors=3)
    ref_dist, ref_ind = cls(n_neighbors=3).fit(docs).kneighbors(docs[:5] + 0.1)
    X = (docs.astype(np.float64) * scale).astype(np.float32)
    Q = ((docs[:5] + 0.1).astype(np.float64) * scale).astype(np.float32)
    dist, ind = cls(n_neighbors=3).fit(X).kneighbors(Q)
    np.testing.assert_array_equal(ind, ref_ind)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-5)


@pytest.mark.parametrize("cls", [HNSWIndex, ExactIndex])
@pytest.mark.parametrize("space", ["l2", "ip"])
def test_inner_product_spaces_refuse_overflowing_norms(cls, space):
    docs = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=f"L2 norm .* space='{space}' computes"):
        cls(space=space).fit(docs * 1e19)
    index = cls(space=space, n_neighbors=2).fit(docs * 1e17)  # below the limit: finite
    assert np.isfinite(index.kneighbors(docs[:3] * 1e17)[0]).all()
    with pytest.raises(ValueError, match="L2 norm"):
        index.kneighbors(docs[:3] * 1e19)


def test_ids_keep_their_type():
    index = HNSWIndex(n_neighbors=1).fit(np.eye(3), ids=["a", 1, np.int64(2)])
    assert index.ids_.dtype == object and index.ids_.tolist() == ["a", 1, 2]
    index = HNSWIndex().fit(np.eye(3), ids=["a", "b", "c"]).add(np.ones((1, 3)), ids=[7])
    assert index.ids_.tolist() == ["a", "b", "c", 7]  # 7 stays an int, not "7"
    big = HNSWIndex().fit(np.eye(2), ids=np.array([1, 2], dtype=np.int64))
    big.add(np.ones((1, 2)), ids=np.array([2**63], dtype=np.uint64))  # int64 + uint64 -> float64
    assert big.ids_.tolist() == [1, 2, 2**63]
    nul = HNSWIndex().fit(np.eye(2), ids=["a", "a\0"])  # numpy's str dtype would merge them
    assert nul.ids_.tolist() == ["a", "a\0"]


@pytest.mark.parametrize("ids", [[0.5, 1.5], [True, False], [None, "a"], [b"a", b"b"]])
def test_ids_must_be_str_or_int(ids):
    with pytest.raises(TypeError, match="Document ids must be str or int"):
        HNSWIndex().fit(np.eye(2), ids=ids)


def test_mixed_ids_survive_save_and_load(tmp_path):
    ids = ["a", 1, "a\0", 2**70, -3]
    index = HNSWIndex(n_neighbors=1).fit(np.eye(5), ids=ids)
    loaded = HNSWIndex.load(index.save(tmp_path / "idx"))
    assert loaded.ids_.tolist() == ids
    assert (
        loaded.kneighbors(np.eye(5), return_distance=False, return_ids=True).ravel().tolist() == ids
    )


@pytest.mark.parametrize("cls", [HNSWIndex, ExactIndex])
def test_space_changed_after_fit_is_refused(cls):
    index = cls(n_neighbors=1).fit(np.eye(3))
    index.set_params(space="l2")
    with pytest.raises(ValueError, match="space was set to 'l2' after the index was fitted"):
        index.kneighbors(np.eye(3))


def test_disconnected_graph_is_a_value_error():
    # 200 identical vectors with M=2: the graph falls apart and hnswlib raised
    # RuntimeError("Cannot return the results in a contiguous 2D array").
    docs = np.ones((200, 8), dtype=np.float32)
    index = HNSWIndex(M=2, ef_construction=2, ef=1, random_state=0).fit(docs)
    with pytest.raises(ValueError, match="connects fewer than 100 documents .* disconnected"):
        index.kneighbors(docs[:3], n_neighbors=100)
    assert index.kneighbors(docs[:3], n_neighbors=10)[1].shape == (3, 10)


def test_n_jobs_is_capped_at_the_cpu_count():
    from joblib import cpu_count

    assert HNSWIndex(n_jobs=10**6)._threads() == cpu_count()


@pytest.mark.parametrize("cls", [HNSWIndex, ExactIndex])
def test_zero_rows_warn_in_cosine_space(cls):
    docs = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    docs[3] = 0
    with pytest.warns(UserWarning, match=r"D has 1 all-zero row\(s\) \(first at index 3\)"):
        index = cls(n_neighbors=2).fit(docs)
    with pytest.warns(UserWarning, match=r"Q has 1 all-zero row\(s\) \(first at index 3\)"):
        dist, _ = index.kneighbors(docs[:4])
    np.testing.assert_allclose(dist[3], 1.0, atol=1e-6)  # no direction: distance 1 to all


def test_save_refuses_to_replace_other_files(tmp_path):
    index, _ = _small_index()
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"other than a saved index \(\['notes.txt'\]\)"):
        index.save(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a directory"):
        index.save(tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "notes.txt"]


def test_one_long_id_does_not_pad_every_id():
    # A numpy str array pads every id to the longest: 1e5 ids and one of 10k
    # characters would take 4 GB; such ids are kept as an object array.
    ids = [f"d{i}" for i in range(100_000)]
    ids[5] = "x" * 10_000
    index = ExactIndex().fit(np.ones((100_000, 2)), ids=ids)
    assert index.ids_.dtype == object and index.ids_[5] == ids[5]
    short = ExactIndex().fit(np.ones((100_000, 2)), ids=ids[:5] + ids[6:] + ["d5"])
    assert short.ids_.dtype.kind == "U"
    short.add(np.ones((1, 2)), ids=["y" * 10_000])
    assert short.ids_.dtype == object and short.ids_[-1] == "y" * 10_000
