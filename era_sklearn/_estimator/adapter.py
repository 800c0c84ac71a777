"""ERAAdapter: validation, orchestration and fitted state of the two-stage adapter.

The solvers themselves live in :mod:`era_sklearn.align` (stage 1) and
:mod:`era_sklearn.adapt` (stage 2); they return arrays and histories, and only
this module assigns fitted attributes.
"""

import json
import threading
import warnings
from numbers import Real
from typing import ClassVar

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import assert_all_finite
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._stage1.reservoir import Reservoir
from .._stage1.statistics import PairStatistics
from .._stage2.corpus import corpus_matrix, match_targets
from .._stage2.problem import Stage2Problem
from .._stage2.queries import query_ids, row_weights, unique_rows
from .._transform.linear import map_rows
from .._utils.optional import require_torch
from .._utils.validation import (
    FLOAT_DTYPES,
    as_target_matrix,
    check_sample_weight_and_groups,
    check_squares_representable,
    l2_normalize,
    warn_zero_rows,
)
from ..adapt import ADAPT_SOLVERS, Contrastive, Ridge, Softmax
from ..align import ALIGN_SOLVERS, LeastSquares, Procrustes, TorchAlign
from ..metrics import retrieval_score
from .persistence import _PersistenceMixin

#: Blend weight of the query-encoder part used by ``hybrid=True`` when no
#: labels choose one. Chosen on the *training* queries of the shared SciFact
#: and NFCorpus sets: 0.3 was the largest blend not below the cheap encoder
#: alone with both the MiniLM and the m2v index.
DEFAULT_BLEND = 0.3
#: Blends ``blend="auto"`` tries with Ridge. 0.9 and 1.0 are left out to keep
#: selection cheap: with all labels the choice never went above 0.6 in the
#: shared-data benchmarks.
AUTO_BLENDS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]
#: fit warns when it has no stage-1 map and fewer labelled queries than this:
#: label-only maps need many labels (SciFact / MiniLM, `python -m benchmarks.quality`,
#: 3 seeds: 0.065 nDCG@10 at 32 queries against 0.569 from fit_align; with all 809,
#: 0.70 against 0.79).
FEW_LABELS_WITHOUT_ALIGN = 500
#: Document-side alignment rows kept (``align_docs_``) as the candidate
#: documents of stage 2 when ``fit`` gets no corpus.
ALIGN_DOCS_CAPACITY = 4096
#: Guards the lazy solve of ``partial_fit_align`` (one solve, seen by all threads).
_SOLVE_LOCK = threading.RLock()


