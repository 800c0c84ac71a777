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
from importlib import metadata
from numbers import Integral
from pathlib import Path
from typing import ClassVar

import hnswlib
import numpy as np
from joblib import cpu_count, effective_n_jobs
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._utils.version import __version__
from .base import (
    _SPACES,
    _as_ids,
    _BaseIndex,
    _check_unique,
    _IntInterval,
    _is_int,
)
from .hnsw_format import check_index_file

__all__ = ["HNSWIndex"]

#: Version of the on-disk layout written by :meth:`HNSWIndex.save`.
FORMAT_VERSION = 1
_INDEX_FILE = "index.hnsw"
_META_FILE = "meta.json"
#: hnswlib caps M here (with only a message on stderr); below 2 its level draw divides by log(1).
_MAX_M = 10_000


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
            "era_sklearn_version": __version__,
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
