"""Approximate nearest-neighbour document index backed by ``hnswlib``.

The ERA setting builds the document index once, with the cheap document
encoder, and never rebuilds it: queries are adapted into that space instead.
:class:`HNSWIndex` therefore supports adding documents later, saving to and
loading from disk atomically, and pickling, behind the familiar
:class:`sklearn.neighbors.NearestNeighbors` surface.
"""

import json
import os
import shutil
import stat
import tempfile
import threading
import warnings
from importlib import metadata
from numbers import Integral
from pathlib import Path
from typing import ClassVar

import hnswlib
import numpy as np
from joblib import cpu_count, effective_n_jobs
from scipy import sparse
from sklearn.base import BaseEstimator, _fit_context
from sklearn.preprocessing import normalize
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from era_sklearn._index.hnsw_format import MAX_NORM, check_index_file

__all__ = ["HNSWIndex"]

#: Version of the on-disk layout written by :meth:`HNSWIndex.save`.
FORMAT_VERSION = 1
_INDEX_FILE = "index.hnsw"
_META_FILE = "meta.json"
_SPACES = ("cosine", "ip", "l2")
#: hnswlib caps M here (with only a message on stderr); below 2 its level draw divides by log(1).
_MAX_M = 10_000


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

    Dividing by each row's largest magnitude first keeps the squares in range:
    squaring 1e20 overflows to infinity and squaring 1e-40 underflows to zero,
    and either way a plain normalisation (sklearn's, or hnswlib's own) turns the
    row into zeros, whose cosine distance to everything is 1.
    """
    scale = np.maximum(X.max(axis=1), -X.min(axis=1))[:, None]  # no |X| temporary
    zero = np.flatnonzero(scale[:, 0] == 0)
    if zero.size:  # static embedding models give all-zero rows for unknown words
        warnings.warn(
            f"{name} has {zero.size} all-zero row(s) (first at index {zero[0]}); they have "
            "no direction, so their cosine distance to every row is 1.",
            UserWarning,
            stacklevel=stacklevel,
        )
        scale[zero] = 1
    return normalize(X / scale, copy=False)


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


class HNSWIndex(_BaseIndex):
    """Approximate nearest-neighbour index over document embeddings (HNSW).

    A thin scikit-learn style wrapper of :class:`hnswlib.Index` with the
    :class:`~sklearn.neighbors.NearestNeighbors` surface, optional document
    ids, incremental :meth:`add`, atomic :meth:`save` / :meth:`load` and
    pickling.

    Parameters
    ----------
    n_neighbors : int, default=10
        Default number of neighbours for :meth:`kneighbors`.
    space : {"cosine", "ip", "l2"}, default="cosine"
        Distance: ``1 - cos`` (cosine), ``1 - <q, d>`` (ip) or Euclidean
        distance (l2; hnswlib's squared distance is square-rooted, as in sklearn).
        Cosine takes rows of any finite scale (they are normalised without
        overflow); ip and l2 compute in float32 and refuse rows of L2 norm above
        1e18, whose products would overflow.
    M : int, default=16
        Graph out-degree, 2 to 10000 (hnswlib's range); more means better
        recall, more memory, slower build.
    ef_construction : int, default=200
        Candidate list size while building.
    ef : int, default=100
        Candidate list size while searching (raised to ``n_neighbors`` when
        smaller). Read at every query, so ``set_params(ef=...)`` needs no refit.
        100 gives recall@10 of 0.998 against exact search on SciFact MiniLM
        documents with adapted mpnet queries (``benchmarks/index_bench.py``).
        Unstructured data (isotropic Gaussian, 384-d) needs far larger ``ef``
        for the same recall; real embeddings have much lower intrinsic dimension.
    n_jobs : int, default=None
        Threads for building and searching, at most the number of CPUs;
        ``None`` means 1 unless in a :func:`joblib.parallel_backend` context,
        ``-1`` means all cores.
    random_state : int, RandomState instance or None, default=None
        Seed of hnswlib's level generator (``random_seed``). Multi-threaded
        builds are not bit-reproducible even with a fixed seed.

    Attributes
    ----------
    index_ : hnswlib.Index
        The underlying index; its labels are row positions.
    ids_ : ndarray of shape (n_samples_fit_,)
        Document ids, row positions when none were given.
    n_features_in_ : int
        Embedding dimension.
    n_samples_fit_ : int
        Number of indexed documents.

    See Also
    --------
    era_sklearn.ExactIndex : Exact search with the same surface.
    sklearn.neighbors.NearestNeighbors : Exact neighbours in scikit-learn.

    Notes
    -----
    One index may be shared by threads: ``add``, ``fit``, ``kneighbors`` and
    ``save`` hold a lock, so a query sees the documents either before or after
    an addition. :meth:`load` checks the metadata and hnswlib's file against
    each other before hnswlib reads it, and refuses a damaged or edited index
    with a ValueError.

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import HNSWIndex
    >>> rng = np.random.default_rng(0)
    >>> docs = rng.normal(size=(100, 8)).astype(np.float32)
    >>> index = HNSWIndex(n_neighbors=3, random_state=0).fit(docs, ids=[f"d{i}" for i in range(100)])
    >>> dist, ind = index.kneighbors(docs[:2])
    >>> ind[:, 0]
    array([0, 1])
    >>> index.kneighbors(docs[:1], return_distance=False, return_ids=True)[0, 0]
    np.str_('d0')
    >>> index.add(rng.normal(size=(5, 8)), ids=[f"new{i}" for i in range(5)]).n_samples_fit_
    105
    """

    def __init__(
        self,
        n_neighbors=10,
        *,
        space="cosine",
        M=16,
        ef_construction=200,
        ef=100,
        n_jobs=None,
        random_state=None,
    ):
        self.n_neighbors = n_neighbors
        self.space = space
        self.M = M
        self.ef_construction = ef_construction
        self.ef = ef
        self.n_jobs = n_jobs
        self.random_state = random_state

    _parameter_constraints: ClassVar[dict] = {
        **_BaseIndex._parameter_constraints,
        "M": [_IntInterval(Integral, 2, _MAX_M, closed="both")],
        "ef_construction": [_IntInterval(Integral, 1, np.iinfo(np.int32).max, closed="both")],
        "ef": [_IntInterval(Integral, 1, np.iinfo(np.int32).max, closed="both")],
        "n_jobs": [  # joblib's convention; 0 means nothing
            _IntInterval(Integral, None, -1, closed="right"),
            _IntInterval(Integral, 1, None, closed="left"),
            None,
        ],
        "random_state": [
            _IntInterval(Integral, 0, np.iinfo(np.uint32).max, closed="both"),
            np.random.RandomState,
            None,
        ],
    }

    def _threads(self):
        # More threads than cores gains nothing, and hnswlib starts one OS thread
        # per requested thread (a huge n_jobs would exhaust them mid-search).
        return min(effective_n_jobs(self.n_jobs), cpu_count())

    def _build(self, D):
        seed = self.random_state
        if not _is_int(seed):
            seed = check_random_state(seed).randint(np.iinfo(np.int32).max)
        index = hnswlib.Index(space=self.space, dim=D.shape[1])
        index.init_index(
            max_elements=len(D),
            ef_construction=self.ef_construction,
            M=self.M,
            random_seed=int(seed),
        )
        index.add_items(D, np.arange(len(D)), num_threads=self._threads())
        self.index_ = index

    def _append(self, D):
        start = self.index_.get_current_count()
        needed = start + len(D)
        if needed > self.index_.get_max_elements():
            # Grow geometrically so that many small adds stay amortised O(1) resizes.
            self.index_.resize_index(max(needed, 2 * self.index_.get_max_elements()))
        self.index_.add_items(D, np.arange(start, needed), num_threads=self._threads())

    def _query(self, Q, k):
        self.index_.set_ef(max(self.ef, k))
        try:
            labels, dist = self.index_.knn_query(Q, k=k, num_threads=self._threads())
        except RuntimeError as e:
            if "contiguous 2D array" not in str(e):
                raise
            # With ef >= k hnswlib only returns fewer than k when fewer are reachable
            # from the entry point: a larger ef would not help.
            raise ValueError(
                f"The HNSW graph (M={self.index_.M}) connects fewer than {k} documents to "
                "the entry point: it is disconnected, as happens with many duplicate "
                "vectors and a small M or ef_construction. Ask for fewer neighbours or "
                "refit with a larger M / ef_construction."
            ) from None
        if self.space == "l2":
            dist = np.sqrt(np.maximum(dist, 0))  # hnswlib's l2 is squared
        return dist, labels.astype(np.intp)

    def _stored_vectors(self):
        # Cosine space stores normalised rows, which query identically.
        return self.index_.get_items(np.arange(self.n_samples_fit_), return_type="numpy")

    # ------------------------------------------------------------ persistence
    def _metadata(self):
        ids = self.ids_
        return {
            "format_version": FORMAT_VERSION,
            "era_sklearn_version": _era_version(),
            "hnswlib_version": metadata.version("hnswlib"),
            "dim": int(self.n_features_in_),
            "space": self.space,
            "params": _json_params(self.get_params()),
            "element_count": int(self.n_samples_fit_),
            "max_elements": int(self.index_.get_max_elements()),
            "positional_ids": bool(self._positional_ids),
            "ids_dtype": ids.dtype.str if ids.dtype.kind in "iuU" else "object",
            "ids": ids.tolist(),
        }

    def save(self, path):
        """Save the index to the directory ``path``, atomically.

        Everything is written to a temporary directory beside ``path`` which
        then replaces it, so an interrupted save leaves any previous index at
        ``path`` intact.

        Parameters
        ----------
        path : str or path-like
            Target directory; holds hnswlib's index file and ``meta.json``.

        Returns
        -------
        path : pathlib.Path
            The directory written.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from era_sklearn import HNSWIndex
        >>> docs = np.random.default_rng(0).normal(size=(50, 4))
        >>> index = HNSWIndex(n_neighbors=2).fit(docs)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     loaded = HNSWIndex.load(index.save(f"{tmp}/idx"))
        >>> bool((loaded.kneighbors(docs[:5])[1] == index.kneighbors(docs[:5])[1]).all())
        True
        """
        check_is_fitted(self)
        self._validate_params()
        path = Path(path)
        _check_replaceable(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            with self._lock():  # an add() running meanwhile would tear the file
                self._check_space_unchanged()
                self.index_.save_index(str(tmp / _INDEX_FILE))
                meta = self._metadata()
            (tmp / _META_FILE).write_text(json.dumps(meta))
            _replace_dir(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path):
        """Load an index written by :meth:`save`.

        Every metadata field and the hnswlib file itself are checked against each
        other before hnswlib reads the file, so that a damaged or edited index is
        refused with a ValueError instead of crashing the interpreter or
        answering with NaN distances.

        Parameters
        ----------
        path : str or path-like
            Directory written by :meth:`save`.

        Returns
        -------
        index : HNSWIndex
            The fitted index.

        Raises
        ------
        ValueError
            If the directory was written by a newer on-disk format, if its
            metadata or index file is invalid or inconsistent, or if either is
            not a regular file (a FIFO or a device such as ``/dev/zero``).
            A str ``ids_dtype`` wider than the longest id is read at the
            longest id's width (the same ids, without the padding).

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from era_sklearn import HNSWIndex
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = HNSWIndex(ef=50).fit(np.eye(3)).save(tmp + "/idx")
        ...     HNSWIndex.load(path).ef
        50
        """
        path = Path(path)
        meta = _read_metadata(path / _META_FILE)
        names = set(cls().get_params())
        if set(meta["params"]) != names:
            raise ValueError(
                f"{path / _META_FILE}: params must have exactly the keys {sorted(names)}, "
                f"got {sorted(meta['params'])}."
            )
        try:
            self = cls(**meta["params"])
            self._validate_params()
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path / _META_FILE} holds invalid params: {e}") from None
        if meta["space"] != self.space:
            raise ValueError(
                f"{path / _META_FILE}: space {meta['space']!r} differs from params' {self.space!r}."
            )
        n = meta["element_count"]
        ids = _read_ids(meta, n, path / _META_FILE)
        self.index_ = _load_hnsw(path / _INDEX_FILE, meta["space"], meta["dim"], n)
        self.n_features_in_ = meta["dim"]
        self.n_samples_fit_ = n
        self._positional_ids = meta["positional_ids"]
        self._fitted_space = meta["space"]
        self.ids_ = ids
        return self

    def __getstate__(self):
        # Serialise through hnswlib's own file format so pickles and save()
        # share one code path whatever hnswlib's native pickling does.
        with self._lock():
            state = super().__getstate__()
            index = state.pop("index_", None)
            if index is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    index.save_index(f"{tmp}/{_INDEX_FILE}")
                    state["_index_bytes"] = Path(f"{tmp}/{_INDEX_FILE}").read_bytes()
        return state

    def __setstate__(self, state):
        blob = state.pop("_index_bytes", None)
        state.pop("_index_max_elements", None)  # written by era_sklearn 0.1; unused
        super().__setstate__(state)
        if blob is not None:
            with tempfile.TemporaryDirectory() as tmp:
                Path(f"{tmp}/{_INDEX_FILE}").write_bytes(blob)
                space = getattr(self, "_fitted_space", self.space)
                self.index_ = _load_hnsw(
                    f"{tmp}/{_INDEX_FILE}", space, self.n_features_in_, self.n_samples_fit_
                )


def _json_params(params):
    # A RandomState instance has no JSON form; it only mattered at build time.
    seed = params["random_state"]
    params["random_state"] = int(seed) if _is_int(seed) else None
    return params


#: meta.json fields and the check each must pass (besides "params" and "ids").
_META_CHECKS = {
    "dim": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "element_count": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "max_elements": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "space": (lambda v: v in _SPACES, f"one of {_SPACES}"),
    "params": (lambda v: isinstance(v, dict), "a JSON object"),
    "positional_ids": (lambda v: isinstance(v, bool), "true or false"),
    "ids_dtype": (lambda v: isinstance(v, str), "a dtype string"),
    "ids": (lambda v: isinstance(v, list), "a JSON list"),
}


def _require_regular_file(status, file):
    """Refuse anything but a regular file: a FIFO blocks a reader, ``/dev/zero`` never ends."""
    if not stat.S_ISREG(status.st_mode):
        raise ValueError(
            f"{file} is not a regular file (a FIFO, device, socket or directory); "
            "HNSWIndex.load reads only the files save() writes."
        )


def _read_regular_file(file):
    """The bytes of ``file``, once it is known to be a regular file."""
    # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
    fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        _require_regular_file(os.fstat(fd), file)
        return f.read()


def _read_metadata(file):
    """meta.json as a dict whose every field has the type and range :meth:`load` needs."""
    try:
        meta = json.loads(_read_regular_file(file).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{file} is not valid JSON: {e!r}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(meta).__name__}.")  # noqa: TRY004 (bad file content, not a bad argument type)
    version = meta.get("format_version")
    if not (_is_int(version) and version >= 1):
        raise ValueError(f"{file}: format_version must be a positive int, got {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{file.parent} was saved in index format version {version} "
            f"(era_sklearn {meta.get('era_sklearn_version')}); this era_sklearn reads "
            f"versions up to {FORMAT_VERSION}. Upgrade era_sklearn to load it."
        )
    for field, (ok, expected) in _META_CHECKS.items():
        if field not in meta:
            raise ValueError(f"{file} lacks the field {field!r}.")
        if not ok(meta[field]):
            raise ValueError(f"{file}: {field} must be {expected}, got {meta[field]!r}.")
    if meta["max_elements"] < meta["element_count"]:
        raise ValueError(
            f"{file}: max_elements {meta['max_elements']} < element_count {meta['element_count']}."
        )
    return meta


def _read_ids(meta, n, file):
    """The ids of meta.json, typed as at save time and checked like new ids."""
    values = meta["ids"]
    try:
        ids = _as_ids(values, n)
        _check_unique(np.arange(0), ids)
        dtype = np.dtype(object if meta["ids_dtype"] == "object" else meta["ids_dtype"])
        if dtype.kind not in "iuUO":
            raise TypeError(f"ids_dtype must be an int, str or object dtype, got {dtype}")
        typed = _as_declared(ids, dtype)
        if typed.tolist() != ids.tolist():  # a narrower dtype would truncate or wrap
            raise ValueError(f"ids do not fit ids_dtype {meta['ids_dtype']!r}")
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{file} holds invalid ids: {e}") from None
    positions = typed.dtype.kind in "iu" and np.array_equal(typed, np.arange(n))
    if meta["positional_ids"] and not positions:
        raise ValueError(f"{file}: positional_ids is true but ids are not 0 .. {n - 1}.")
    return typed


def _as_declared(ids, dtype):
    """``ids`` (from :func:`_as_ids`) in the saved dtype; str ids keep the width they need.

    numpy pads every str entry to the dtype's width, so an edited ``"<U2000000"`` would
    claim gigabytes for a few short ids. :func:`_as_ids` already gave str ids the width
    of the longest (or an object array, where that padding would blow up), which holds
    the same values; a claimed width narrower than the longest id still fails the
    caller's comparison.
    """
    values = ids.tolist()
    if (
        dtype.kind == "U"
        and all(isinstance(v, str) for v in values)
        and max(map(len, values)) <= dtype.itemsize // 4
    ):
        return ids
    return ids.astype(dtype)


def _load_hnsw(file, space, dim, n_elements):
    """An hnswlib index read from ``file`` once :func:`check_index_file` accepts it."""
    _require_regular_file(os.stat(file), file)
    check_index_file(file, dim=dim, n_elements=n_elements, space=space)
    index = hnswlib.Index(space=space, dim=dim)
    # Capacity n_elements: nothing in the file decides how much hnswlib allocates,
    # and the next add() grows the index geometrically anyway.
    index.load_index(str(file), max_elements=n_elements)
    return index


def _check_replaceable(path):
    """Refuse to replace anything but a directory written by :meth:`HNSWIndex.save`."""
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory; save() writes a directory.")
    extra = {p.name for p in path.iterdir()} - {_INDEX_FILE, _META_FILE}
    if extra:
        raise FileExistsError(
            f"{path} holds files other than a saved index ({sorted(extra)[:3]}); save() "
            "replaces the whole directory, so it refuses to delete them. Pick another path."
        )


def _replace_dir(new, path):
    """Move directory ``new`` to ``path``, replacing any existing one.

    ``os.replace`` cannot overwrite a non-empty directory, so the old one is
    first renamed aside and restored if the second rename fails.
    """
    if not path.exists():
        os.replace(new, path)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    try:
        os.replace(path, backup)
    except BaseException:
        backup.rmdir()
        raise
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(backup, path)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _era_version():
    try:  # lazy: era_sklearn/__init__ may import this module
        import era_sklearn

        return getattr(era_sklearn, "__version__", None) or metadata.version("era-sklearn")
    except metadata.PackageNotFoundError:
        return "unknown"
