"""ERAAdapter: validation, orchestration and fitted state of the two-stage adapter.

Each stage's work lives in this subpackage's small modules, which return values, and the
solvers in :mod:`era_sklearn.align` / :mod:`era_sklearn.adapt`; only this module assigns
fitted attributes."""

from numbers import Real
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import validate_data

from .._utils.validation import FLOAT_DTYPES, as_target_matrix
from ..adapt import ADAPT_SOLVERS
from ..align import ALIGN_SOLVERS
from . import stage1
from .mapping import MappingMixin
from .params import SolverParamsMixin, resolve_adapt
from .persistence import _PersistenceMixin
from .stage2_problem import build_problem, stage1_blend, stage1_prior, warn_if_few_labels
from .stream import AlignStream


class ERAAdapter(_PersistenceMixin, SolverParamsMixin, MappingMixin, ClassNamePrefixFeaturesOutMixin,
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
        Stage 1: ``"procrustes"``, ``"lstsq"``, ``"torch"``, or a solver object
        carrying its own settings (:mod:`era_sklearn.align`, or any object
        with ``solve(problem)``: see :class:`~era_sklearn.align.AlignSolver`).
        A fitted ``ERAAdapter`` (or a :class:`sklearn.frozen.FrozenEstimator`
        of one, which survives ``clone`` in ``GridSearchCV``) lends its
        stage-1 map instead: :meth:`fit` starts from it.
    adapt : str or solver object, default="softmax"
        Stage 2: ``"softmax"``, ``"ridge"``, ``"contrastive"``, or a solver
        object (:mod:`era_sklearn.adapt`, or any object with
        ``solve(problem)``: see :class:`~era_sklearn.adapt.AdaptSolver`).
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
        # Open protocols: a solver is any object with solve(problem); names stay accepted.
        "align": [StrOptions(set(ALIGN_SOLVERS)), HasMethods(["solve"]),
                  HasMethods(["fit_align", "transform"])],
        "adapt": [StrOptions(set(ADAPT_SOLVERS)), HasMethods(["solve"])],
        "hybrid": ["boolean"],
        "blend": [Interval(Real, 0, 1, closed="both"), StrOptions({"auto"})],
        "normalize_input": ["boolean"],
        "normalize_output": ["boolean"],
        "query_weighting": [StrOptions({"balanced", "rows"})],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    def __init__(self, align="procrustes", adapt="softmax", *, hybrid=False, blend="auto",
                 normalize_input=True, normalize_output=True, query_weighting="balanced",
                 verbose=0, random_state=None):
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

    def _align_fingerprint(self):  # of the current settings
        return stage1.align_fingerprint(self.align, self.normalize_input, self.hybrid)

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
            block by block (solvers that work from the statistics alone).
        y : array-like of shape (n_texts, d_d)
            ``Y``: the same texts embedded by the document encoder.
        sample_weight : array-like of shape (n_texts,), default=None

        Returns
        -------
        self : ERAAdapter
        """
        self._check_solver_settings()
        solver = stage1.own_aligner(self.align, "fit_align", _is_adapter(self.align))
        settings = {"hybrid": self.hybrid, "normalize": self.normalize_input,
                    "random_state": self.random_state, "verbose": self.verbose}
        if stage1.is_dask(X) or stage1.is_dask(y):
            X, Y, w = stage1.dask_blocks(solver, X, y, sample_weight)
            # The in-memory checks on a stand-in with the real width and dtype.
            self._check_X(np.ones((2, X.shape[1]), dtype=X.dtype), reset=True, min_samples=2)
            problem, docs = stage1.dask_problem(solver, X, Y, w, **settings)
        else:
            stage1.require_torch_for(solver)  # after Dask's refusal: installing would not help
            X, Y = self._check_pairs(X, y, solver, reset=True, min_samples=2)
            problem, docs = stage1.in_memory_problem(solver, X, Y, sample_weight, **settings)
        W, b, history = stage1.solve(solver, problem, self._dtype)
        self._set_align(W, b, docs, history)
        return self

    def partial_fit_align(self, X, y, sample_weight=None):
        """Stage 1 on one chunk at a time, for alignment sets past memory.

        Accumulates the sufficient statistics and a sample of the document
        rows over every chunk since the first call, and solves the map at the
        end of each chunk (one d x d solve): ``coef_`` then equals
        :meth:`fit_align` on the chunks so far (to float tolerance), in
        O(d_q * (d_q + d_d)) memory. Not for solvers with ``requires_rows``.
        The first chunk pins the stream's settings (``align`` and its
        parameters, ``normalize_input``, ``hybrid``, ``blend``): a later chunk
        with one changed is a ValueError naming it. :meth:`fit_align` discards
        the chunks; a map from :meth:`fit_align` or :meth:`load` has no
        statistics to continue, and a chunk says so.

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
        solver = stage1.own_aligner(self.align, "partial_fit_align", _is_adapter(self.align))
        stream = self.__dict__.get("_align_stream")
        pinned = {"normalize_input": self.normalize_input, "hybrid": self.hybrid,
                  "blend": self.blend}
        AlignStream.check_continues(stream, solver, getattr(self, "align_coef_", None), **pinned)
        X, Y = self._check_pairs(X, y, solver, reset=stream is None, min_samples=1)
        if stream is None:
            stream = AlignStream.start(solver, **pinned, d_d=Y.shape[1],
                                       random_state=self.random_state)
        W, b, docs, history = stream.feed(X, Y, sample_weight, random_state=self.random_state,
                                          verbose=self.verbose, dtype=self._dtype)
        self._set_align(W, b, docs, history, stream=stream)
        return self

    def _check_pairs(self, X, y, solver, *, reset, min_samples):
        finite = stage1.needs_finite_check(solver, self.hybrid)
        X = self._check_X(X, reset=reset, min_samples=min_samples, finite=finite)
        return X, as_target_matrix(y, X.shape[0], dtype=X.dtype, finite=finite)

    def _set_align(self, W, b, docs, history, stream=None):
        """Store stage 1 and reset stage 2 to its prior; a stream's pinned settings label it."""
        self.__dict__.pop("_align_stream", None)
        if stream is not None:
            self._align_stream = stream
        settings = stream or self  # both have blend and hybrid
        self.align_coef_ = W = np.asarray(W, dtype=self._dtype)
        self.align_intercept_ = np.asarray(b, dtype=W.dtype)
        self.align_docs_ = None if docs is None else np.asarray(docs, dtype=W.dtype)
        self.align_fingerprint_ = stream.fingerprint if stream else self._align_fingerprint()
        self.align_history_ = history
        self.blend_ = stage1_blend(settings.blend, settings.hybrid)
        self.coef_ = stage1_prior(W, self.blend_, settings.hybrid)
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
        solver = resolve_adapt(self.adapt)
        stage1.require_torch_for(solver)
        start = self._stage1_for_fit()  # (W, b, docs, fingerprint, history), Nones if none
        X = self._check_X(X, reset=start[0] is None, min_samples=2)
        Y = as_target_matrix(y, X.shape[0], dtype=X.dtype)
        problem = build_problem(
            X, Y, sample_weight, groups, corpus, start[:3], hybrid=self.hybrid, blend=self.blend,
            normalize_input=self.normalize_input, query_weighting=self.query_weighting,
            random_state=self.random_state, verbose=self.verbose,
        )
        if start[0] is None:
            warn_if_few_labels(problem.n_queries)
        result = solver.solve(problem)
        (self.align_coef_, self.align_intercept_, self.align_docs_, self.align_fingerprint_,
         self.align_history_) = start  # the stage-1 map stage 2 started from (or Nones)
        self.coef_ = np.asarray(result.coef, dtype=X.dtype)
        self.intercept_ = np.asarray(result.intercept, dtype=X.dtype)
        self.module_params_, self.penalty_ = result.module_params, result.penalty
        self.blend_ = float(result.blend) if self.hybrid else None
        self.cv_results_, self.history_ = result.cv_results, result.history
        self.heldout_ndcg_ = result.heldout
        return self

    def _stage1_for_fit(self):
        """The stage-1 state to start stage 2 from: own, lent by ``align``, or Nones."""
        if _is_adapter(self.align):
            source = _unwrap(self.align)
            lent = stage1.lent_stage1(source, hybrid=self.hybrid, normalize_input=self.normalize_input)
            self.n_features_in_ = source.n_features_in_
            if hasattr(source, "feature_names_in_"):
                self.feature_names_in_ = source.feature_names_in_
            return lent
        if getattr(self, "align_coef_", None) is None:
            return None, None, None, None, None
        stage1.check_fingerprint(self.align_fingerprint_, self._align_fingerprint())
        return (self.align_coef_, self.align_intercept_, self.align_docs_,
                self.align_fingerprint_, self.align_history_)

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


def _unwrap(align):
    """The adapter given as ``align``, out of its FrozenEstimator if any."""
    return getattr(align, "estimator", align)


def _is_adapter(obj):
    """A (possibly frozen) ERAAdapter given as ``align``."""
    return isinstance(_unwrap(obj), ERAAdapter)