class _SolvedOnRead:
    """A fitted map attribute that first solves a pending ``partial_fit_align``."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        if obj.__dict__.get("_align_pending"):
            with _SOLVE_LOCK:  # one thread solves; the others then read its result
                if obj.__dict__.get("_align_pending"):
                    obj._solve_pending_align()
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj, value):
        obj.__dict__[self.name] = value


class ERAAdapter(_PersistenceMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                 BaseEstimator):
    """Query-side retrieval adapter learned in two stages: align, then train.

    Maps embeddings from a strong *query* encoder (``d_q`` columns) into the
    space of the cheap *document* encoder that built an existing index
    (``d_d`` columns), so the index never needs re-embedding.

    1. :meth:`fit_align` (self-supervised): the same texts embedded by both
       encoders; learns a map from query space to document space.
    2. :meth:`fit` (supervised): (query, relevant document) pairs refine the
       map, starting from stage 1 (or from nothing: the *label-only* baseline).

    Read more in the :ref:`User Guide <user_guide>`.

    Parameters
    ----------
    align : str, solver object, or fitted ERAAdapter, default="procrustes"
        Stage 1. ``"procrustes"``, ``"lstsq"``, ``"torch"`` or a solver object
        from :mod:`era_sklearn.align` (:class:`~era_sklearn.align.Procrustes`,
        :class:`~era_sklearn.align.LeastSquares`,
        :class:`~era_sklearn.align.TorchAlign`) carrying its own settings.
        A fitted ``ERAAdapter`` (or a :class:`sklearn.frozen.FrozenEstimator`
        of one, which survives ``clone`` in ``GridSearchCV``) lends its
        stage-1 map instead: :meth:`fit` starts from it.
    adapt : str or solver object, default="softmax"
        Stage 2. ``"softmax"``, ``"ridge"``, ``"contrastive"`` or a solver
        object from :mod:`era_sklearn.adapt`
        (:class:`~era_sklearn.adapt.Softmax`, :class:`~era_sklearn.adapt.Ridge`,
        :class:`~era_sklearn.adapt.Contrastive`).
    hybrid : bool, default=False
        ``X`` carries both embeddings of each text: ``[query_encoder(t),
        document_encoder(t)]``; its last ``d_d`` columns are the document
        encoder's own embedding, whose prior is the identity.
    blend : float in [0, 1] or "auto", default="auto"
        ``hybrid=True`` only (an error otherwise): weight ``b`` of the aligned
        query-encoder part in the prior ``[b * W_align ; (1 - b) * I]``.
        ``"auto"``: chosen on held-out queries by :class:`~era_sklearn.adapt.Ridge`,
        0.3 otherwise.
    normalize_input : bool, default=True
        L2-normalise input rows (each encoder's block on its own when
        ``hybrid=True``), as sentence embeddings are compared by cosine.
    normalize_output : bool, default=True
        L2-normalise output rows, so inner-product search on a normalised
        index equals cosine search.
    query_weighting : {"balanced", "rows"}, default="balanced"
        ``"balanced"``: every labelled query weighs 1 in stage 2, shared by
        its rows in proportion to ``sample_weight``. ``"rows"``: each row
        weighs its ``sample_weight``.
    verbose : int, default=0
        Progress output of the torch solvers when > 0.
    random_state : int, RandomState instance or None, default=None
        Seeds held-out splits, samples and torch training.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features_in_, n_doc_features)
        The linear part of the fitted map (the stage-1 prior after
        :meth:`fit_align` alone).
    intercept_ : ndarray of shape (n_doc_features,)
    module_params_ : dict of ndarray or None
        Weights of the residual MLP branch (``Contrastive(model="mlp")``).
    align_coef_, align_intercept_ : ndarray or None
        The stage-1 map (None for label-only), kept so refits never compound.
    align_docs_ : ndarray of shape (n_kept, n_doc_features) or None
        A uniform sample (at most 4,096 rows) of the normalised document-side
        alignment rows: the candidate documents of :meth:`fit` when it gets
        no ``corpus``.
    align_fingerprint_ : str or None
        The stage-1 settings that produced ``align_coef_``; :meth:`fit`
        refuses to reuse a map whose settings have changed since.
    align_history_ : dict or None
        Torch stage-1 training history.
    blend_ : float or None
        Hybrid blend used.
    penalty_ : float or None
        The chosen alpha: the solver's stage-2 strength toward the prior, on
        that solver's scale (see ``alpha`` of :class:`~era_sklearn.adapt.Softmax`
        and :class:`~era_sklearn.adapt.Ridge`). ``inf`` means the map is the prior
        itself: after :meth:`fit_align`, the stage-1 map (the held-out
        labelled queries scored no better under any penalty tried, see
        ``heldout_ndcg_``); for a hybrid, the blended stage-1 map; without
        stage 1 (label-only), the solver's label-only start, which is *not*
        an aligned map. None before :meth:`fit`.
    cv_results_ : dict or None
        Held-out scores of the candidates the solver tried.
    history_ : dict or None
        Stage-2 training history of an iterative solver.
    heldout_ndcg_ : dict or None
        What the choice of ``Softmax(alpha="auto")`` rests on: mean held-out
        nDCG@10 of the labelled queries (cross-validated, each query scored
        by a map fitted without it) and its standard error, ``{"mean", "se"}``,
        for ``"stage 1"``, the ``"chosen"`` map, their paired ``"gain over
        stage 1"``, and for a hybrid each blend's stage 1 and chosen map and
        the ``"cheap encoder"`` alone; also ``n_queries`` and ``n_folds``.
        Read it before deploying: a gain within about two standard errors of
        zero is not established. None for other solvers.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string column names (pandas).

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import ERAAdapter
    >>> rng = np.random.default_rng(0)
    >>> R = np.linalg.qr(rng.normal(size=(8, 8)))[0][:, :4]   # hidden map 8 -> 4
    >>> docs_q = rng.normal(size=(200, 8))                      # texts, query encoder
    >>> docs_d = docs_q @ R                                     # same texts, doc encoder
    >>> adapter = ERAAdapter(random_state=0).fit_align(docs_q, docs_d)
    >>> queries = rng.normal(size=(50, 8))
    >>> adapter.fit(queries, queries @ R).transform(queries).shape
    (50, 4)
    >>> float(adapter.score(queries, queries @ R))
    1.0
    """

    _parameter_constraints: ClassVar[dict] = {
        "align": [
            StrOptions(set(ALIGN_SOLVERS)), Procrustes, LeastSquares, TorchAlign,
            HasMethods(["fit_align", "transform"]),
        ],
        "adapt": [StrOptions(set(ADAPT_SOLVERS)), Softmax, Ridge, Contrastive],
        "hybrid": ["boolean"],
        "blend": [Interval(Real, 0, 1, closed="both"), StrOptions({"auto"})],
        "normalize_input": ["boolean"],
        "normalize_output": ["boolean"],
        "query_weighting": [StrOptions({"balanced", "rows"})],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    # The map is solved lazily after partial_fit_align (one SVD, not one per chunk).
    coef_ = _SolvedOnRead()
    intercept_ = _SolvedOnRead()
    align_coef_ = _SolvedOnRead()
    align_intercept_ = _SolvedOnRead()
    align_docs_ = _SolvedOnRead()

    def __init__(
        self,
        align="procrustes",
        adapt="softmax",
        *,
        hybrid=False,
        blend="auto",
        normalize_input=True,
        normalize_output=True,
        query_weighting="balanced",
        verbose=0,
        random_state=None,
    ):
        self.align = align
        self.adapt = adapt
        self.hybrid = hybrid
        self.blend = blend
        self.normalize_input = normalize_input
        self.normalize_output = normalize_output
        self.query_weighting = query_weighting
        self.verbose = verbose
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    @property
    def _n_features_out(self):
        """Output width, for ``get_feature_names_out``."""
        return self.coef_.shape[1]

    # -- parameters --------------------------------------------------------
    def _check_solver_settings(self):
        """Validate the nested solver objects and the cross-parameter rules."""
        for solver in (self.align, self.adapt):
            if isinstance(solver, BaseEstimator) and not _is_adapter(solver):
                solver._validate_params()  # names the bad setting, before any work
        if self.blend != "auto" and not self.hybrid:
            raise ValueError(
                f"blend={self.blend!r} only applies with hybrid=True (it weighs the query-encoder "
                "block of hybrid input); leave blend='auto' or set hybrid=True."
            )

    def set_params(self, **params):
        """Set parameters, as scikit-learn's ``set_params`` does.

        A nested key ``<solver>__<parameter>`` sets a parameter of a solver
        *object* (``adapt=Softmax(...)``). The default solvers are given by
        name (``"softmax"``, ``"procrustes"``), and a name has no parameters:
        a nested key on one is a ValueError naming the object to pass instead,
        also when raised from ``GridSearchCV``, whose grid can search over
        solver objects: ``{"adapt": [Softmax(alpha=v) for v in values]}``.

        Parameters
        ----------
        **params : dict
            Parameters of this adapter, and ``align__<name>`` / ``adapt__<name>``
            parameters of its solver objects.

        Returns
        -------
        self : ERAAdapter

        Examples
        --------
        >>> from era_sklearn import ERAAdapter
        >>> from era_sklearn.adapt import Softmax
        >>> ERAAdapter(adapt=Softmax()).set_params(adapt__temperature=0.1).adapt
        Softmax(temperature=0.1)
        >>> ERAAdapter().set_params(adapt__temperature=0.1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Cannot set adapt__temperature: adapt is the solver name 'softmax', ...
        """
        _refuse_nested_keys_of_solver_names(self, params)
        return super().set_params(**params)

    def _align_solver(self):
        if isinstance(self.align, str):
            return ALIGN_SOLVERS[self.align]()
        return self.align

    def _adapt_solver(self):
        if isinstance(self.adapt, str):
            return ADAPT_SOLVERS[self.adapt]()
        return self.adapt

    def _align_fingerprint(self):
        """What produced a stage-1 map: the solver and the input layout."""
        solver = self._align_solver()
        params = {k: v for k, v in solver.get_params().items() if k != "device"}
        return json.dumps(
            {"solver": type(solver).__name__, "params": params,
             "normalize_input": self.normalize_input, "hybrid": self.hybrid},
            sort_keys=True, default=str,
        )

    # -- stage 1 -------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit_align(self, X, y, sample_weight=None):
        """Stage 1: learn the map from paired embeddings of the same texts.

        Pairs in which either embedding is all zeros (a static model's vector
        for a text with no known token) are left out, with one warning.

        Parameters
        ----------
        X : array-like of shape (n_texts, d_q)
            The texts embedded by the query encoder (``[query, document]``
            encoder blocks when ``hybrid=True``). Dask arrays are reduced
            block by block (closed-form solvers).
        y : array-like of shape (n_texts, d_d)
            ``Y``: the same texts embedded by the document encoder.
        sample_weight : array-like of shape (n_texts,), default=None

        Returns
        -------
        self : ERAAdapter
        """
        self._check_solver_settings()
        solver = self._check_own_aligner("fit_align")
        if _is_dask(X) or _is_dask(y):
            stats, docs = self._dask_statistics(solver, X, y, sample_weight)
            W, b = solver.solve_statistics(stats)
            self._set_align(W.astype(self._dtype), b, docs, history=None)
            return self
        _require_torch_for(solver)  # after Dask's refusal of torch: installing it would not help
        finite = not self._pass_checks_finite(solver)
        X = self._check_X(X, reset=True, min_samples=2, finite=finite)
        Y = as_target_matrix(y, X.shape[0], dtype=X.dtype, finite=finite)
        self._check_hybrid_layout(X, Y)
        if self.hybrid:
            _check_tail_is_y(X, Y)
        Xq = X[:, : X.shape[1] - Y.shape[1]] if self.hybrid else X
        w = self._alignment_weights(sample_weight, len(X), X.dtype)
        stats = self._statistics(solver, Xq, Y, w)
        docs = self._new_reservoir().add(Y, w)
        if isinstance(solver, TorchAlign):
            keep = _nonzero_rows(Xq, Y)
            Xn, Yn = self._normalize_rows(Xq[keep], "X"), self._normalize_rows(Y[keep], "Y")
            W, b, history = solver.solve(Xn, Yn, stats, random_state=self.random_state,
                                         verbose=self.verbose)
        else:
            W, b = solver.solve_statistics(stats)
            history = None
        self._set_align(W.astype(X.dtype), b, docs.sample(), history)
        return self

    def partial_fit_align(self, X, y, sample_weight=None):
        """Stage 1 on one chunk at a time, for alignment sets past memory.

        Accumulates the sufficient statistics (``X^T X``, ``X^T Y``, column
        sums) and a reservoir sample of the document rows over every chunk
        since the first call; the map is solved once, thread-safely, when a
        fitted attribute (``coef_``, ``transform``, ...) is next read, and then
        equals :meth:`fit_align` on the concatenated data (to float tolerance)
        while memory stays O(d_q * (d_q + d_d)). Closed-form ``align`` only.
        :meth:`fit_align` discards what earlier chunks accumulated; an adapter
        aligned by :meth:`fit_align` or read by :meth:`load` cannot be
        continued (its statistics are not kept) and says so.

        Parameters
        ----------
        X : array-like of shape (n_chunk, d_q)
        y : array-like of shape (n_chunk, d_d)
        sample_weight : array-like of shape (n_chunk,), default=None

        Returns
        -------
        self : ERAAdapter
        """
        self._validate_params()
        self._check_solver_settings()
        solver = self._check_own_aligner("partial_fit_align")
        with _SOLVE_LOCK:
            stream = self.__dict__.get("_align_stream")
            first_call = stream is None
            if first_call and getattr(self, "align_coef_", None) is not None:
                raise ValueError(
                    "This adapter already has a stage-1 map from fit_align or load, whose "
                    "statistics are not kept: partial_fit_align cannot continue it. Stream into "
                    "a new ERAAdapter (or call fit_align on all the data)."
                )
            finite = not self._pass_checks_finite(solver)
            X = self._check_X(X, reset=first_call, min_samples=1, finite=finite)
            Y = as_target_matrix(y, X.shape[0], dtype=X.dtype, finite=finite)
            self._check_hybrid_layout(X, Y)
            if self.hybrid:  # as fit_align and the Dask path do; chunk by chunk here
                _check_tail_is_y(X, Y)
            if not first_call and Y.shape[1] != stream["d_d"]:
                raise ValueError(
                    f"Y has {Y.shape[1]} features, but earlier chunks had {stream['d_d']} "
                    "(the document encoder's width)."
                )
            Xq = X[:, : X.shape[1] - Y.shape[1]] if self.hybrid else X
            w = self._alignment_weights(sample_weight, len(X), X.dtype)
            chunk = self._statistics(solver, Xq, Y, w)
            if first_call:
                stream = {"stats": chunk, "d_d": Y.shape[1], "solver": solver,
                          "docs": self._new_reservoir()}
            else:
                stream["stats"] = stream["stats"] + chunk
            stream["docs"].add(Y, w)
            self._align_stream = stream
            # Solving after every chunk would cost an SVD per chunk.
            self._align_pending = True
        return self

    def _solve_pending_align(self):
        stream = self._align_stream
        W, b = stream["solver"].solve_statistics(stream["stats"])
        self._set_align(W.astype(self._dtype), b, stream["docs"].sample(), None, keep_stream=True)

    def _check_own_aligner(self, method):
        """The stage-1 solver, refusing what ``method`` cannot run."""
        if _is_adapter(self.align):
            raise ValueError(
                f"align is a fitted ERAAdapter whose stage-1 map fit() reuses; {method} has "
                "nothing to do. Set align to a solver (e.g. 'procrustes') to align here."
            )
        solver = self._align_solver()
        if method == "partial_fit_align" and not solver.streams:
            raise ValueError(
                f"partial_fit_align needs a closed-form align (Procrustes or LeastSquares); "
                f"{type(solver).__name__} trains with torch on the data itself."
            )
        return solver

    def _pass_checks_finite(self, solver):
        """Whether the statistics pass sees every input value before anything else does.

        It finds NaN/inf rows from their sums of squares as it reads them and
        raises scikit-learn's error, so a separate finiteness pass over X and
        Y (a full read of both) is skipped. Not for hybrid input (the pass
        reads only the query block) nor torch (which trains on the arrays).
        """
        return solver.streams and not self.hybrid

    def _statistics(self, solver, Xq, Y, w):
        stats = PairStatistics.from_arrays(
            Xq, Y, w, gram=solver.needs_gram, normalize=self.normalize_input
        )
        _warn_dropped(stats.n_dropped, "alignment")
        if stats.weight_sum <= 0:
            raise ValueError(
                "No alignment pair is left: every pair has an all-zero embedding or a zero "
                "sample_weight."
            )
        return stats

    def _dask_statistics(self, solver, X, y, sample_weight):
        from .._stage1.dask import as_row_blocks, dask_pair_statistics

        if not solver.streams:
            raise ValueError(
                f"fit_align on dask arrays needs a closed-form align; {type(solver).__name__} "
                "trains with torch on the data itself: pass numpy arrays."
            )
        X, Y, w = as_row_blocks(X, y, sample_weight)
        # The in-memory checks on a stand-in with the real width and dtype.
        self._check_X(np.ones((2, X.shape[1]), dtype=X.dtype), reset=True, min_samples=2)
        self._check_hybrid_layout(X, Y)
        if self.hybrid:
            _check_tail_is_y_dask(X, Y)
        Xq = X[:, : X.shape[1] - Y.shape[1]] if self.hybrid else X
        stats, docs = dask_pair_statistics(
            Xq, Y, w, gram=solver.needs_gram, normalize=self.normalize_input,
            reservoir=self._new_reservoir(),
        )
        _warn_dropped(stats.n_dropped, "alignment")
        return stats, docs.sample()

    def _new_reservoir(self):
        return Reservoir(ALIGN_DOCS_CAPACITY, self.random_state, normalize=self.normalize_input)

    def _set_align(self, W, b, docs, history, keep_stream=False):
        """Store stage 1 and reset stage 2 to its prior."""
        self._align_pending = False
        if not keep_stream:
            self.__dict__.pop("_align_stream", None)
        self.align_coef_ = W
        self.align_intercept_ = np.asarray(b, dtype=W.dtype)
        self.align_docs_ = None if docs is None else np.asarray(docs, dtype=W.dtype)
        self.align_fingerprint_ = self._align_fingerprint()
        self.align_history_ = history
        self.blend_ = (DEFAULT_BLEND if self.blend == "auto" else float(self.blend)) \
            if self.hybrid else None
        d_in = W.shape[0] + (W.shape[1] if self.hybrid else 0)
        self.coef_ = _prior_map(W, self.blend_, d_in).astype(W.dtype)
        self.intercept_ = self.align_intercept_
        self.module_params_ = None
        self.penalty_ = self.cv_results_ = self.history_ = self.heldout_ndcg_ = None

    # -- stage 2 -------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, *, groups=None, corpus=None):
        """Stage 2: refine the map with (query, relevant document) pairs.

        Starts from the stage-1 map (from :meth:`fit_align`, or from an
        adapter given as ``align``); without one, learns from the labels
        alone. Refitting with the same data gives the same result: stage 2
        always restarts from the stored stage-1 map.

        Parameters
        ----------
        X : array-like of shape (n_pairs, d_q)
            Query embeddings by the query encoder, one row per (query,
            relevant document) pair.
        y : array-like of shape (n_pairs, d_d)
            ``Y``: document-encoder embedding of a relevant document for each
            row. Rows with an all-zero ``X`` or ``Y`` row, or zero
            ``sample_weight``, are left out (zero rows with a warning).
        sample_weight : array-like of shape (n_pairs,), default=None
            Per-row relevance grade (graded qrels), also the fit weight.
        groups : array-like of shape (n_pairs,), default=None
            Query id of each row: rows that share it are one query (one unit
            of weight, one side of a held-out split, never each other's
            negatives). Without it, rows with identical ``X`` are one query.
        corpus : Corpus, ExactIndex, HNSWIndex or array-like, default=None
            The indexed documents, which must contain every target row: the
            candidates that held-out and training queries are ranked against
            (default: ``align_docs_`` plus the distinct targets). Wrap an
            array in :class:`~era_sklearn.Corpus` so that cross-validation
            never slices it; a raw array with as many rows as ``X`` is refused.

        Returns
        -------
        self : ERAAdapter
        """
        self._check_solver_settings()
        _require_torch_for(self._adapt_solver())
        W_align, b_align, docs = self._stage1_for_fit()
        X = self._check_X(X, reset=W_align is None, min_samples=2)
        Y = as_target_matrix(y, X.shape[0], dtype=X.dtype)
        if W_align is not None and Y.shape[1] != W_align.shape[1]:
            raise ValueError(
                f"Y has {Y.shape[1]} features, but the stage-1 map of this ERAAdapter outputs "
                f"{W_align.shape[1]} (the document encoder's width)."
            )
        self._check_hybrid_layout(X, Y)
        problem = self._stage2_problem(X, Y, sample_weight, groups, corpus, W_align, b_align,
                                       docs)
        if W_align is None and problem.n_queries < FEW_LABELS_WITHOUT_ALIGN:
            warnings.warn(
                f"fit without a stage-1 map learns from the {problem.n_queries} labelled queries "
                f"alone: call fit_align(X_docs, Y_docs) first (or pass align=) to start from an "
                f"aligned map. With fewer than {FEW_LABELS_WITHOUT_ALIGN} queries a label-only "
                f"map ranks far worse (SciFact, 32 queries: nDCG@10 0.065 label-only against "
                f"0.569 after fit_align).", UserWarning, stacklevel=2)
        result = self._adapt_solver().solve(problem)
        self._set_adapted(result, W_align, b_align, docs, X.dtype)
        return self

    def _stage1_for_fit(self):
        """(W_align, b_align, align_docs) to start stage 2 from, or Nones (label-only)."""
        if _is_adapter(self.align):
            return self._borrowed_stage1()
        if self.__dict__.get("_align_pending") or getattr(self, "align_coef_", None) is not None:
            W = self.align_coef_
            if self.align_fingerprint_ != self._align_fingerprint():
                raise ValueError(
                    "The stage-1 map was fitted with other settings (align, normalize_input or "
                    f"hybrid) than the current ones:\n  fitted:  {self.align_fingerprint_}\n  "
                    f"current: {self._align_fingerprint()}\nCall fit_align again, or set those "
                    "parameters back."
                )
            return W, self.align_intercept_, self.align_docs_
        return None, None, None

    def _borrowed_stage1(self):
        """The stage-1 map of the adapter given as ``align``."""
        source = getattr(self.align, "estimator", self.align)  # unwrap FrozenEstimator
        if getattr(source, "align_coef_", None) is None:
            raise ValueError(
                "align is an ERAAdapter without a stage-1 map: call its fit_align first. "
                "(clone(), as GridSearchCV runs it, unfits an adapter: wrap a fitted one in "
                "sklearn.frozen.FrozenEstimator to keep it.)"
            )
        for name in ("hybrid", "normalize_input"):
            if getattr(source, name) != getattr(self, name):
                raise ValueError(
                    f"align is an ERAAdapter with {name}={getattr(source, name)!r}, but this "
                    f"adapter has {name}={getattr(self, name)!r}: their inputs differ."
                )
        self.n_features_in_ = source.n_features_in_
        if hasattr(source, "feature_names_in_"):
            self.feature_names_in_ = source.feature_names_in_
        return source.align_coef_, source.align_intercept_, source.align_docs_

    def _stage2_problem(self, X, Y, sample_weight, groups, corpus, W_align, b_align, docs):
        """Validated, normalised labelled rows and their candidate documents."""
        sample_weight, groups = check_sample_weight_and_groups(
            sample_weight, groups, len(X), X.dtype
        )
        keep = _nonzero_rows(X, Y)
        _warn_dropped(int(len(X) - keep.sum()), "labelled")
        keep &= sample_weight > 0  # zero weight: the row does not take part
        if len(np.unique(query_ids(X[keep], None if groups is None else groups[keep]))) < 2 \
                and keep.sum() < 2:
            raise ValueError(
                f"fit needs at least 2 labelled rows with non-zero embeddings and weight; "
                f"{int(keep.sum())} of {len(X)} are left."
            )
        X, Y, sample_weight = X[keep], Y[keep], sample_weight[keep]
        groups = None if groups is None else groups[keep]
        if not self.normalize_input:
            check_squares_representable(X, "X")
        X = self._normalize_X(X, Y.shape[1])
        Y = self._normalize_rows(Y, "Y")
        qids = query_ids(X, groups)
        weights = row_weights(sample_weight, qids, balanced=self.query_weighting == "balanced")
        candidates = corpus_matrix(corpus, len(keep), X.dtype)
        if candidates is None:
            first, _ = unique_rows(Y)
            candidates = Y[first] if docs is None else np.vstack([docs, Y[first]])
        else:
            candidates = self._normalize_rows(candidates, "corpus", warn=False)
            if candidates.shape[1] != Y.shape[1]:
                raise ValueError(
                    f"corpus has {candidates.shape[1]} features but Y has {Y.shape[1]}: the "
                    "corpus must be embedded by the document encoder."
                )
        d_in, d_d = X.shape[1], Y.shape[1]
        intercept = np.zeros(d_d) if b_align is None else np.asarray(b_align, dtype=np.float64)
        return Stage2Problem(
            X=X, Y=Y, weights=weights, grades=sample_weight, qids=qids,
            candidates=candidates, targets=match_targets(Y, candidates),
            bases=_prior_bases(W_align, d_in, d_d, self.hybrid),
            blends=self._blend_candidates(W_align is not None),
            default_blend=DEFAULT_BLEND if self.hybrid else 1.0, intercept=intercept,
            hybrid=self.hybrid, random_state=self.random_state, verbose=self.verbose,
        )

    def _blend_candidates(self, has_prior):
        if not self.hybrid:
            return [1.0]
        if self.blend != "auto":
            return [float(self.blend)]
        return list(AUTO_BLENDS) if has_prior else [0.0]

    def _set_adapted(self, result, W_align, b_align, docs, dtype):
        """Fitted attributes from a solver's result."""
        if W_align is None:  # label-only: no stage 1 at all
            self.align_coef_ = self.align_intercept_ = self.align_docs_ = None
            self.align_fingerprint_ = self.align_history_ = None
            self._align_pending = False
        elif _is_adapter(self.align):
            self.align_coef_, self.align_intercept_, self.align_docs_ = W_align, b_align, docs
            self.align_fingerprint_ = getattr(self.align, "estimator", self.align) \
                .align_fingerprint_
            self.align_history_ = None
        self.coef_ = np.asarray(result.coef, dtype=dtype)
        self.intercept_ = np.asarray(result.intercept, dtype=dtype)
        self.module_params_ = result.module_params
        self.blend_ = float(result.blend) if self.hybrid else None
        self.penalty_ = result.penalty
        self.cv_results_ = result.cv_results
        self.history_ = result.history
        self.heldout_ndcg_ = result.heldout

    # -- transform / score -------------------------------------------------
    def transform(self, X):
        """Map query-encoder embeddings into the document space.

        An all-zero query row maps to a zero row, with a warning (in hybrid
        input, the other block still carries the query).

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)

        Returns
        -------
        X_doc : ndarray of shape (n_queries, n_doc_features)
            Same float dtype as ``X`` (float32 stays float32); rows are unit
            length when ``normalize_output=True``.
        """
        check_is_fitted(self, "coef_")
        if self.hybrid or self.module_params_ is not None:
            # Blocks normalised on their own, or a non-linear branch: no scale commutes.
            X = validate_data(self, X, reset=False, dtype=FLOAT_DTYPES)
            return self._map_exactly(X, zero_rows="warn")
        # NaN and inf in X propagate through the product: the pass finds them in the output
        # rows it returns as suspect, which saves validate_data's pass over X.
        X = validate_data(self, X, reset=False, dtype=FLOAT_DTYPES, ensure_all_finite=False)
        intercept = self.intercept_.astype(X.dtype, copy=False) if np.any(self.intercept_) \
            else None
        out, suspect = map_rows(
            X, self.coef_.astype(X.dtype, copy=False), intercept,
            normalize_input=self.normalize_input, normalize_output=self.normalize_output,
        )
        if suspect.size:
            out[suspect] = self._map_suspect_rows(X, suspect)
        return out

    def _map_suspect_rows(self, X, rows):
        """The rows ``map_rows`` left out, by the definition, with the errors and warnings
        that the whole of X gets: validate_data's for NaN/inf, and the all-zero-row warning
        with the rows' indices in X."""
        A = X[rows]
        if not np.isfinite(A).all():
            # validate_data's own check, on the whole of X: the same message, which names
            # NaN or infinity as scikit-learn does for the first non-finite value.
            assert_all_finite(X, input_name="X", estimator_name=type(self).__name__)
        if self.normalize_input:
            zero = rows[~A.any(axis=1)]
            if zero.size:
                warn_zero_rows("X", zero, stacklevel=3)
        return self._map_exactly(A, zero_rows="ignore")

    def _map_exactly(self, X, zero_rows):
        """The map as defined, on finite X: normalise the input rows (each block on its own
        when hybrid), multiply, add the MLP branch and the intercept, normalise the output."""
        coef = self.coef_.astype(X.dtype, copy=False)
        X = self._normalize_X(X, coef.shape[1], zero_rows=zero_rows)
        out = X @ coef
        if self.module_params_ is not None:
            from .._transform.mlp import numpy_residual

            out += numpy_residual(self.module_params_, X)
        if np.any(self.intercept_):
            out += self.intercept_.astype(X.dtype, copy=False)
        if not np.isfinite(out).all():
            raise ValueError(
                "The mapped queries overflow (X is too large for normalize_input=False); "
                "scale X down or set normalize_input=True."
            )
        if self.normalize_output:
            # out is ours: divide in place. Zero rows (zero queries) stay zero.
            out = l2_normalize(out, name="The mapped queries", zero_rows="ignore", copy=False)
        return out

    def score(self, X, y, sample_weight=None):
        """Mean nDCG@10 of each query's relevant documents among the targets.

        Rows with identical ``X`` form one query whose relevant documents are
        their ``Y`` rows; every query ranks the distinct rows of ``Y`` by
        cosine similarity to its mapped embedding. Higher is better, so
        ``GridSearchCV`` and ``cross_val_score`` need no custom scorer. For a
        real document collection use
        :func:`era_sklearn.metrics.make_retrieval_scorer`.

        Parameters
        ----------
        X : array-like of shape (n_pairs, n_features_in_)
        y : array-like of shape (n_pairs, n_doc_features)
        sample_weight : ignored
            Accepted for API compatibility.

        Returns
        -------
        score : float
        """
        Q = self.transform(X)
        Y = as_target_matrix(y, Q.shape[0], dtype=FLOAT_DTYPES)
        if Y.shape[1] != Q.shape[1]:
            raise ValueError(
                f"Y has {Y.shape[1]} features, but this ERAAdapter maps into {Q.shape[1]}."
            )
        return retrieval_score(Q, Y, k=10, metric="ndcg")

    # -- helpers -----------------------------------------------------------
    @property
    def _dtype(self):
        return self.__dict__.get("_fit_dtype", np.float64)

    def _check_X(self, X, *, reset, min_samples=1, finite=True):
        """Validate X (dtype, shape, width against the fit; finiteness unless ``finite=False``)."""
        X = validate_data(
            self, X, reset=reset, dtype=FLOAT_DTYPES, ensure_min_samples=min_samples,
            ensure_all_finite=finite,
        )
        if reset:
            self._fit_dtype = X.dtype
        return X

    def _check_hybrid_layout(self, X, Y):
        if self.hybrid and X.shape[1] <= Y.shape[1]:
            raise ValueError(
                "hybrid=True needs X = [query-encoder embedding, document-encoder embedding]: "
                f"X has {X.shape[1]} feature(s), not more than the {Y.shape[1]} of the document "
                "space (Y), so its trailing block cannot be the document encoder's."
            )

    def _alignment_weights(self, sample_weight, n_rows, dtype):
        if sample_weight is None:  # None keeps the unweighted (copy-free) statistics
            return None
        return check_sample_weight_and_groups(sample_weight, None, n_rows, dtype)[0]

    def _normalize_rows(self, A, name, warn=True):
        if not self.normalize_input:
            return A
        return l2_normalize(A, name=name, zero_rows="warn" if warn else "ignore")

    def _normalize_X(self, X, d_d, zero_rows="ignore"):
        """L2-normalise X, each encoder's block on its own when hybrid."""
        if not self.normalize_input:
            return X
        if not self.hybrid:
            return l2_normalize(X, name="X", zero_rows=zero_rows)
        head = l2_normalize(X[:, :-d_d], name="X (query-encoder block)", zero_rows=zero_rows)
        tail = l2_normalize(X[:, -d_d:], name="X (document-encoder block)", zero_rows=zero_rows)
        return np.hstack([head, tail])


def _refuse_nested_keys_of_solver_names(est, params):
    """A ``solver__param`` key needs a solver object: a solver name (a str) has no parameters.

    scikit-learn would call ``"softmax".set_params(...)`` and fail with an
    AttributeError that says nothing of the fix.
    """
    current = est.get_params(deep=False)
    for name, registry in (("align", ALIGN_SOLVERS), ("adapt", ADAPT_SOLVERS)):
        keys = [key for key in params if key.startswith(f"{name}__")]
        value = params.get(name, current[name])  # a top-level value is set before nested ones
        if keys and isinstance(value, str):
            cls = registry.get(value)
            solver = cls.__name__ if cls is not None else \
                f"<{' or '.join(c.__name__ for c in registry.values())}>"
            subs = [key.split("__", 1)[1] for key in keys]
            raise ValueError(
                f"Cannot set {', '.join(keys)}: {name} is the solver name {value!r}, which has "
                "no parameters of its own. Pass the solver object with the setting instead: "
                f"{name}={solver}({', '.join(f'{sub}=...' for sub in subs)}), from "
                f"era_sklearn.{name}; in a GridSearchCV grid, search over the objects: "
                f"{{{name!r}: [{solver}({subs[0]}=v) for v in values]}}."
            )


def _require_torch_for(solver):
    """Fail before any work when the solver needs torch and it is not installed."""
    if getattr(solver, "needs_torch", False):
        require_torch(f"The {type(solver).__name__} solver")


def _is_adapter(obj):
    """A (possibly frozen) ERAAdapter given as ``align``."""
    return isinstance(getattr(obj, "estimator", obj), ERAAdapter)


def _is_dask(A):
    """A dask array, recognised without importing dask."""
    return type(A).__module__.startswith("dask.")


def _nonzero_rows(X, Y):
    """Rows where neither embedding is all zeros."""
    return (np.abs(X).max(axis=1) > 0) & (np.abs(Y).max(axis=1) > 0) if len(X) else \
        np.zeros(0, dtype=bool)


def _warn_dropped(n_dropped, what):
    if n_dropped:
        warnings.warn(
            f"{n_dropped} {what} pair(s) with an all-zero embedding were left out (a static "
            "model gives a zero vector to a text with no known token).",
            UserWarning,
            stacklevel=3,
        )


def _prior_bases(W_align, d_in, d_d, hybrid):
    """Maps whose combinations are the candidate priors of stage 2.

    Plain: the stage-1 map (or nothing, for label-only). Hybrid: the stage-1
    map on the query block and the identity on the document block, each
    padded with zeros to the full input width.
    """
    if not hybrid:
        return [] if W_align is None else [np.asarray(W_align, dtype=np.float64)]
    identity = np.zeros((d_in, d_d))
    identity[d_in - d_d:] = np.eye(d_d)
    if W_align is None:
        return [identity]
    aligned = np.zeros((d_in, d_d))
    aligned[: d_in - d_d] = W_align
    return [aligned, identity]


def _prior_map(W_align, blend, d_in):
    """The stage-2 prior for one blend (the stage-1 map itself when not hybrid)."""
    if blend is None:
        return W_align
    bases = _prior_bases(W_align, d_in, W_align.shape[1], True)
    return blend * bases[0] + (1.0 - blend) * bases[1]


def _check_tail_is_y(X, Y):
    """In hybrid alignment data, X's last block must be Y itself (same texts, same encoder)."""
    tail = l2_normalize(X[:, -Y.shape[1]:], zero_rows="ignore")
    _require_tail_is_y(np.einsum("ij,ij->i", tail, l2_normalize(Y, zero_rows="ignore")),
                       Y.shape[1])


def _check_tail_is_y_dask(X, Y):
    """The same check on Dask arrays: one reduction to per-row cosines."""
    import dask.array as da

    tail = X[:, -Y.shape[1]:]
    num = da.einsum("ij,ij->i", tail, Y)
    den = da.sqrt(da.einsum("ij,ij->i", tail, tail) * da.einsum("ij,ij->i", Y, Y))
    num, den = da.compute(num, den)
    _require_tail_is_y(np.divide(num, den, out=np.zeros_like(num), where=den > 0), Y.shape[1])


def _require_tail_is_y(cosines, width, min_cosine=0.99):
    valid = cosines != 0  # all-zero rows (left out of the fit) say nothing about the layout
    cosine = float(np.mean(cosines[valid])) if valid.any() else 1.0
    if cosine < min_cosine:
        raise ValueError(
            f"hybrid=True: the last {width} columns of X should be the document encoder's "
            f"embedding of the same texts as y, but their mean cosine with y is {cosine:.3f} "
            f"(< {min_cosine}). Build X as np.hstack([query_encoder(texts), "
            "document_encoder(texts)])."
        )
