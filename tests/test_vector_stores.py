"""Adapted queries against real vector stores holding cheap-encoder document vectors.

Real SciFact embeddings from the shared data: documents by all-MiniLM-L6-v2 (the
index, 5,183 vectors), queries by all-mpnet-base-v2 mapped into MiniLM's space by
an ERAAdapter aligned on 1,000 corpus texts embedded by both. FAISS's flat
inner-product index must return exactly the exact top-k; Chroma's HNSW
(approximate) must reach recall@10 >= 0.99 against it.
"""

import numpy as np
import pytest

from era_sklearn import ERAAdapter, ExactIndex
from era_sklearn.datasets import shared_dir

K = 10
TIE = 1e-6  # cosine scores closer than this are equal up to float32 rounding
STRONG, CHEAP = "all-mpnet-base-v2", "all-MiniLM-L6-v2"


def _shared_scifact():
    try:
        root = shared_dir() / "embeddings" / "scifact"
    except FileNotFoundError as exc:
        pytest.skip(f"shared data absent: {exc}")
    needed = [root / "corpus_ids.txt", root / CHEAP / "corpus.npy", root / STRONG / "corpus.npy",
              root / STRONG / "queries.npy"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        pytest.skip(f"shared SciFact embeddings absent: {', '.join(missing)}")
    return root


@pytest.fixture(scope="module")
def scifact():
    """(document ids, MiniLM documents, adapted mpnet queries, exact top-K rows)."""
    root = _shared_scifact()
    ids = (root / "corpus_ids.txt").read_text(encoding="utf-8").splitlines()
    docs = np.load(root / CHEAP / "corpus.npy")
    rows = np.random.default_rng(0).choice(len(docs), 1000, replace=False)
    adapter = ERAAdapter(random_state=0).fit_align(np.load(root / STRONG / "corpus.npy")[rows], docs[rows])
    queries = adapter.transform(np.load(root / STRONG / "queries.npy")).astype(np.float32)
    exact = ExactIndex(n_neighbors=K).fit(docs)
    dist, top = exact.kneighbors(queries)
    return ids, docs, queries, top, 1.0 - dist


def test_faiss_flat_equals_exact_search(scifact):
    faiss = pytest.importorskip("faiss")
    _, docs, queries, top, scores = scifact
    unit_docs = np.ascontiguousarray(docs, dtype=np.float32)
    faiss.normalize_L2(unit_docs)  # cosine = inner product of unit rows (queries are unit already)
    index = faiss.IndexFlatIP(unit_docs.shape[1])
    index.add(unit_docs)
    got_scores, got = index.search(queries, K)
    assert len(queries) == 1109 and index.ntotal == 5183
    np.testing.assert_allclose(got_scores, scores, atol=TIE)  # rank by rank
    # Same ids, except where two documents tie to float32 rounding (FAISS's BLAS and
    # numpy sum in other orders): there, FAISS's document must score what exact
    # search has at that rank.
    differ = got != top
    true_scores = np.einsum("qd,qkd->qk", queries, unit_docs[got])
    np.testing.assert_allclose(true_scores[differ], scores[differ], atol=TIE)
    print(f"FAISS flat vs exact: {differ.sum()} of {got.size} ranks hold a float32 tie")


def test_chroma_hnsw_recall_against_exact(scifact, tmp_path):
    chromadb = pytest.importorskip("chromadb")
    ids, docs, queries, top, _ = scifact
    path = str(tmp_path / "chroma")
    # The index as it would already exist: cheap-encoder vectors in a persistent collection.
    # Search breadth is ef_search (legacy metadata "hnsw:search_ef"), set in the collection's
    # configuration; chromadb's default is 100.
    writer = chromadb.PersistentClient(path=path)
    collection = writer.create_collection(
        "scifact-minilm", configuration={"hnsw": {"space": "cosine", "ef_search": 200}})
    step = writer.get_max_batch_size()
    for start in range(0, len(docs), step):
        collection.add(ids=ids[start:start + step], embeddings=docs[start:start + step])

    existing = chromadb.PersistentClient(path=path).get_collection("scifact-minilm")
    assert existing.count() == len(docs) >= 5000
    assert existing.configuration["hnsw"]["ef_search"] == 200
    result = existing.query(query_embeddings=queries, n_results=K, include=[])
    row_of = {doc_id: i for i, doc_id in enumerate(ids)}
    got = np.array([[row_of[d] for d in hits] for hits in result["ids"]])
    recall = np.mean([len(set(g) & set(t)) / K for g, t in zip(got, top)])
    print(f"Chroma recall@{K} against exact search: {recall:.4f} ({len(queries)} queries)")
    assert recall >= 0.99
