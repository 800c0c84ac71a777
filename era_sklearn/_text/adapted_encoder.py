"""A query encoder and a fitted adapter as one embedding object for search stacks.

:class:`AdaptedEncoder` subclasses LangChain's ``Embeddings`` when
``langchain-core`` is installed (a plain class otherwise, with the same
methods), and :meth:`AdaptedEncoder.as_chroma` gives a Chroma embedding
function. Neither library is required by era-sklearn.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from era_sklearn._text.base import check_texts

try:  # LangChain's interface when present; its absence costs nothing.
    from langchain_core.embeddings import Embeddings as _EmbeddingsBase
except ImportError:  # pragma: no cover - exercised only without langchain-core
    _EmbeddingsBase = object


def _widths(adapter):
    """(input, output) widths of a fitted adapter; None where it does not tell."""
    coef = getattr(adapter, "coef_", None)  # (n_features_in, n_doc_features) for ERAAdapter
    return getattr(adapter, "n_features_in_", None), (np.shape(coef)[1] if np.ndim(coef) == 2 else None)


class AdaptedEncoder(_EmbeddingsBase):
    """Texts to document-space vectors: a query encoder, a fitted adapter, a document encoder.

    Queries are embedded by ``query_encoder`` and mapped by ``adapter`` into the
    space of the document encoder that built the index; documents are embedded
    by ``document_encoder`` itself. So an index built from the cheap document
    encoder is searched with the strong encoder's queries, and never re-embedded.

    With a hybrid adapter (``adapter.hybrid=True``, fitted on
    ``[query_encoder(t), document_encoder(t)]``), each query is embedded by
    both encoders and ``document_encoder`` is required.

    - LangChain: this object *is* an ``Embeddings`` (when ``langchain-core`` is
      installed): :meth:`embed_query` gives adapted query vectors,
      :meth:`embed_documents` document-encoder vectors; pass it as the
      ``embedding`` of any LangChain vector store.
    - Chroma: :meth:`as_chroma` returns an embedding function for a collection
      whose vectors come from ``document_encoder``. Chroma (1.0 and later)
      embeds ``add(documents=...)`` with its ``__call__`` and
      ``query(query_texts=...)`` with its ``embed_query``, so one object serves
      both sides. With any version, ``query(query_embeddings=encoder.encode_queries(texts))``
      needs no embedding function at all.

    Parameters
    ----------
    query_encoder : transformer
        Anything with ``transform(list of str) -> (n, d_q) array`` (an encoder
        of :mod:`era_sklearn.encoders`, a :class:`~sklearn.pipeline.Pipeline`...).
    adapter : fitted ERAAdapter or transformer
        Maps query-encoder embeddings into the document space.
    document_encoder : transformer or None, default=None
        The encoder that embedded the indexed documents. Needed by
        :meth:`encode_documents` / :meth:`embed_documents` and by hybrid adapters.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from era_sklearn import ERAAdapter
    >>> from era_sklearn.encoders import AdaptedEncoder
    >>> def letters(texts):  # a toy 3-d "query encoder"
    ...     return np.array([[t.count(c) for c in "abc"] for t in texts], dtype=float)
    >>> rng = np.random.default_rng(0)
    >>> R = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    >>> X = rng.normal(size=(50, 3))
    >>> adapter = ERAAdapter().fit_align(X, X @ R)
    >>> encoder = AdaptedEncoder(FunctionTransformer(letters), adapter)
    >>> encoder.encode_queries(["abc", "cab"]).shape
    (2, 3)
    >>> len(encoder.embed_query("a b c"))
    3
    """

    def __init__(self, query_encoder, adapter, document_encoder=None):
        for name, obj in (("query_encoder", query_encoder), ("adapter", adapter),
                          ("document_encoder", document_encoder)):
            if obj is not None and not hasattr(obj, "transform"):
                raise TypeError(f"AdaptedEncoder: {name} needs a transform method; got {type(obj).__name__}.")
        check_is_fitted(adapter)
        if getattr(adapter, "hybrid", False) and document_encoder is None:
            raise ValueError(
                "AdaptedEncoder: the adapter is hybrid (fitted on [query_encoder(t), "
                "document_encoder(t)]), so each query needs both encoders; pass document_encoder."
            )
        self.query_encoder = query_encoder
        self.adapter = adapter
        self.document_encoder = document_encoder

    def __repr__(self):
        return (f"AdaptedEncoder(query_encoder={self.query_encoder!r}, adapter={self.adapter!r}, "
                f"document_encoder={self.document_encoder!r})")

    # -- numpy API -----------------------------------------------------------
    def encode_queries(self, texts):
        """Adapted query vectors, in the document encoder's space.

        Parameters
        ----------
        texts : list of str

        Returns
        -------
        ndarray of shape (n_texts, n_doc_features), float32
        """
        texts = check_texts(texts, "AdaptedEncoder.encode_queries")
        X = _matrix(self.query_encoder.transform(texts), "query_encoder", len(texts))
        hybrid = getattr(self.adapter, "hybrid", False)
        if hybrid:  # the adapter reads [strong(q), cheap(q)]
            X = np.hstack([X, self._documents(texts)])
        expected = _widths(self.adapter)[0]
        if expected is not None and X.shape[1] != expected:
            source = "query_encoder and document_encoder give" if hybrid else "query_encoder gives"
            raise ValueError(
                f"AdaptedEncoder: the {source} {X.shape[1]} features per query, but the adapter "
                f"was fitted on {expected}; use the encoder(s) the adapter was fitted with."
            )
        return np.asarray(self.adapter.transform(X), dtype=np.float32)

    def encode_documents(self, texts):
        """Document vectors from ``document_encoder``, as stored in the index.

        Parameters
        ----------
        texts : list of str

        Returns
        -------
        ndarray of shape (n_texts, n_doc_features), float32
        """
        if self.document_encoder is None:
            raise ValueError(
                "AdaptedEncoder has no document_encoder: pass the encoder that built the index "
                "to embed documents."
            )
        texts = check_texts(texts, "AdaptedEncoder.encode_documents")
        return self._documents(texts)

    def _documents(self, texts):
        D = _matrix(self.document_encoder.transform(texts), "document_encoder", len(texts))
        width = _widths(self.adapter)[1]
        if width is not None and D.shape[1] != width:
            raise ValueError(
                f"AdaptedEncoder: document_encoder gives {D.shape[1]}-d vectors but the adapter "
                f"maps queries to {width}-d: it was fitted for another document encoder."
            )
        return D

    # -- LangChain Embeddings --------------------------------------------------
    def embed_documents(self, texts):
        """LangChain: document vectors (``document_encoder``) as lists of floats.

        Parameters
        ----------
        texts : list of str

        Returns
        -------
        list of list of float
        """
        texts = list(texts)
        return self.encode_documents(texts).tolist() if texts else []

    def embed_query(self, text):
        """LangChain: one adapted query vector as a list of floats.

        Parameters
        ----------
        text : str

        Returns
        -------
        list of float
        """
        if not isinstance(text, str):
            raise TypeError(f"embed_query expects one str, got {type(text).__name__}.")
        return self.encode_queries([text])[0].tolist()

    # -- Chroma ----------------------------------------------------------------
    def as_chroma(self):
        """A Chroma embedding function: documents by ``document_encoder``, queries adapted.

        Requires ``chromadb``. Its ``__call__(input)`` embeds documents (what
        ``collection.add(documents=...)`` calls) and its ``embed_query(input)``
        adapts queries (what ``collection.query(query_texts=...)`` calls in
        Chroma 1.0 and later). Chroma keeps it only in memory: pass it again
        to ``get_collection`` in each new process.

        Returns
        -------
        chromadb EmbeddingFunction
        """
        from era_sklearn._text.chroma import ChromaEmbeddingFunction

        return ChromaEmbeddingFunction(self)


def _matrix(A, name, n_rows):
    A = np.asarray(A, dtype=np.float32)
    if A.ndim != 2 or A.shape[0] != n_rows:
        raise ValueError(f"AdaptedEncoder: {name} returned shape {A.shape} for {n_rows} texts.")
    return A
