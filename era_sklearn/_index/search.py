"""End-to-end adapted search.

A user holds raw query-encoder embeddings, a fitted adapter (anything with a
``transform`` method, e.g. :class:`era_sklearn.ERAAdapter`) and a document
index (:class:`~era_sklearn._index.hnsw.HNSWIndex` or
:class:`~era_sklearn._index.exact.ExactIndex`).
:func:`search` and :class:`AdaptedSearch` join the three and return cosine
similarities, then document ids (values first, as ``kneighbors`` does).
"""

import warnings

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .base import _distances_to_scores

__all__ = ["AdaptedSearch", "search"]


def search(adapter, index, X, k=10, *, ids_first=False):
    """Adapt raw query embeddings and return the top-``k`` documents.

    Values come first, then ids, as in ``kneighbors`` (distances, positions)
    and FAISS's ``index.search`` (scores, rows). Changed in 0.3: era_sklearn
    0.2 returned ``(ids, scores)``; ``ids_first=True`` keeps that order, with
    a FutureWarning, until 0.4.

    Parameters
    ----------
    adapter : object with a ``transform`` method, or None
        Fitted query adapter mapping query-encoder embeddings into the
        document space; ``None`` means ``X`` is already in that space.
    index : HNSWIndex or ExactIndex
        Fitted document index.
    X : array-like of shape (n_queries, n_query_features)
        Raw query-encoder embeddings.
    k : int, default=10
        Documents per query.
    ids_first : bool, default=False
        Deprecated: return ``(ids, scores)``, the order of era_sklearn 0.2.

    Returns
    -------
    scores : ndarray of shape (n_queries, k), float32
        Similarities, best first: ``1 - distance`` for cosine / ip spaces,
        ``1 - d**2 / 2`` for l2. Cosine similarities when the index space is
        cosine, or when adapted queries and documents are unit-norm.
    ids : ndarray of shape (n_queries, k)
        Document ids (``index.ids_``) of those scores.

    See Also
    --------
    era_sklearn.metrics.ranking_score : Score these results against relevance judgements.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from era_sklearn import ExactIndex, search
    >>> docs = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> swap = FunctionTransformer(lambda X: X[:, ::-1])
    >>> scores, ids = search(swap, ExactIndex().fit(docs, ids=["x", "y"]), np.array([[0.0, 2.0]]), k=1)
    >>> scores.tolist(), ids.tolist()
    ([[1.0]], [['x']])
    """
    check_is_fitted(index)
    Q = X if adapter is None else adapter.transform(X)
    dist, ids = index.kneighbors(Q, n_neighbors=k, return_ids=True)
    return _in_order(_distances_to_scores(dist, index.space), ids, ids_first)


def _in_order(scores, ids, ids_first):
    """``(scores, ids)``, or the 0.2 order ``(ids, scores)`` with a FutureWarning."""
    if not isinstance(ids_first, (bool, np.bool_)):
        raise TypeError(f"ids_first must be True or False, got {ids_first!r}.")
    if not ids_first:
        return scores, ids
    warnings.warn(
        "ids_first=True is deprecated and will be removed in era_sklearn 0.4: search() "
        "returns (scores, ids), values first like kneighbors and FAISS. Write "
        "`scores, ids = search(...)` and drop ids_first.",
        FutureWarning,
        stacklevel=3,  # the line that called search() or AdaptedSearch.search()
    )
    return ids, scores


class AdaptedSearch:
    """A fitted adapter and a document index bundled for querying.

    Parameters
    ----------
    adapter : object with a ``transform`` method, or None
        Fitted query adapter (e.g. :class:`era_sklearn.ERAAdapter`).
    index : HNSWIndex or ExactIndex
        Fitted document index, built with the document encoder.

    See Also
    --------
    search : The function this class calls.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from era_sklearn import HNSWIndex
    >>> from era_sklearn import AdaptedSearch
    >>> docs = np.random.default_rng(0).normal(size=(20, 3))
    >>> engine = AdaptedSearch(FunctionTransformer(), HNSWIndex().fit(docs))
    >>> scores, ids = engine.search(docs[[4]], k=2)
    >>> int(ids[0, 0]), round(float(scores[0, 0]), 4)
    (4, 1.0)
    """

    def __init__(self, adapter, index):
        self.adapter = adapter
        self.index = index

    def search(self, X, k=10, *, ids_first=False):
        """Return ``(scores, ids)`` of the top-``k`` documents; see :func:`search`.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_query_features)
            Raw query-encoder embeddings.
        k : int, default=10
            Documents per query.
        ids_first : bool, default=False
            Deprecated: return ``(ids, scores)``, the order of era_sklearn 0.2.

        Returns
        -------
        scores : ndarray of shape (n_queries, k), float32
            Cosine similarities, best first (see :func:`search`).
        ids : ndarray of shape (n_queries, k)
            Document ids of those scores.
        """
        scores, ids = search(self.adapter, self.index, X, k)
        return _in_order(scores, ids, ids_first)
