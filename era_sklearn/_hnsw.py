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
import tempfile
from importlib import metadata
from pathlib import Path

import hnswlib
import numpy as np
from joblib import effective_n_jobs
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["HNSWIndex"]

#: Version of the on-disk layout written by :meth:`HNSWIndex.save`.
FORMAT_VERSION = 1
_INDEX_FILE = "index.hnsw"
_META_FILE = "meta.json"
_SPACES = ("cosine", "ip", "l2")


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
    ``_stored_vectors()``; everything about ids, validation and the sklearn-like
    ``kneighbors`` / ``kneighbors_graph`` API lives here once.
    """

    def _validate(self, X, reset):
        # float32 is what both backends compute in; validate_data names both
        # dimensions when a query has the wrong number of features.
        return validate_data(self, X, reset=reset, dtype=np.float32, order="C")

    def _check_space(self):
        if self.space not in _SPACES:
            raise ValueError(f"space must be one of {_SPACES}, got {self.space!r}.")

    def fit(self, D, y=None, ids=None):
        """Index the documents ``D``.

        Parameters
        ----------
        D : array-like of shape (n_docs, n_features)
            Document embeddings.
        y : None
            Ignored, present for API consistency.
        ids : array-like of shape (n_docs,), default=None
            Document ids (str or int) returned by ``return_ids=True``. Defaults
            to the row positions ``0 .. n_docs - 1``.

        Returns
        -------
        self : object
            The fitted index.
        """
        self._check_space()
        D = self._validate(D, reset=True)
        self._positional_ids = ids is None
        self.ids_ = self._new_ids(ids, len(D), np.arange(0))
        self._build(D)
        self.n_samples_fit_ = len(D)
        return self

    def add(self, D, ids=None):
        """Add documents to a fitted index without rebuilding it.

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
        D = self._validate(D, reset=False)
        new_ids = self._new_ids(ids, len(D), self.ids_)
        self._append(D)
        self.ids_ = np.concatenate([self.ids_, new_ids])
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
        if not hasattr(self, "ids_"):
            return self.fit(D, ids=ids)
        return self.add(D, ids=ids)

    def _new_ids(self, ids, n_new, existing):
        """Validate ids for ``n_new`` documents, appended after ``existing``."""
        if ids is None:
            if not getattr(self, "_positional_ids", True):
                raise ValueError("This index was fitted with ids; pass ids for new documents.")
            return np.arange(len(existing), len(existing) + n_new)
        if len(existing) and getattr(self, "_positional_ids", False):
            raise ValueError("This index was fitted without ids; add documents without ids.")
        self._positional_ids = False
        ids = np.asarray(ids)
        if ids.shape != (n_new,):
            raise ValueError(f"ids must have shape ({n_new},), got {ids.shape}.")
        # Python objects compare fine across str/int mixtures where np.unique would not.
        seen = set(existing.tolist())
        dupes = []
        for doc_id in ids.tolist():
            if doc_id in seen:
                dupes.append(doc_id)
            seen.add(doc_id)
        if dupes:
            raise ValueError(f"Duplicate document ids: {dupes[:5]!r} ({len(dupes)} in total).")
        return ids

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
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        query_is_train = Q is None
        if query_is_train:
            Q, k = self._stored_vectors(), k + 1
        else:
            Q = self._validate(Q, reset=False)
        if not (isinstance(k, (int, np.integer)) and 0 < k <= self.n_samples_fit_):
            raise ValueError(
                f"Expected 0 < n_neighbors <= n_samples_fit, but n_neighbors = {k}, "
                f"n_samples_fit = {self.n_samples_fit_}."
            )
        dist, ind = self._query(Q, k)
        if query_is_train:
            dist, ind = _drop_self(dist, ind)
        if return_ids:
            ind = self.ids_[ind]
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
    M : int, default=16
        Graph out-degree; more means better recall, more memory, slower build.
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
        Threads for building and searching; ``None`` means 1 unless in a
        :func:`joblib.parallel_backend` context, ``-1`` means all cores.
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

    def _threads(self):
        return effective_n_jobs(self.n_jobs)

    def _build(self, D):
        seed = self.random_state
        if not isinstance(seed, (int, np.integer)):
            seed = check_random_state(seed).randint(np.iinfo(np.int32).max)
        self.index_ = hnswlib.Index(space=self.space, dim=D.shape[1])
        self.index_.init_index(
            max_elements=len(D),
            ef_construction=self.ef_construction,
            M=self.M,
            random_seed=int(seed),
        )
        self.index_.add_items(D, np.arange(len(D)), num_threads=self._threads())

    def _append(self, D):
        start = self.index_.get_current_count()
        needed = start + len(D)
        if needed > self.index_.get_max_elements():
            # Grow geometrically so that many small adds stay amortised O(1) resizes.
            self.index_.resize_index(max(needed, 2 * self.index_.get_max_elements()))
        self.index_.add_items(D, np.arange(start, needed), num_threads=self._threads())

    def _query(self, Q, k):
        self.index_.set_ef(max(self.ef, k))
        labels, dist = self.index_.knn_query(Q, k=k, num_threads=self._threads())
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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            self.index_.save_index(str(tmp / _INDEX_FILE))
            (tmp / _META_FILE).write_text(json.dumps(self._metadata()))
            _replace_dir(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path):
        """Load an index written by :meth:`save`.

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
            If the directory was written by a newer on-disk format.

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
        meta = json.loads((path / _META_FILE).read_text())
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{path} was saved in index format version {meta['format_version']} "
                f"(era_sklearn {meta.get('era_sklearn_version')}); this era_sklearn reads "
                f"versions up to {FORMAT_VERSION}. Upgrade era_sklearn to load it."
            )
        self = cls(**meta["params"])
        self.index_ = _load_hnsw(path / _INDEX_FILE, meta)
        self.n_features_in_ = meta["dim"]
        self.n_samples_fit_ = meta["element_count"]
        self._positional_ids = meta["positional_ids"]
        dtype = object if meta["ids_dtype"] == "object" else np.dtype(meta["ids_dtype"])
        self.ids_ = np.array(meta["ids"], dtype=dtype)
        return self

    def __getstate__(self):
        # Serialise through hnswlib's own file format so pickles and save()
        # share one code path whatever hnswlib's native pickling does.
        # Copy: BaseEstimator may hand back the live __dict__ itself.
        state = dict(super().__getstate__())
        index = state.pop("index_", None)
        if index is not None:
            with tempfile.TemporaryDirectory() as tmp:
                index.save_index(f"{tmp}/{_INDEX_FILE}")
                state["_index_bytes"] = Path(f"{tmp}/{_INDEX_FILE}").read_bytes()
            state["_index_max_elements"] = index.get_max_elements()
        return state

    def __setstate__(self, state):
        blob = state.pop("_index_bytes", None)
        max_elements = state.pop("_index_max_elements", 0)
        super().__setstate__(state)
        if blob is not None:
            with tempfile.TemporaryDirectory() as tmp:
                Path(f"{tmp}/{_INDEX_FILE}").write_bytes(blob)
                meta = {
                    "space": self.space,
                    "dim": self.n_features_in_,
                    "max_elements": max_elements,
                }
                self.index_ = _load_hnsw(f"{tmp}/{_INDEX_FILE}", meta)


def _json_params(params):
    # A RandomState instance has no JSON form; it only mattered at build time.
    seed = params["random_state"]
    params["random_state"] = int(seed) if isinstance(seed, (int, np.integer)) else None
    return params


def _load_hnsw(file, meta):
    index = hnswlib.Index(space=meta["space"], dim=meta["dim"])
    index.load_index(str(file), max_elements=meta["max_elements"])
    return index


def _replace_dir(new, path):
    """Move directory ``new`` to ``path``, replacing any existing one.

    ``os.replace`` cannot overwrite a non-empty directory, so the old one is
    first renamed aside and restored if the second rename fails.
    """
    if not path.exists():
        os.replace(new, path)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.replace(path, backup)
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
