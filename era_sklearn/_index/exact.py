"""Exact (brute-force) nearest-neighbour index: the reference for the approximate one."""

import numpy as np
from sklearn import get_config
from sklearn.utils import gen_batches

from .base import _BaseIndex

__all__ = ["ExactIndex"]


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
