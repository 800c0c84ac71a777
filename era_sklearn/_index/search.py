"""End-to-end adapted search and an exact reference index.

A user holds raw query-encoder embeddings, a fitted adapter (anything with a
``transform`` method, e.g. :class:`era_sklearn.ERAAdapter`) and a document
index (:class:`~era_sklearn._index.hnsw.HNSWIndex` or :class:`ExactIndex`).
:func:`search` and :class:`AdaptedSearch` join the three and return cosine
similarities, then document ids (values first, as ``kneighbors`` does).
"""

import warnings

import numpy as np
from sklearn import get_config
from sklearn.utils import gen_batches
from sklearn.utils.validation import check_is_fitted

from era_sklearn._index.hnsw import _BaseIndex, _distances_to_scores

__all__ = ["AdaptedSearch", "ExactIndex", "search"]


class ExactIndex(_BaseIndex):
    """Exact (brute-force) nearest-neighbour index with :class:`HNSWIndex`'s surface.

    A float32 matrix product over the stored documents followed by an
    ``argpartition`` top-k, in query chunks bounded by scikit-learn's
    ``working_memory``. Use it as ground truth for the approximate index or
    for corpora small enough to scan.

    Parameters
    ----------
    n_neighbors : int, default=10
        Default number of neighbours for :meth:`kneighbors`.
    space : {"cosine", "ip", "l2"}, default="cosine"
        Distance, defined as in :class:`~era_sklearn._index.hnsw.HNSWIndex`.

    Attributes
    ----------
    docs_ : ndarray of shape (n_samples_fit_, n_features), float32
        Stored documents (L2-normalised for ``space="cosine"``).
    ids_ : ndarray of shape (n_samples_fit_,)
        Document ids, row positions when none were given.
    n_features_in_ : int
        Embedding dimension.
    n_samples_fit_ : int
        Number of indexed documents.

    See Also
    --------
    era_sklearn.HNSWIndex : Approximate index with the same surface.

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import ExactIndex
    >>> docs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> index = ExactIndex(n_neighbors=2).fit(docs, ids=["a", "b", "c"])
    >>> dist, ids = index.kneighbors([[1.0, 0.1]], return_ids=True)
    >>> ids.tolist(), [round(float(d), 3) for d in dist[0]]
    ([['a', 'c']], [0.005, 0.226])
    """

    def __init__(self, n_neighbors=10, *, space="cosine"):
        self.n_neighbors = n_neighbors
        self.space = space

    # Rows arrive validated: unit-norm for cosine, bounded norms otherwise (_BaseIndex._validate).
    def _build(self, D):
        self.docs_ = D

    def _append(self, D):
        self.docs_ = np.concatenate([self.docs_, D])

    def _stored_vectors(self):
        return self.docs_

    def _distances(self, Q):
        """Distances of the queries ``Q`` to every stored document."""
        sims = Q @ self.docs_.T
        if self.space != "l2":
            return 1.0 - sims
        sq = (Q**2).sum(1)[:, None] - 2 * sims + (self.docs_**2).sum(1)[None, :]
        return np.sqrt(np.maximum(sq, 0))

    def _query(self, Q, k):
        # Bound the (chunk, n_docs) distance block by sklearn's working_memory.
        # (l2 holds about three such blocks at once, so budget for that.)
        row_bytes = 3 * 4 * self.n_samples_fit_
        chunk = max(1, int(get_config()["working_memory"] * 2**20 // row_bytes))
        dist = np.empty((len(Q), k), dtype=np.float32)
        ind = np.empty((len(Q), k), dtype=np.intp)
        for rows in gen_batches(len(Q), chunk):
            dist[rows], ind[rows] = _smallest_k(self._distances(Q[rows]), k)
        return dist, ind


def _smallest_k(dist, k):
    """Sorted ``k`` smallest entries of each row, via ``argpartition``."""
    part = np.argpartition(dist, k - 1, axis=1)[:, :k]
    part_dist = np.take_along_axis(dist, part, axis=1)
    order = np.argsort(part_dist, axis=1, kind="stable")
    return np.take_along_axis(part_dist, order, 1), np.take_along_axis(part, order, 1)


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
