"""AdaptedEncoder: numpy API, hybrid adapters, and the real LangChain and Chroma interfaces."""

import asyncio

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

pytest.importorskip("model2vec")

import _text_models

from era_sklearn import ERAAdapter, ExactIndex
from era_sklearn.encoders import AdaptedEncoder, Model2VecEncoder

WORDS = _text_models.WORDS[2:]
CORPUS = [f"{a} {b} {c}" for a in WORDS for b in WORDS[::2] for c in WORDS[1::3]]
DOCS = ["cats purr", "dogs bark loudly", "fish swim", "birds sing", "the cats and the dogs",
        "a fish and a bird", "query document", "dogs swim"]
QUERIES = ["which cats purr", "do birds sing", "dogs"]


@pytest.fixture(scope="module")
def encoders():
    """A 'strong' 8-d query encoder and a 'cheap' 5-d document encoder."""
    strong = Model2VecEncoder(_text_models.static_model(dim=8, seed=0))
    cheap = Model2VecEncoder(_text_models.static_model(dim=5, seed=3))
    return strong, cheap


@pytest.fixture(scope="module")
def adapter(encoders):
    strong, cheap = encoders
    return ERAAdapter(random_state=0).fit_align(strong.transform(CORPUS), cheap.transform(CORPUS))


@pytest.fixture(scope="module")
def hybrid_adapter(encoders):
    strong, cheap = encoders
    D = cheap.transform(CORPUS)
    X = np.hstack([strong.transform(CORPUS), D])
    return ERAAdapter(hybrid=True, random_state=0).fit_align(X, D)


def exact_top(queries, docs, k):
    index = ExactIndex(n_neighbors=k).fit(docs)
    return index.kneighbors(queries, return_distance=False)


def test_queries_are_adapted_and_documents_plain(encoders, adapter):
    strong, cheap = encoders
    enc = AdaptedEncoder(strong, adapter, cheap)
    Q = enc.encode_queries(QUERIES)
    assert Q.dtype == np.float32 and Q.shape == (3, 5)
    np.testing.assert_allclose(Q, adapter.transform(strong.transform(QUERIES)), rtol=1e-6)
    np.testing.assert_array_equal(enc.encode_documents(DOCS), cheap.transform(DOCS))


def test_hybrid_adapter_uses_both_encoders(encoders, hybrid_adapter):
    strong, cheap = encoders
    enc = AdaptedEncoder(strong, hybrid_adapter, cheap)
    X = np.hstack([strong.transform(QUERIES), cheap.transform(QUERIES)])
    np.testing.assert_allclose(enc.encode_queries(QUERIES), hybrid_adapter.transform(X), rtol=1e-6)
    with pytest.raises(ValueError, match="adapter is hybrid.*pass document_encoder"):
        AdaptedEncoder(strong, hybrid_adapter)


def test_mismatched_encoders_are_clear_errors(encoders, adapter, hybrid_adapter):
    strong, cheap = encoders
    with pytest.raises(ValueError, match="query_encoder gives 5 features per query, but the adapter was fitted on 8"):
        AdaptedEncoder(cheap, adapter).encode_queries(QUERIES)
    with pytest.raises(ValueError, match="document_encoder gives 8-d vectors but the adapter maps queries to 5-d"):
        AdaptedEncoder(strong, adapter, strong).encode_documents(DOCS)
    with pytest.raises(ValueError, match="has no document_encoder"):
        AdaptedEncoder(strong, adapter).encode_documents(DOCS)
    with pytest.raises(NotFittedError):
        AdaptedEncoder(strong, ERAAdapter())
    with pytest.raises(TypeError, match="query_encoder needs a transform method"):
        AdaptedEncoder(lambda texts: texts, adapter)
    with pytest.raises(TypeError, match="single str"):
        AdaptedEncoder(strong, adapter).encode_queries("cats")


def test_langchain_embeddings(encoders, adapter):
    embeddings = pytest.importorskip("langchain_core.embeddings")
    from langchain_core.vectorstores import InMemoryVectorStore

    strong, cheap = encoders
    enc = AdaptedEncoder(strong, adapter, cheap)
    assert isinstance(enc, embeddings.Embeddings)
    q = enc.embed_query(QUERIES[0])
    assert isinstance(q, list) and all(isinstance(x, float) for x in q)
    np.testing.assert_allclose(q, enc.encode_queries(QUERIES[:1])[0], rtol=1e-6)
    docs = enc.embed_documents(DOCS)
    assert len(docs) == len(DOCS) and enc.embed_documents([]) == []
    np.testing.assert_allclose(docs, cheap.transform(DOCS), rtol=1e-6)
    assert asyncio.run(enc.aembed_query(QUERIES[0])) == q  # LangChain's async defaults
    with pytest.raises(TypeError, match="expects one str"):
        enc.embed_query(QUERIES)

    store = InMemoryVectorStore(embedding=enc)
    store.add_texts(DOCS, ids=[str(i) for i in range(len(DOCS))])
    expected = exact_top(enc.encode_queries(QUERIES), cheap.transform(DOCS), 3)
    for query, top in zip(QUERIES, expected):
        hits = store.similarity_search(query, k=3)
        assert [int(h.id) for h in hits] == top.tolist()


def test_chroma_embedding_function(encoders, adapter, tmp_path):
    chromadb = pytest.importorskip("chromadb")
    strong, cheap = encoders
    enc = AdaptedEncoder(strong, adapter, cheap)
    ef = enc.as_chroma()
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    collection = client.create_collection(
        "docs", embedding_function=ef, configuration={"hnsw": {"space": "cosine"}})
    ids = [str(i) for i in range(len(DOCS))]
    collection.add(ids=ids, documents=DOCS)  # embedded by ef.__call__: the document encoder
    stored = collection.get(ids=ids, include=["embeddings"])["embeddings"]
    np.testing.assert_allclose(np.asarray(stored), cheap.transform(DOCS), rtol=1e-6)

    by_text = collection.query(query_texts=QUERIES, n_results=3)  # ef.embed_query: adapted
    by_vector = collection.query(query_embeddings=enc.encode_queries(QUERIES), n_results=3)
    assert by_text["ids"] == by_vector["ids"]
    np.testing.assert_allclose(by_text["distances"], by_vector["distances"], rtol=1e-5)
    expected = exact_top(enc.encode_queries(QUERIES), cheap.transform(DOCS), 3)
    assert [[int(i) for i in row] for row in by_text["ids"]] == expected.tolist()
    # The unadapted query vectors would not even fit the collection's width.
    assert strong.transform(QUERIES).shape[1] != np.asarray(stored).shape[1]
