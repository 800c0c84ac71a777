"""ERAAdapter: the align-then-train query adapter as one scikit-learn transformer."""

from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _torch_params
from ._closed_form import procrustes, ridge
from ._queries import QueryPairs, query_ids, row_weights, unique_rows
from ._selection import relative_alpha_grid, select_ridge
from ._statistics import PairStatistics
from ._validation import (
    FLOAT_DTYPES,
    as_float_matrix,
    as_target_matrix,
    check_sample_weight_and_groups,
    l2_normalize,
    row_norms,
)
from .metrics import retrieval_score

CLOSED_FORM_ALIGN = ("procrustes", "lstsq")
TORCH_ALIGN = ("cosine", "mse", "smooth_l1")
#: Blend weight of the query-encoder part used by ``hybrid=True`` when no
#: labels exist to choose one (``fit_align`` only). Chosen on the *training*
#: queries of the shared SciFact and NFCorpus sets: 0.3 was the largest blend
#: not below the cheap encoder alone with both the MiniLM and the m2v index.
DEFAULT_BLEND = 0.3
#: Fewest distinct labelled queries for held-out selection of ``alpha``.
MIN_QUERIES_FOR_SELECTION = 4


class _SolvedOnRead:
    """A fitted map attribute that first solves a pending ``partial_fit_align``."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        if obj.__dict__.get("_align_pending"):
            obj._solve_pending_align()
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj, value):
        obj.__dict__[self.name] = value


class ERAAdapter(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Query-side retrieval adapter learned in two stages: align, then train.

    Maps embeddings from a strong *query* encoder (``d_q`` columns) into the
    space of the cheap *document* encoder that built an existing index
    (``d_d`` columns), so the index never needs re-embedding.

    1. :meth:`fit_align` (self-supervised): the same texts embedded by both
       encoders; learns a map from query space to document space.
    2. :meth:`fit` (supervised): (query, relevant document) pairs; refines the
       map starting from stage 1 (or from nothing: the *label-only* baseline).

    Read more in the :ref:`User Guide <user_guide>`.

    Parameters
    ----------
    align : {"procrustes", "lstsq", "cosine", "mse", "smooth_l1"}, default="procrustes"
        Stage-1 solver. ``"procrustes"``: (semi-)orthogonal map, closed form.
        ``"lstsq"``: ridge least squares with ``align_alpha``, closed form.
        ``"cosine"``, ``"mse"``, ``"smooth_l1"``: a torch linear layer with
        bias trained with that loss (ERA's stage 1), started from Procrustes;
        its settings are the ``align__*`` parameters.
    adapt : {"ridge", "contrastive"}, default="ridge"
        Stage-2 solver. ``"ridge"``: closed-form
        ``argmin ||X W - Y||^2 + alpha ||W - W_align||^2``.
        ``"contrastive"``: torch training with InfoNCE and hard negatives
        (ERA's stage 2), started from the stage-1 map as in the paper (or,
        with ``adapt__warm_start="ridge"``, from the closed-form stage-2
        map), which also mines the hard negatives. The closed-form
        ``"ridge"`` map is fitted too and kept instead when it ranks the
        validation queries better; settings ``adapt__*``.
    alpha : float or "auto", default="auto"
        Stage-2 ridge strength toward the stage-1 map (``inf`` keeps stage 1
        unchanged). ``"auto"`` picks it
        (and ``blend`` when ``hybrid=True``) by nDCG@10 of held-out labelled
        queries, always including ``alpha = inf`` (keep stage 1), so stage 2
        cannot do worse than stage 1 on the held-out queries.
    alphas : array-like of float or None, default=None
        Absolute candidates for ``alpha="auto"``. ``None`` uses 11 factors
        from 10**-2.5 to 10**2.5 times the mean eigenvalue of ``X^T W X``.
    align_alpha : float, default=0.1
        Ridge strength of ``align="lstsq"``.
    center : bool, default=False
        Subtract column means before the stage-1 fit (the map then gets an
        intercept).
    scale : bool, default=False
        Fit a global scale with Procrustes (irrelevant to rankings when the
        output is normalised).
    normalize_input : bool, default=True
        L2-normalise input rows (each encoder's block separately when
        ``hybrid=True``) before fitting and transforming, as sentence
        embedding models are compared by cosine.
    normalize_output : bool, default=True
        L2-normalise the output rows (as ERA does), so inner product search
        on a normalised index equals cosine search.
    hybrid : bool, default=False
        ``X`` carries both embeddings of each text: ``[query_encoder(t),
        document_encoder(t)]``; the last ``d_d`` columns are the document
        encoder's own embedding. The cheap part's prior is the identity.
    blend : float in [0, 1] or "auto", default="auto"
        With ``hybrid=True``: weight ``b`` of the aligned query-encoder part in
        the prior ``[b * W_align ; (1 - b) * I]``. ``"auto"`` chooses it from
        held-out queries in :meth:`fit` and uses ``DEFAULT_BLEND`` (0.3) after
        :meth:`fit_align` alone.
    query_weighting : {"balanced", "rows"}, default="balanced"
        ``"balanced"``: every labelled query weighs 1 in stage 2 and its rows
        share that weight in proportion to ``sample_weight``. ``"rows"``: each
        row weighs its ``sample_weight``.
    n_folds : int, default=5
        Number of query folds for ``alpha="auto"`` (fewer when there are
        fewer labelled queries; below 4 queries nothing is held out and the
        most conservative candidate is used).
    init : ERAAdapter, FrozenEstimator or None, default=None
        A fitted adapter whose stage-1 map is used as the prior when this
        estimator has not run :meth:`fit_align` itself. Wrap it in
        :class:`sklearn.frozen.FrozenEstimator` to tune stage 2 with
        ``GridSearchCV`` over an alignment computed once.
    model : {"linear", "mlp"}, default="linear"
        Torch model for ``adapt="contrastive"``: ERA's linear layer, or that
        layer plus a residual MLP branch that starts at zero
        (``module__hidden_size``, ``module__n_layers``, ``module__dropout``).
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        Torch device for training; the fitted weights are always numpy.
    verbose : int, default=0
        Progress bars for torch training when > 0.
    random_state : int, RandomState instance or None, default=None
        Seeds held-out folds, negative sampling and torch training.
    **kwargs
        Prefixed torch settings, skorch style, each tunable by
        ``GridSearchCV``: ``module__*``, ``align__*`` (stage-1 training) and
        ``adapt__*`` (stage-2 training). See ``era_sklearn._torch_params``.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features_in_, n_doc_features)
        The linear part of the fitted map (stage 1 alone after
        :meth:`fit_align`).
    intercept_ : ndarray of shape (n_doc_features,)
    align_coef_ : ndarray or None
        The stage-1 map, kept so that refitting stage 2 never compounds.
    align_intercept_ : ndarray or None
    alpha_ : float or None
        Stage-2 strength used (``inf`` when held-out queries preferred stage 1).
    blend_ : float or None
        Hybrid blend used.
    cv_results_ : dict or None
        Held-out scores of every candidate when ``alpha="auto"``.
    module_params_ : dict of ndarray or None
        Weights of the torch MLP branch (``model="mlp"``), as numpy arrays.
    history_ : dict or None
        Torch stage-2 training history: ``epochs`` (one dict per epoch with
        ``epoch``, ``train_loss``, ``valid_loss``, ``lr``, ``seconds``; epoch 0
        is the starting map), ``best_epoch``, ``best_valid_loss``,
        ``stop_reason`` and ``restored_best``.
    align_history_ : dict or None
        Torch stage-1 training history, same layout.
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
        "align": [StrOptions(set(CLOSED_FORM_ALIGN + TORCH_ALIGN))],
        "adapt": [StrOptions({"ridge", "contrastive"})],
        "alpha": [Interval(Real, 0, None, closed="both"), StrOptions({"auto"})],
        "alphas": ["array-like", None],
        "align_alpha": [Interval(Real, 0, None, closed="left")],
        "center": ["boolean"],
        "scale": ["boolean"],
        "normalize_input": ["boolean"],
        "normalize_output": ["boolean"],
        "hybrid": ["boolean"],
        "blend": [Interval(Real, 0, 1, closed="both"), StrOptions({"auto"})],
        "query_weighting": [StrOptions({"balanced", "rows"})],
        "n_folds": [Interval(Integral, 2, None, closed="left")],
        "init": "no_validation",
        "model": [StrOptions({"linear", "mlp"})],
        "device": [str],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    # The map is solved lazily after partial_fit_align (one SVD, not one per chunk).
    coef_ = _SolvedOnRead()
    intercept_ = _SolvedOnRead()
    align_coef_ = _SolvedOnRead()
    align_intercept_ = _SolvedOnRead()

    def __init__(
        self,
        align="procrustes",
        adapt="ridge",
        *,
        alpha="auto",
        alphas=None,
        align_alpha=0.1,
        center=False,
        scale=False,
        normalize_input=True,
        normalize_output=True,
        hybrid=False,
        blend="auto",
        query_weighting="balanced",
        n_folds=5,
        init=None,
        model="linear",
        device="auto",
        verbose=0,
        random_state=None,
        **kwargs,
    ):
        self.align = align
        self.adapt = adapt
        self.alpha = alpha
        self.alphas = alphas
        self.align_alpha = align_alpha
        self.center = center
        self.scale = scale
        self.normalize_input = normalize_input
        self.normalize_output = normalize_output
        self.hybrid = hybrid
        self.blend = blend
        self.query_weighting = query_weighting
        self.n_folds = n_folds
        self.init = init
        self.model = model
        self.device = device
        self.verbose = verbose
        self.random_state = random_state
        # Stored verbatim; names are checked in fit (sklearn: no validation in __init__).
        for name, value in kwargs.items():
            setattr(self, name, value)

    # -- parameters: skorch-style prefixed torch settings ------------------
    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        params.update(_torch_params.prefixed(vars(self)))
        return params

    def set_params(self, **params):
        prefixed = _torch_params.prefixed(params)
        _torch_params.check_names(prefixed)
        for name, value in prefixed.items():
            setattr(self, name, value)
        init_names = set(self._get_param_names())
        # Unknown plain names are stored like __init__'s **kwargs and rejected
        # by fit; nested "init__..." names go through scikit-learn's logic.
        for name in [k for k in params if k not in prefixed and "__" not in k]:
            if name not in init_names:
                setattr(self, name, params.pop(name))
        rest = {k: v for k, v in params.items() if k not in prefixed}
        return super().set_params(**rest) if rest else self

    def _validate_params(self):
        super()._validate_params()
        init_names = set(self._get_param_names())
        extra = {
            k: v for k, v in vars(self).items()
            if k not in init_names and not k.endswith("_") and not k.startswith("_")
        }
        _torch_params.check_names(extra)

    def _torch_settings(self, group):
        """Defaults of a prefix group updated by what the user set."""
        return _torch_params.settings(group, vars(self))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # -- stage 1 -------------------------------------------------------------
    def fit_align(self, X, y, sample_weight=None):
        """Stage 1: learn the map from paired embeddings of the same texts.

        Parameters
        ----------
        X : array-like of shape (n_texts, d_q)
            The texts embedded by the query encoder (``[query, document]``
            encoder blocks when ``hybrid=True``).
        y : array-like of shape (n_texts, d_d)
            ``Y``: the same texts embedded by the document encoder.
        sample_weight : array-like of shape (n_texts,), default=None

        Returns
        -------
        self : ERAAdapter
        """
        self._validate_params()
        if _is_dask(X) or _is_dask(y):
            return self._fit_align_dask(X, y, sample_weight)
        X = self._check_X(X, reset=True, min_samples=2)
        Y = self._check_Y(y, X)  # a refit starts over: no width to match
        X = self._normalize_X(X, Y.shape[1])
        if self.hybrid:
            _check_tail_is_y(X, Y)
        Xq, sample_weight, stats = self._align_statistics(X, Y, sample_weight)
        W, b = self._solve_align(stats, Xq, Y, sample_weight)
        self._set_align(None, Y.shape[1], W, b)  # a later partial_fit_align starts afresh
        return self

    def _fit_align_dask(self, X, y, sample_weight):
        """``fit_align`` on Dask arrays: the same statistics and solve, block by block."""
        from ._dask import as_row_blocks, dask_pair_statistics

        if self.align not in CLOSED_FORM_ALIGN:
            raise ValueError(
                f"fit_align on dask arrays needs a closed-form align ('procrustes' or 'lstsq'); "
                f"align={self.align!r} trains with torch on the data itself: pass numpy arrays."
            )
        X, Y, w = as_row_blocks(X, y, sample_weight)
        d_d = Y.shape[1]
        # The estimator's own checks on a stand-in with the real width and dtype.
        proxy = self._check_X(np.ones((2, X.shape[1]), dtype=X.dtype), reset=True, min_samples=2)
        self._check_Y(np.ones((2, d_d), dtype=proxy.dtype), proxy)
        Xq = X[:, : X.shape[1] - d_d] if self.hybrid else X
        stats, _ = dask_pair_statistics(
            Xq, Y, w, gram=self._needs_gram(), normalize=self.normalize_input
        )
        W, b = self._solve_align(stats)
        self._set_align(None, d_d, W, b)  # as fit_align: a later partial_fit_align starts afresh
        return self

    def _needs_gram(self):
        # Procrustes needs only X^T Y: skipping the Gram matrix halves the GEMMs.
        return self.align == "lstsq" or self.scale

    def partial_fit_align(self, X, y, sample_weight=None):
        """Stage 1 on one chunk at a time, for alignment sets past memory.

        Accumulates the sufficient statistics (``X^T X``, ``X^T Y``, column
        sums) of every chunk seen since the first call; the map is solved
        once, when a fitted attribute (``coef_``, ``transform``, ...) is next
        read, and then equals :meth:`fit_align` on the concatenated data (to
        float tolerance) while memory stays
        O(d_q * (d_q + d_d)). Closed-form ``align`` only. :meth:`fit_align`
        discards what earlier chunks accumulated.

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
        if self.align not in CLOSED_FORM_ALIGN:
            raise ValueError(
                f"partial_fit_align needs a closed-form align ('procrustes' or 'lstsq'); "
                f"align={self.align!r} trains with torch on the data itself."
            )
        first_call = getattr(self, "align_stats_", None) is None
        X = self._check_X(X, reset=first_call, min_samples=1)
        Y = self._check_Y(y, X, expected_width=None if first_call else self._n_features_out)
        X = self._normalize_X(X, Y.shape[1])
        _, _, chunk = self._align_statistics(X, Y, sample_weight)
        self.align_stats_ = chunk if first_call else self.align_stats_ + chunk
        self._n_features_out = Y.shape[1]
        # Solving after every chunk would cost an SVD per chunk; the map is
        # solved once, when a fitted attribute is next read.
        self._align_pending = True
        return self

    def _solve_pending_align(self):
        self._align_pending = False
        self._set_align(self.align_stats_, self._n_features_out)

    def _set_align(self, stats, d_d, W=None, b=None):
        """Store stage 1 (solving it from ``stats`` unless given) and reset stage 2."""
        if W is None:
            W, b = self._solve_align(stats)
        self._align_pending = False
        self.align_stats_ = stats
        self.align_coef_, self.align_intercept_ = W, b
        self._n_features_out = d_d
        blend = DEFAULT_BLEND if self.blend == "auto" else self.blend
        self._set_map(self._prior(W, blend), b)
        self.alpha_, self.cv_results_ = None, None
        self.blend_ = self._blend_value(blend)
        self.history_ = None

    def _align_statistics(self, X, Y, sample_weight):
        """(query block of X, validated weights, stage-1 statistics) of normalised data."""
        Xq = X[:, : X.shape[1] - Y.shape[1]] if self.hybrid else X
        if sample_weight is not None:  # None keeps the unweighted (copy-free) statistics
            sample_weight, _ = check_sample_weight_and_groups(
                sample_weight, None, len(X), X.dtype
            )
        stats = PairStatistics.from_arrays(
            Xq, Y, sample_weight, gram=self._needs_gram(), normalize=self.normalize_input
        )
        return Xq, sample_weight, stats

    def _solve_align(self, stats, Xq=None, Y=None, sample_weight=None):
        """Closed-form (or torch-refined) stage 1 from statistics."""
        centered = stats.centered() if self.center else stats
        if self.align == "lstsq":
            W = ridge(centered, self.align_alpha)
        else:
            W, factor = procrustes(centered, scale=self.scale)
            W = W * factor
        b = stats.y_mean - stats.x_mean @ W if self.center else np.zeros(W.shape[1])
        self.align_history_ = None
        if self.align in TORCH_ALIGN:
            if Xq is None:
                raise ValueError(
                    f"align={self.align!r} trains with torch and needs the data itself; "
                    "streaming statistics only support 'procrustes' and 'lstsq'."
                )
            W, b, self.align_history_ = self._train_align(Xq, Y, W, b)
        return W.astype(self._fit_dtype), np.asarray(b, dtype=self._fit_dtype)

    def _train_align(self, X, Y, W, b):
        from ._torch_fit import train_align

        return train_align(self, X, Y, W, b)

    # -- stage 2 -------------------------------------------------------------
    def fit(self, X, y, sample_weight=None, *, groups=None, corpus=None,
            align_X=None, align_Y=None):
        """Stage 2: refine the map with (query, relevant document) pairs.

        Starts from the stage-1 map when there is one (from :meth:`fit_align`,
        from ``align_X``/``align_Y``, or from ``init``); otherwise learns from
        the labels alone. Refitting with the same data gives the same result:
        stage 2 always restarts from the stored stage-1 map.

        Parameters
        ----------
        X : array-like of shape (n_pairs, d_q)
            Query embeddings by the query encoder, one row per (query,
            relevant document) pair.
        y : array-like of shape (n_pairs, d_d)
            ``Y``: document-encoder embedding of a relevant document for each
            row.
        sample_weight : array-like of shape (n_pairs,), default=None
            Per-row weight, e.g. graded relevance. Also used as the grade when
            scoring held-out queries.
        groups : array-like of shape (n_pairs,), default=None
            Query id of each row: rows that share it are one query (one unit
            of weight, one side of a held-out split, never each other's
            negatives). Without it, rows with identical ``X`` are one query.
        corpus : array-like of shape (n_docs, d_d), default=None
            The indexed documents. Used as the candidates when scoring
            held-out queries (default: the distinct rows of ``Y``) and as the
            pool of hard negatives for ``adapt="contrastive"``.
        align_X, align_Y : array-like of shape (n_texts, d_q) and (n_texts, d_d)
            Alignment data: when given, :meth:`fit_align` runs on them first.
            Routing them as fit parameters lets ``GridSearchCV`` tune stage-1
            parameters too.

        Returns
        -------
        self : ERAAdapter
        """
        self._validate_params()
        if align_X is not None or align_Y is not None:
            if align_X is None or align_Y is None:
                raise ValueError("align_X and align_Y must be given together.")
            self.fit_align(align_X, align_Y)
        prior = self._stage1_prior()
        if prior is None:
            self.align_coef_ = self.align_intercept_ = self.align_history_ = None
        X = self._check_X(X, reset=prior is None, min_samples=2)
        Y = self._check_Y(y, X, expected_width=None if prior is None else prior[0].shape[1])
        X = self._normalize_X(X, Y.shape[1])
        sample_weight, groups = check_sample_weight_and_groups(
            sample_weight, groups, len(X), X.dtype
        )
        qids = query_ids(X, groups)
        weights = row_weights(sample_weight, qids, balanced=self.query_weighting == "balanced")
        if corpus is not None:
            corpus = self._check_corpus(corpus, Y)
        W_align, b = prior if prior is not None else (None, np.zeros(Y.shape[1]))
        self._n_features_out = Y.shape[1]
        W, self.alpha_, self.blend_, self.cv_results_, ridge_prior = self._fit_ridge(
            X, Y, weights, qids, sample_weight, corpus, W_align, b
        )
        self._set_map(W.astype(X.dtype), b)
        self.history_ = None
        if self.adapt == "contrastive":
            pairs = (X, Y, weights, qids)
            self._fit_contrastive(pairs, corpus, W_align, b, ridge_prior)
        return self

    def _fit_contrastive(self, pairs, corpus, W_align, b, ridge_prior):
        """Torch stage 2 from the stage-1 (or closed-form) map; see ``_torch_fit``."""
        from ._torch_fit import train_adapt

        X, Y, weights, qids = pairs
        warm_start = self._torch_settings("adapt")["warm_start"]
        if warm_start not in ("ridge", "align"):
            raise ValueError(f"adapt__warm_start must be 'ridge' or 'align', got {warm_start!r}.")
        start = self.coef_
        if W_align is not None and warm_start == "align":
            # ERA's paper: training starts from (and mines with) the stage-1 map.
            blend = DEFAULT_BLEND if self.blend == "auto" else self.blend
            start = self._prior(W_align, blend).astype(X.dtype)

        def ridge_without(rows_out):
            """The chosen closed-form map, refitted without some rows."""
            keep = np.setdiff1d(np.arange(len(X)), rows_out)
            stats = QueryPairs(X[keep], Y[keep], weights[keep], qids[keep]).statistics(
                intercept=b
            )
            return ridge(stats, self.alpha_, ridge_prior).astype(X.dtype)

        train_adapt(self, X, Y, qids, corpus, start=start, ridge_without=ridge_without)

    def _stage1_prior(self):
        """(W_align, b_align) from this estimator's fit_align or from ``init``."""
        if getattr(self, "align_coef_", None) is not None:
            return self.align_coef_, self.align_intercept_
        if self.init is None:
            return None
        source = getattr(self.init, "estimator", self.init)  # unwrap FrozenEstimator
        check_is_fitted(source, "align_coef_")
        if source.align_coef_ is None:
            raise ValueError("init has no stage-1 map: call its fit_align first.")
        # Inherit the input contract of the estimator whose map we start from.
        self.n_features_in_ = source.n_features_in_
        if hasattr(source, "feature_names_in_"):
            self.feature_names_in_ = source.feature_names_in_
        self._fit_dtype = source.align_coef_.dtype
        return source.align_coef_, source.align_intercept_

    def _fit_ridge(self, X, Y, weights, qids, grades, corpus, W_align, b):
        """Closed-form stage 2; returns (W, alpha, blend, cv_results, prior used)."""
        pairs = QueryPairs(X, Y, weights, qids)
        stats = pairs.statistics(intercept=b)
        has_prior = W_align is not None
        alphas = self._alpha_candidates(stats, has_prior)
        blends = self._blend_candidates(has_prior)
        bases = self._prior_bases(W_align, X.shape[1], Y.shape[1])
        coefs = [self._blend_coefs(blend, has_prior) for blend in blends]
        n_queries = len(np.unique(qids))
        results = None
        if len(alphas) * len(blends) == 1:
            best = (0, 0)
        elif n_queries < MIN_QUERIES_FOR_SELECTION:
            # Too few queries to hold any out: the most conservative candidate
            # (largest alpha, default blend) rather than a guess from noise.
            best = (int(np.argmax(alphas)), _closest(blends, DEFAULT_BLEND))
        else:
            candidates, doc_idx = self._candidates(Y, corpus)
            conservative = (int(np.argmax(alphas)), _closest(blends, DEFAULT_BLEND))
            best, results = select_ridge(
                pairs, candidates, doc_idx, grades, bases, coefs, alphas,
                intercept=b, n_splits=min(self.n_folds, n_queries), random_state=self.random_state,
                fallback=conservative if has_prior else None,
            )
            results["alpha"] = np.asarray(alphas)[results.pop("alpha_index")]
            results["blend"] = np.asarray(blends, dtype=float)[results.pop("prior_index")]
        prior = _combine(bases, coefs[best[1]], X.shape[1], Y.shape[1])
        W = ridge(stats, alphas[best[0]], prior)
        blend = self._blend_value(blends[best[1]])
        return W.astype(X.dtype), float(alphas[best[0]]), blend, results, prior

    def _alpha_candidates(self, stats, has_prior):
        """Stage-2 strengths to try; ``inf`` (keep the prior) whenever there is one."""
        if self.alpha != "auto":
            return [float(self.alpha)]
        if self.alphas is not None:
            alphas = [float(a) for a in self.alphas]
        else:
            alphas = relative_alpha_grid(stats)
        return alphas + [np.inf] if has_prior else alphas

    def _blend_candidates(self, has_prior):
        if not self.hybrid:
            return [1.0]
        if self.blend != "auto":
            return [float(self.blend)]
        if not has_prior:
            return [0.0]  # nothing to blend in: the cheap block alone
        # 0.9 and 1.0 (almost no cheap block) are not tried, to keep the
        # selection cost down: in the shared-data benchmarks the choice never
        # went above 0.6 with all labels, and 0.8 (chosen at 8-128 labels,
        # where choices are noisy) was the largest. blend=1.0 is still accepted.
        return [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]

    def _blend_value(self, blend):
        return float(blend) if self.hybrid else None

    def _prior_bases(self, W_align, d_in, d_d):
        """Maps whose combinations are the candidate priors of stage 2.

        Plain: the stage-1 map (or nothing, for label-only). Hybrid: the
        stage-1 map on the query block and the identity on the document block,
        each padded with zeros to the full input width.
        """
        if not self.hybrid:
            return [] if W_align is None else [W_align]
        identity = np.zeros((d_in, d_d))
        identity[d_in - d_d:] = np.eye(d_d)
        if W_align is None:
            return [identity]
        aligned = np.zeros((d_in, d_d))
        aligned[: d_in - d_d] = W_align
        return [aligned, identity]

    def _blend_coefs(self, blend, has_prior):
        if not self.hybrid:
            return [1.0] if has_prior else []
        return [blend, 1.0 - blend] if has_prior else [1.0]

    def _prior(self, W_align, blend):
        """The stage-2 prior for one blend (the stage-1 map when not hybrid)."""
        d_q, d_d = W_align.shape
        d_in = d_q + d_d if self.hybrid else d_q
        bases = self._prior_bases(W_align, d_in, d_d)
        return _combine(bases, self._blend_coefs(blend, True), d_in, d_d).astype(W_align.dtype)

    def _candidates(self, Y, corpus):
        """Documents to rank held-out queries against, and each row's target."""
        if corpus is None:
            first, inverse = unique_rows(Y)
            return Y[first], inverse
        from ._negatives import match_rows

        return corpus, match_rows(Y, corpus)

    # -- transform / score -------------------------------------------------
    def transform(self, X):
        """Map query-encoder embeddings into the document space.

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
        # Finiteness is checked on the (narrower) output below instead of on X:
        # a NaN or inf anywhere in a row of X makes that output row non-finite.
        X = validate_data(self, X, reset=False, dtype=FLOAT_DTYPES, ensure_all_finite=False)
        coef = self.coef_ if self.coef_.dtype == X.dtype else self.coef_.astype(X.dtype)
        # normalise(normalise(x) W) == normalise(x W) for a linear map without
        # intercept: skip the input pass then (a full extra read of X).
        scale_free = (
            self.normalize_output and not self.hybrid and self.module_params_ is None
            and not np.any(self.intercept_)
        )
        if not scale_free:
            X = self._normalize_X(X, self._n_features_out)
        out = X @ coef
        if self.module_params_ is not None:
            from ._torch_models import numpy_residual

            out += numpy_residual(self.module_params_, X)
        if np.any(self.intercept_):
            out += self.intercept_.astype(X.dtype, copy=False)
        if not np.isfinite(row_norms(out)).all():
            raise ValueError("Input X contains NaN or infinity.")
        if self.normalize_output:
            name = "X" if scale_free and self.normalize_input else "The mapped queries (X @ coef_)"
            out = l2_normalize(out, name=name, copy=False)  # out is ours: divide in place
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
    def _check_X(self, X, *, reset, min_samples=1):
        """Validate X (dtype, shape, finiteness, width against the fit)."""
        X = validate_data(
            self, X, reset=reset, dtype=FLOAT_DTYPES, ensure_min_samples=min_samples
        )
        if reset:
            self._fit_dtype = X.dtype
        return X

    def _normalize_X(self, X, d_d):
        """L2-normalise X, each encoder's block on its own when hybrid."""
        if not self.normalize_input:
            return X
        if not self.hybrid:
            return l2_normalize(X, name="X")
        head = l2_normalize(X[:, :-d_d], name="X (query-encoder block)")
        tail = l2_normalize(X[:, -d_d:], name="X (document-encoder block)")
        return np.hstack([head, tail])

    def _check_Y(self, Y, X, expected_width=None):
        """Validate Y against X's rows, the stage-1 width and the hybrid layout."""
        Y = as_target_matrix(Y, X.shape[0], dtype=X.dtype)
        if expected_width is not None and Y.shape[1] != expected_width:
            raise ValueError(
                f"Y has {Y.shape[1]} features, but the stage-1 map of this ERAAdapter outputs "
                f"{expected_width} (the document encoder's width)."
            )
        if self.hybrid and X.shape[1] <= Y.shape[1]:
            raise ValueError(
                "hybrid=True needs X = [query-encoder embedding, document-encoder embedding]: "
                f"X has {X.shape[1]} columns, not more than the {Y.shape[1]} of the document "
                "space (Y), so its trailing block cannot be the document encoder's."
            )
        return l2_normalize(Y, name="Y", zero_rows="warn") if self.normalize_input else Y

    def _check_corpus(self, corpus, Y):
        corpus = as_float_matrix(corpus, "corpus", dtype=Y.dtype)
        if corpus.shape[1] != Y.shape[1]:
            raise ValueError(
                f"corpus has {corpus.shape[1]} features but Y has {Y.shape[1]}: the corpus must "
                "be embedded by the document encoder."
            )
        return l2_normalize(corpus, name="corpus") if self.normalize_input else corpus

    def _set_map(self, W, b):
        self.coef_ = W
        self.intercept_ = np.asarray(b, dtype=W.dtype)
        self.module_params_ = None

    # -- persistence -------------------------------------------------------
    def save(self, path):
        """Write the fitted adapter without pickle: ``.npz`` weights plus JSON.

        The archive holds every fitted array (``np.savez``, loaded back with
        ``allow_pickle=False``) and a JSON document with the parameters,
        dimensions and package / format versions. The write is atomic: a
        crash leaves any previous file intact.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        path : pathlib.Path
            Where the adapter was written.
        """
        from ._persistence import save_adapter

        return save_adapter(self, path)

    @classmethod
    def load(cls, path):
        """Read an adapter written by :meth:`save` (no pickle involved).

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        adapter : ERAAdapter
            Fitted, with the saved parameters.
        """
        from ._persistence import load_adapter

        return load_adapter(cls, path)

    @classmethod
    def from_era_checkpoint(cls, path, **params):
        """Build a fitted adapter from a checkpoint released with ERA.

        The file is a torch state dict with ``proj.weight`` (d_d, d_q) and
        ``proj.bias`` (d_d,), read with ``torch.load(weights_only=True)`` (no
        arbitrary unpickling). The adapter computes
        ``normalise(x W^T + b)``, ERA's own formula, so ``normalize_input``
        defaults to False here.

        Parameters
        ----------
        path : str or path-like
        **params
            Other ``ERAAdapter`` parameters.

        Returns
        -------
        adapter : ERAAdapter
            Fitted: ``transform`` works at once.
        """
        from ._torch_train import load_era_checkpoint

        W, b = load_era_checkpoint(path)
        params.setdefault("normalize_input", False)
        adapter = cls(**params)
        adapter.n_features_in_ = W.shape[0]
        adapter._fit_dtype = W.dtype
        adapter._n_features_out = W.shape[1]
        adapter.align_coef_, adapter.align_intercept_ = W, b
        adapter._set_map(W, b)
        adapter.alpha_ = adapter.blend_ = adapter.cv_results_ = None
        adapter.history_ = adapter.align_history_ = None
        return adapter


def _check_tail_is_y(X, Y, min_cosine=0.99):
    """In hybrid alignment data, X's last block must be Y itself (same texts, same encoder)."""
    tail = X[:, -Y.shape[1]:]
    num = np.einsum("ij,ij->i", tail, Y)
    den = row_norms(tail) * row_norms(Y)
    cosine = float(np.mean(num / np.where(den > 0, den, 1)))
    if cosine < min_cosine:
        raise ValueError(
            f"hybrid=True: the last {Y.shape[1]} columns of X should be the document encoder's "
            f"embedding of the same texts as y, but their mean cosine with y is {cosine:.3f} "
            f"(< {min_cosine}). Build X as np.hstack([query_encoder(texts), "
            "document_encoder(texts)])."
        )


def _is_dask(A):
    """A dask array, recognised without importing dask."""
    return type(A).__module__.startswith("dask.")


def _combine(bases, coefs, d_in, d_out):
    """``sum(c * B)``, or a zero map when there are no bases."""
    out = np.zeros((d_in, d_out))
    for c, B in zip(coefs, bases):
        out += c * B
    return out


def _closest(values, target):
    return int(np.argmin([abs(v - target) for v in values]))
