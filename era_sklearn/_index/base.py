"""What the exact and the HNSW index share: ids, validation, locking, ``kneighbors``.

:class:`_BaseIndex` holds the surface once; a concrete index (``ExactIndex``,
``HNSWIndex``) supplies how vectors are stored and searched. Other subpackages
read an index's vectors through :func:`stored_vectors`, never through the
private hook itself.
"""

import threading
import warnings
from numbers import Integral
from typing import ClassVar

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._utils.validation import l2_normalize
from .hnsw_format import MAX_NORM

_SPACES = ("cosine", "ip", "l2")


class _IntInterval(Interval):
    """An int range that refuses bools: ``True`` is not a count (sklearn's Interval takes it)."""

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)


def _is_int(value):
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def _distances_to_scores(distances, space):
    """Turn index distances into similarities (cosine for unit-norm vectors).

    ``cosine`` and ``ip`` distances are ``1 - similarity``; for ``l2`` the
    Euclidean distance ``d`` of unit vectors satisfies ``cos = 1 - d**2 / 2``.
    """
    distances = np.asarray(distances, dtype=np.float32)
    if space == "l2":
        return 1.0 - distances**2 / 2.0
    return 1.0 - distances


class _BaseIndex(BaseEstimator):
    """Shared surface of the exact and approximate indexes.

    Subclasses implement ``_build(D)``, ``_append(D)``, ``_query(Q, k)`` (returning
    ``(distances, positions)``, each of shape ``(n_queries, k)``) and
    ``_stored_vectors()``; everything about ids, validation, thread safety and the
    sklearn-like ``kneighbors`` / ``kneighbors_graph`` API lives here once.

    One lock serialises fitting, adding, querying and saving: hnswlib's
    ``resize_index`` and ``set_ef`` are not safe beside a running search, and ids
    must never lag behind the vectors a search can return.
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_neighbors": [_IntInterval(Integral, 1, None, closed="left")],
        "space": [StrOptions(set(_SPACES))],
    }

    def _lock(self):
        # Made on first use; dict.setdefault is atomic, so racing threads share one lock.
        return self.__dict__.setdefault("_index_lock", threading.RLock())

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: it may be the live __dict__
        state.pop("_index_lock", None)  # locks do not pickle; a new one is made on use
        return state

    def _validate(self, X, reset, name, stacklevel=4):
        """Float32 rows ready for the backend: unit rows for cosine, bounded norms otherwise."""
        # validate_data names both dimensions when a query has the wrong number of
        # features, and NaN / infinity (also float64 values beyond float32's range).
        X = validate_data(self, X, reset=reset, dtype=np.float32, order="C")
        if self.space == "cosine":
            return _unit_rows(X, name, stacklevel)  # warnings point at the caller's line
        _check_norms(X, self.space)
        return X

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, D, y=None, ids=None):
        """Index the documents ``D``.

        Parameters
        ----------
        D : array-like of shape (n_docs, n_features)
            Document embeddings.
        y : None
            Ignored, present for API consistency.
        ids : array-like of shape (n_docs,), default=None
            Document ids (str or int, unique) returned by ``return_ids=True``.
            Defaults to the row positions ``0 .. n_docs - 1``. Ids of both kinds
            are kept in an object array, so an int never turns into a str.

        Returns
        -------
        self : object
            The fitted index.
        """
        with self._lock():
            D = self._validate(D, reset=True, name="D", stacklevel=5)  # + _fit_context
            new_ids = np.arange(len(D)) if ids is None else _as_ids(ids, len(D))
            _check_unique(np.arange(0), new_ids)
            self._build(D)
            self._positional_ids = ids is None
            self._fitted_space = self.space
            self.ids_ = new_ids
            self.n_samples_fit_ = len(D)
        return self

    def add(self, D, ids=None):
        """Add documents to a fitted index without rebuilding it.

        Safe to call while other threads query the index: a query sees the
        documents either before or after the addition, never half of it.

        Parameters
        ----------
        D : array-like of shape (n_new, n_features)
            New document embeddings.
        ids : array-like of shape (n_new,), default=None
            Their ids; required when the index was fitted with ids.

        Returns
        -------
        self : object
            The index, now holding ``n_samples_fit_ + n_new`` documents.
        """
        check_is_fitted(self)
        self._validate_params()
        with self._lock():
            self._check_space_unchanged()
            D = self._validate(D, reset=False, name="D")
            new_ids = self._new_ids(ids, len(D))
            self._append(D)
            self.ids_ = _concat_ids(self.ids_, new_ids)
            self.n_samples_fit_ += len(D)
        return self

    def partial_fit(self, D, y=None, ids=None):
        """Fit on the first call, :meth:`add` on later ones.

        Parameters
        ----------
        D : array-like of shape (n_docs, n_features)
            Document embeddings.
        y : None
            Ignored, present for API consistency.
        ids : array-like of shape (n_docs,), default=None
            Document ids, as in :meth:`fit`.

        Returns
        -------
        self : object
            The index.
        """
        with self._lock():  # two threads' first calls must not both fit
            if not hasattr(self, "ids_"):
                return self.fit(D, ids=ids)
            return self.add(D, ids=ids)

    def _new_ids(self, ids, n_new):
        """Validate ids for ``n_new`` documents appended after ``ids_``."""
        positional = getattr(self, "_positional_ids", True)
        if ids is None:
            if not positional:
                raise ValueError("This index was fitted with ids; pass ids for new documents.")
            return np.arange(len(self.ids_), len(self.ids_) + n_new)
        if positional:
            raise ValueError("This index was fitted without ids; add documents without ids.")
        new_ids = _as_ids(ids, n_new)
        _check_unique(self.ids_, new_ids)
        return new_ids

    def _check_space_unchanged(self):
        # The stored vectors and distances belong to the space of the fit.
        fitted = getattr(self, "_fitted_space", self.space)
        if self.space != fitted:
            raise ValueError(
                f"space was set to {self.space!r} after the index was fitted with "
                f"{fitted!r}; refit the index (or set space back)."
            )

    def _check_n_neighbors(self, n_neighbors, query_is_train):
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        if not _is_int(k):
            raise TypeError(f"n_neighbors must be an int, got {type(k).__name__} {k!r}.")
        if query_is_train and not 0 < k < self.n_samples_fit_:
            raise ValueError(
                f"Expected 0 < n_neighbors < n_samples_fit when Q is None (each document "
                f"is left out of its own neighbours), but n_neighbors = {k}, "
                f"n_samples_fit = {self.n_samples_fit_}."
            )
        if not 0 < k <= self.n_samples_fit_:
            raise ValueError(
                f"Expected 0 < n_neighbors <= n_samples_fit, but n_neighbors = {k}, "
                f"n_samples_fit = {self.n_samples_fit_}."
            )
        return int(k)

    def kneighbors(self, Q=None, n_neighbors=None, return_distance=True, return_ids=False):
        """Find the ``n_neighbors`` nearest documents of each query.

        Parameters
        ----------
        Q : array-like of shape (n_queries, n_features), default=None
            Queries. ``None`` queries every indexed document, excluding itself
            from its own neighbours, as in :class:`~sklearn.neighbors.NearestNeighbors`.
        n_neighbors : int, default=None
            Neighbours per query; defaults to the ``n_neighbors`` parameter.
        return_distance : bool, default=True
            Whether to return the distances too.
        return_ids : bool, default=False
            Return document ids (``ids_``) instead of row positions.

        Returns
        -------
        neigh_dist : ndarray of shape (n_queries, n_neighbors), float32
            Distances, nearest first (only when ``return_distance=True``).
        neigh_ind : ndarray of shape (n_queries, n_neighbors)
            Row positions of the neighbours, or their ids with ``return_ids=True``.
        """
        check_is_fitted(self)
        self._validate_params()
        query_is_train = Q is None
        with self._lock():
            self._check_space_unchanged()
            if not query_is_train:
                Q = self._validate(Q, reset=False, name="Q")
            k = self._check_n_neighbors(n_neighbors, query_is_train)
            if query_is_train:
                Q, k = self._stored_vectors(), k + 1
            dist, ind = self._query(Q, k)
            ids = self.ids_  # read under the lock: matches the vectors just searched
        if query_is_train:
            dist, ind = _drop_self(dist, ind)
        if return_ids:
            ind = ids[ind]
        return (dist, ind) if return_distance else ind

    def kneighbors_graph(self, Q=None, n_neighbors=None, mode="connectivity"):
        """Sparse k-neighbours graph of the queries over the indexed documents.

        Parameters
        ----------
        Q : array-like of shape (n_queries, n_features), default=None
            Queries; ``None`` uses the indexed documents, excluding self-edges.
        n_neighbors : int, default=None
            Neighbours per query; defaults to the ``n_neighbors`` parameter.
        mode : {"connectivity", "distance"}, default="connectivity"
            Ones, or the distances, as edge weights.

        Returns
        -------
        A : scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit_)
            ``A[i, j]`` is the weight of the edge from query ``i`` to document ``j``.
        """
        if mode not in ("connectivity", "distance"):
            raise ValueError(f'mode must be "connectivity" or "distance", got {mode!r}.')
        dist, ind = self.kneighbors(Q, n_neighbors, return_distance=True)
        n_queries, k = ind.shape
        data = np.ones(ind.size) if mode == "connectivity" else dist.ravel().astype(np.float64)
        indptr = np.arange(0, n_queries * k + 1, k)
        return sparse.csr_matrix(
            (data, ind.ravel(), indptr), shape=(n_queries, self.n_samples_fit_)
        )


def _unit_rows(X, name, stacklevel):
    """Rows scaled to unit L2 norm (zero rows stay zero, with a warning), for any finite float32.

    A plain normalisation (sklearn's, or hnswlib's own) turns a row of 1e20s
    (squares overflow) or 1e-40s (squares underflow) into zeros, whose cosine
    distance to everything is 1; the package's normaliser rescales such rows
    first. The warning is the index's own: zero rows are kept, not dropped.
    """
    zero = np.flatnonzero(~X.any(axis=1))
    if zero.size:  # static embedding models give all-zero rows for unknown words
        warnings.warn(
            f"{name} has {zero.size} all-zero row(s) (first at index {zero[0]}); they have "
            "no direction, so their cosine distance to every row is 1.",
            UserWarning,
            stacklevel=stacklevel,
        )
    return l2_normalize(X, zero_rows="ignore")


def _check_norms(X, space):
    """Refuse rows whose inner products or squared distances would overflow float32."""
    # A bound on the largest entry settles the common case without computing norms.
    if max(-float(X.min()), float(X.max())) * np.sqrt(X.shape[1]) <= MAX_NORM:
        return
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
    big = np.flatnonzero(norms > MAX_NORM)
    if big.size:
        raise ValueError(
            f"Row {big[0]} has L2 norm {norms[big[0]]:.3g} ({big.size} row(s) above "
            f"{MAX_NORM:.0e}); space={space!r} computes inner products / squared distances "
            "in float32, which would overflow. Rescale the embeddings or use space='cosine'."
        )


def _as_ids(ids, n_new):
    """Document ids as an array of str or int values, one per document.

    Only str and int are ids (a float NaN is never equal to itself, a bool is
    not a name). All-str ids become a numpy str array and all-int ids an int
    array; a mixture stays an object array, so that neither kind is converted
    into the other (numpy would silently turn 1 into "1" next to a str).
    """
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iuU":
        arr = ids
    else:
        arr = np.asarray(ids, dtype=object)
    if arr.shape != (n_new,):
        raise ValueError(f"ids must have shape ({n_new},), got {arr.shape}.")
    if arr.dtype.kind != "O":
        return arr
    values = arr.tolist()
    kinds = set()
    for i, v in enumerate(values):
        if isinstance(v, str):
            kinds.add(str)
        elif _is_int(v):
            kinds.add(int)
        else:
            raise TypeError(
                f"Document ids must be str or int; ids[{i}] is {type(v).__name__} {v!r}."
            )
    values = [v if isinstance(v, str) else int(v) for v in values]
    # numpy's str dtype drops trailing NUL characters, which would merge "a" and "a\0",
    # and pads every id to the longest (one 10k-character id among 1e6 would take 40 GB).
    if (
        kinds == {str}
        and not any(v.endswith("\0") for v in values)
        and not _str_padding_blows_up(n_new, max(map(len, values)), sum(map(len, values)))
    ):
        return np.array(values, dtype=str)
    if kinds == {int} and all(-(2**63) <= v < 2**63 for v in values):
        return np.array(values, dtype=np.int64)
    out = np.empty(n_new, dtype=object)
    out[:] = values
    return out


def _str_padding_blows_up(n, longest, total_chars):
    """Whether a numpy str array (every entry padded to the longest) wastes far more than it holds."""
    return n * longest > 2 * total_chars + 2**18


def _concat_ids(old, new):
    """``old`` then ``new``; an object array when their kinds differ (see :func:`_as_ids`)."""
    same_kind = old.dtype.kind == new.dtype.kind == "U" and not _str_padding_blows_up(
        len(old) + len(new),
        max(old.itemsize, new.itemsize) // 4,
        (old.nbytes + new.nbytes) // 4,  # an upper bound on the characters held
    )
    ints = old.dtype.kind in "iu" and new.dtype.kind in "iu"
    if same_kind or (ints and np.result_type(old, new).kind in "iu"):
        return np.concatenate([old, new])
    out = np.empty(len(old) + len(new), dtype=object)
    out[: len(old)], out[len(old) :] = old.tolist(), new.tolist()
    return out


def _check_unique(existing, new):
    """Refuse ids of ``new`` already in ``existing`` or repeated within ``new``."""
    # Python objects compare fine across str/int mixtures where np.unique would not.
    seen = set(existing.tolist())
    dupes = []
    for doc_id in new.tolist():
        if doc_id in seen:
            dupes.append(doc_id)
        seen.add(doc_id)
    if dupes:
        raise ValueError(f"Duplicate document ids: {dupes[:5]!r} ({len(dupes)} in total).")


def _drop_self(dist, ind):
    """Remove each stored point from its own neighbour list (sklearn's rule).

    Rows where the point itself was not returned (exact duplicates) lose their
    first column instead, so every row keeps ``k - 1`` entries.
    """
    keep = ind != np.arange(len(ind))[:, None]
    keep[np.all(keep, axis=1), 0] = False
    k = ind.shape[1] - 1
    return dist[keep].reshape(-1, k), ind[keep].reshape(-1, k)


def stored_vectors(index):
    """The document vectors a fitted index holds, as float32 rows (unit rows for cosine).

    The one way from outside this package to an index's vectors (stage 2 takes a
    fitted index as its corpus): the storage hook ``_stored_vectors`` stays
    each index's own.
    """
    check_is_fitted(index)
    return index._stored_vectors()
