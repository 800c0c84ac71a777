"""Stage-2 solvers: how ``ERAAdapter.fit`` refines the map from labelled pairs.

Each solver is a small parameter object holding only its own settings,
reachable as ``adapt__<name>`` by ``GridSearchCV``. Every solver follows one
protocol, :class:`AdaptSolver`: ``solve(problem)`` takes a :class:`Stage2Problem`
and returns an :class:`AdaptResult`; the estimator assigns the fitted
attributes.

- :class:`Softmax` (the default): full-batch listwise softmax over candidate
  documents, L-BFGS from the stage-1 prior. Optimises ranking directly.
- :class:`Ridge`: closed-form squared error toward the stage-1 map.
- :class:`Contrastive`: ERA's InfoNCE with hard negatives, in torch (linear
  or residual MLP, CPU or GPU); needs ``pip install "era-sklearn[torch]"``.
"""

import inspect
import warnings
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.utils._param_validation import Hidden, Interval, StrOptions

from ._stage1.closed_form import ridge
from ._stage2.candidates import bounded_candidates
from ._stage2.heldout import choose_blend, heldout_estimate, relative_alpha_grid, select_ridge
from ._stage2.problem import AdaptResult, AdaptSolver, Stage2Problem
from ._stage2.queries import QueryPairs
from ._stage2.softmax import SoftmaxProblem, label_only_prior
from ._stage2.softmax_search import final_fit, search_penalty, select_and_fit
from ._utils.optional import require_torch

__all__ = ["AdaptResult", "AdaptSolver", "Contrastive", "Ridge", "Softmax", "Stage2Problem"]

#: Fewest distinct labelled queries for held-out selection.
MIN_QUERIES_FOR_SELECTION = 4

#: Default of a renamed parameter's old name: not set (scikit-learn's convention).
DEPRECATED = "deprecated"


def _check_finite_grid(values, name):
    """A user-given candidate grid: finite or +inf, non-negative, not empty."""
    if values is None:
        return None
    grid = np.asarray(values, dtype=float).ravel()
    if grid.size == 0 or np.isnan(grid).any() or (grid < 0).any():
        raise ValueError(
            f"{name} must be a non-empty list of non-negative numbers (inf allowed), got "
            f"{list(np.asarray(values).ravel())!r}."
        )
    return [float(v) for v in grid]


def _renamed_settings(solver, *, warn):
    """``{new name: (value, name set)}`` of each renamed parameter: under its new or old name.

    An old name that is set takes effect (with a FutureWarning when ``warn``,
    i.e. when the solver fits); set together with its new name it is an error
    naming both, whichever way ``warn`` is.
    """
    settings, solver_name = {}, type(solver).__name__
    defaults = inspect.signature(type(solver)).parameters
    for old, new in solver._renamed_parameters.items():
        old_value, new_value = getattr(solver, old), getattr(solver, new)
        if isinstance(old_value, str) and old_value == DEPRECATED:
            settings[new] = (new_value, new)
            continue
        default = defaults[new].default
        if not (new_value is default or isinstance(new_value, str) and new_value == default):
            raise ValueError(
                f"{solver_name} got both {old}={_short_repr(old_value)} and "
                f"{new}={_short_repr(new_value)}: {old} is the deprecated name of {new} (same "
                f"values, same scale). Set {new} only."
            )
        if warn:
            warnings.warn(
                f"{solver_name}({old}=...) is deprecated since era_sklearn 0.3 and will be removed "
                f"in 0.4: it was renamed {new} (same values, same scale). Write "
                f"{solver_name}({new}=...), or adapt__{new} in set_params and GridSearchCV grids.",
                FutureWarning,
                stacklevel=5,  # the line that called fit(): solve <- fit <- sklearn's _fit_context
            )
        settings[new] = (old_value, old)
    return settings


def _short_repr(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Ridge(AdaptSolver):
    """Closed-form stage 2: ``argmin ||X W - Y||^2 + alpha ||W - W_prior||^2``.

    Squared error in document space does not rank; its strength is therefore
    chosen by nDCG@10 of held-out *queries*, with ``alpha = inf`` (keep the
    stage-1 map) always a candidate that a finite alpha must beat by one
    standard error of the per-query gains.

    ``alpha`` is absolute: it weighs ``||W - W_prior||^2`` against the
    weighted *sum* of squared errors ``sum_i w_i ||x_i W + b - y_i||^2`` over
    the labelled rows (normalised as ``transform`` normalises them; under
    ``query_weighting="balanced"`` each query's rows weigh 1 in all), so its
    useful range grows with the number of queries. (:class:`Softmax`'s
    ``alpha`` weighs a *mean* per-query loss instead: the two scales differ.)

    Parameters
    ----------
    alpha : float or "auto", default="auto"
        Strength toward the prior, absolute as above (``inf`` keeps the prior,
        0 is least squares). ``"auto"``: chosen (with the hybrid blend) on
        held-out queries among ``alphas`` and ``inf``.
    alphas : array-like of float or None, default=None
        Candidate values of ``alpha`` for ``alpha="auto"``, absolute like
        ``alpha`` and used as given (``inf`` is added). None: a grid relative
        to the data, ``f * m`` for the 11 factors ``f = np.logspace(-2.5,
        2.5, 11)``, where ``m`` is the mean eigenvalue ``trace(X^T W X) / d_in``
        of the weighted Gram matrix of the labelled queries. After a held-out
        choice, ``cv_results_["alpha"]`` lists the values tried.
    n_folds : int, default=5
        Query folds for ``alpha="auto"``.

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import ERAAdapter
    >>> from era_sklearn.adapt import Ridge
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(40, 6)), rng.normal(size=(40, 3))
    >>> ERAAdapter(adapt=Ridge(alpha=1.0)).fit(X, Y).coef_.shape
    (6, 3)
    """

    _parameter_constraints: ClassVar[dict] = {
        "alpha": [Interval(Real, 0, None, closed="both"), StrOptions({"auto"})],
        "alphas": ["array-like", None],
        "n_folds": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(self, alpha="auto", alphas=None, n_folds=5):
        self.alpha = alpha
        self.alphas = alphas
        self.n_folds = n_folds

    def solve(self, problem):
        pairs = QueryPairs(problem.X, problem.Y, problem.weights, problem.qids)
        stats = pairs.statistics(intercept=problem.intercept)
        alphas = self._candidates(stats, problem.has_prior)
        blends = problem.blends
        results = None
        if len(alphas) * len(blends) == 1:
            best = (0, 0)
        elif problem.n_queries < MIN_QUERIES_FOR_SELECTION:
            # Too few queries to hold any out: the most conservative candidate.
            best = (int(np.argmax(alphas)), problem.default_blend_index)
        else:
            conservative = (int(np.argmax(alphas)), problem.default_blend_index)
            best, results = select_ridge(
                pairs, problem.candidates, problem.targets, problem.grades, problem.bases,
                [problem.blend_coefs(b) for b in blends], alphas, intercept=problem.intercept,
                n_splits=min(self.n_folds, problem.n_queries), random_state=problem.random_state,
                fallback=conservative if problem.has_prior else None,
            )
            results["alpha"] = np.asarray(alphas)[results.pop("alpha_index")]
            results["blend"] = np.asarray(blends, dtype=float)[results.pop("prior_index")]
        alpha, blend = alphas[best[0]], blends[best[1]]
        W = ridge(stats, alpha, problem.prior(blend))
        return AdaptResult(coef=W, intercept=problem.intercept, blend=blend,
                           penalty=float(alpha), cv_results=results)

    def refit_without(self, problem, result, rows_out):
        """The chosen map refitted without some rows (a held-out comparison)."""
        keep = np.setdiff1d(np.arange(len(problem.X)), rows_out)
        pairs = QueryPairs(problem.X[keep], problem.Y[keep], problem.weights[keep],
                           problem.qids[keep])
        stats = pairs.statistics(intercept=problem.intercept)
        return ridge(stats, result.penalty, problem.prior(result.blend))

    def _candidates(self, stats, has_prior):
        """Strengths to try; ``inf`` (keep the prior) whenever there is one."""
        if self.alpha != "auto":
            return [float(self.alpha)]
        alphas = _check_finite_grid(self.alphas, "alphas")
        if alphas is None:
            alphas = relative_alpha_grid(stats)
        return alphas + [np.inf] if has_prior and np.inf not in alphas else alphas


class Contrastive(AdaptSolver):
    """ERA's stage 2 in torch: InfoNCE over positives and mined hard negatives.

    Starts from the stage-1 prior (the paper's warm start), which also mines
    the hard negatives (ERA's ``topk_percpos`` rule, or random negatives).
    Early stopping watches held-out queries; with ``fallback=True`` the
    closed-form :class:`Ridge` map is kept when it ranks those queries
    better.

    Needs torch: ``pip install "era-sklearn[torch]"`` (without it, fitting
    raises an ImportError that says so). A fitted adapter, its MLP branch
    included, transforms and loads with numpy alone.

    Parameters
    ----------
    model : {"linear", "mlp"}, default="linear"
        ERA's linear layer, or that layer plus a residual MLP branch that
        starts at zero.
    hidden_size : int, default=512
        MLP width (``model="mlp"``).
    n_layers : int, default=1
        MLP hidden layers (``model="mlp"``).
    dropout : float in [0, 1), default=0.1
        MLP dropout (``model="mlp"``).
    lr : float, default=1e-3
        AdamW learning rate (the paper's 1e-5 had not converged after 1,000
        epochs on SciFact; see the docs).
    weight_decay : float, default=1e-4
    max_epochs : int, default=1000
    batch_size : int, default=256
    patience : int or None, default=20
        Early-stopping patience in epochs; None trains ``max_epochs``.
    warmup : float in [0, 1), default=0.1
        Linear warm-up share of the steps.
    temperature : float, default=0.05
    n_negatives : int, default=5
        Hard negatives per row.
    negatives : {"topk_percpos", "random"}, default="topk_percpos"
        ERA's mining strategies.
    top_k : int, default=2000
        Teacher's top documents to mine from.
    threshold : float in (0, 1], default=0.95
        Drop candidates scoring above ``threshold`` times the positive
        (likely unlabelled positives).
    in_batch_negatives : bool, default=True
        Also use the other rows of the batch as negatives.
    positives : {"all", "one"}, default="all"
        Train on every (query, document) row, or on one random positive per
        query fixed for all epochs (the paper).
    validation_fraction : float in [0, 1), default=0.1
    monitor : {"ndcg", "loss"}, default="ndcg"
        Early stopping on 1 - nDCG@10 of the held-out queries over the
        candidates, or on their InfoNCE loss (the paper).
    min_valid_queries : int, default=10
        Early stopping holds out at least this many queries; with fewer than
        twice as many labelled queries torch is skipped and the closed-form
        map kept (0: no such rule, as the paper).
    start_as_candidate : bool, default=True
        The starting map competes as epoch 0 for the best epoch, so training
        that never helps gives it back (the paper: False).
    warm_start : {"align", "ridge"}, default="align"
        Start from the stage-1 prior (the paper) or the closed-form
        :class:`Ridge` map.
    fallback : bool, default=True
        Keep the closed-form map when it ranks the held-out queries better.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import ERAAdapter
    >>> from era_sklearn.adapt import Contrastive
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(60, 6)), rng.normal(size=(60, 3))
    >>> adapter = ERAAdapter(adapt=Contrastive(max_epochs=2, min_valid_queries=2,
    ...                                        device="cpu"), random_state=0)
    >>> adapter.fit(X, Y).coef_.shape
    (6, 3)
    """

    #: Only with the extra: pip install "era-sklearn[torch]".
    needs_torch = True

    _parameter_constraints: ClassVar[dict] = {
        "model": [StrOptions({"linear", "mlp"})],
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "warmup": [Interval(Real, 0, 1, closed="left")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "n_negatives": [Interval(Integral, 0, None, closed="left")],
        "negatives": [StrOptions({"topk_percpos", "random"})],
        "top_k": [Interval(Integral, 1, None, closed="left")],
        "threshold": [Interval(Real, 0, 1, closed="right")],
        "in_batch_negatives": ["boolean"],
        "positives": [StrOptions({"all", "one"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "monitor": [StrOptions({"ndcg", "loss"})],
        "min_valid_queries": [Interval(Integral, 0, None, closed="left")],
        "start_as_candidate": ["boolean"],
        "warm_start": [StrOptions({"align", "ridge"})],
        "fallback": ["boolean"],
        "device": [str],
    }

    def __init__(self, model="linear", hidden_size=512, n_layers=1, dropout=0.1, lr=1e-3,
                 weight_decay=1e-4, max_epochs=1000, batch_size=256, patience=20, warmup=0.1,
                 temperature=0.05, n_negatives=5, negatives="topk_percpos", top_k=2000,
                 threshold=0.95, in_batch_negatives=True, positives="all",
                 validation_fraction=0.1, monitor="ndcg", min_valid_queries=10,
                 start_as_candidate=True, warm_start="align", fallback=True, device="auto"):
        self.model = model
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.patience = patience
        self.warmup = warmup
        self.temperature = temperature
        self.n_negatives = n_negatives
        self.negatives = negatives
        self.top_k = top_k
        self.threshold = threshold
        self.in_batch_negatives = in_batch_negatives
        self.positives = positives
        self.validation_fraction = validation_fraction
        self.monitor = monitor
        self.min_valid_queries = min_valid_queries
        self.start_as_candidate = start_as_candidate
        self.warm_start = warm_start
        self.fallback = fallback
        self.device = device

    def solve(self, problem):
        require_torch("The Contrastive solver")
        from ._torch.fit import train_adapt_torch

        ridge_solver = Ridge()
        closed = ridge_solver.solve(problem)
        if self.warm_start == "ridge" or not problem.has_prior:
            start = closed.coef  # label-only: the closed-form map is the only start
        else:
            start = problem.prior(closed.blend)
        settings = self.get_params()
        for name in ("warm_start", "fallback"):
            settings.pop(name)
        settings["n_negatives"] = _available_negatives(problem, self.n_negatives)
        fallback = None
        if self.fallback:
            def fallback(rows_out):
                return ridge_solver.refit_without(problem, closed, rows_out), problem.intercept
        params, history = train_adapt_torch(
            problem.X, problem.Y, problem.qids, problem.candidates, problem.targets,
            start_W=start, start_b=problem.intercept, fallback=fallback,
            random_state=problem.random_state, verbose=problem.verbose, **settings,
        )
        if params is None:  # torch skipped, or the closed-form map won on validation
            closed.history = history
            return closed
        coef, intercept = params.pop("coef"), params.pop("intercept")
        return AdaptResult(coef=coef, intercept=intercept, blend=closed.blend,
                           penalty=closed.penalty, module_params=params or None,
                           history=history, cv_results=closed.cv_results)


def _available_negatives(problem, n_negatives):
    """``n_negatives``, or fewer when the candidates cannot supply them (with a warning)."""
    pairs = np.unique(np.stack([problem.qids, problem.targets]), axis=1)
    most_positives = int(np.bincount(pairs[0]).max())
    available = len(problem.candidates) - most_positives
    if available >= n_negatives:
        return n_negatives
    warnings.warn(
        f"Only {len(problem.candidates)} candidate documents, of which a query has "
        f"{most_positives} relevant: {max(available, 0)} negatives per row instead of "
        f"{n_negatives}. Pass corpus= to mine from the whole collection.",
        UserWarning, stacklevel=4,
    )
    return max(available, 0)


class Softmax(AdaptSolver):
    """Stage 2 that ranks: full-batch listwise softmax toward the stage-1 map.

    Minimises, over the linear map ``W``,

        mean_q  -sum_d t_qd log softmax_d( cos(x_q W + b, c_d) / temperature )
            + alpha ||W - W_prior||^2

    where ``d`` runs over the candidate documents (the corpus, or
    ``align_docs_`` plus the labelled documents) and ``t_q`` is the query's
    graded relevance normalised to sum 1. Unlike the squared error of
    :class:`Ridge`, this is the ranking a search user sees: it raises each
    query's relevant documents above the other candidates. L-BFGS from the
    prior with an analytic gradient (numpy; no torch), deterministic.

    ``alpha`` weighs the penalty against the *mean* per-query loss (the
    query weights sum to 1), so ``alpha = C / n_queries`` weighs ``C``
    against the summed loss: the Method docs speak of ``C``, the parameters
    hold ``alpha``. (:class:`Ridge`'s ``alpha`` weighs a sum of squared
    errors instead: the two scales differ.)

    Parameters
    ----------
    alpha : float or "auto", default="auto"
        Penalty strength toward the prior, against the mean per-query loss
        (``inf`` keeps the prior). ``"auto"``: chosen on held-out labelled
        queries among ``alpha = C / n_queries`` for a grid of ``C`` (query
        folds when labels are few, one held-out split and an adaptive search
        when they are many), by the rule of the Method docs; ``penalty_ =
        inf`` when stage 1 is kept.
    alphas : array-like of float or None, default=None
        Candidate values of ``alpha`` (same scale: ``C / n_queries``, not
        ``C``) for ``alpha="auto"``, all tried; None: the rule's own ``C``
        (a grid with few labels, an adaptive search with many).
    temperature : float, default=0.05
        Softmax temperature over cosine scores.
    max_iter : int, default=100
        Most L-BFGS iterations of each held-out fit (they stop early on
        held-out nDCG@10), and of the single fit when ``alpha`` is a number.
        After the search, the fit on every query starts from the held-out
        maps at the chosen penalty and runs 6 iterations.
    max_candidates : int, default=20000
        A larger corpus is reduced to every positive, the documents the prior
        ranks highest for the labelled queries, and a fixed random sample,
        this many rows in all (memory and time stay bounded for 1e5-1e6
        documents).
    lam : float or "auto"
        Deprecated since 0.3, removed in 0.4: the 0.2 name of ``alpha`` (same
        value, same scale). Setting it warns (FutureWarning) when the solver
        fits, and it takes effect; setting ``alpha`` too is an error.
    lams : array-like of float
        Deprecated since 0.3, removed in 0.4: the 0.2 name of ``alphas``.

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import ERAAdapter
    >>> from era_sklearn.adapt import Softmax
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(40, 6)), rng.normal(size=(40, 3))
    >>> adapter = ERAAdapter(adapt=Softmax(alpha=1.0)).fit(X, Y)
    >>> adapter.coef_.shape, adapter.penalty_
    ((6, 3), 1.0)
    """

    _parameter_constraints: ClassVar[dict] = {
        "alpha": [Interval(Real, 0, None, closed="both"), StrOptions({"auto"})],
        "alphas": ["array-like", None],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "max_candidates": [Interval(Integral, 2, None, closed="left")],
        "lam": [Interval(Real, 0, None, closed="both"), StrOptions({"auto"}),
                Hidden(StrOptions({DEPRECATED}))],
        "lams": ["array-like", Hidden(StrOptions({DEPRECATED}))],
    }

    #: Parameters renamed in 0.3, old name -> new name. Files saved by 0.2
    #: hold the old names; ``load`` reads them under the new ones.
    _renamed_parameters: ClassVar[dict] = {"lam": "alpha", "lams": "alphas"}

    def __init__(self, alpha="auto", alphas=None, temperature=0.05, max_iter=100,
                 max_candidates=20000, lam=DEPRECATED, lams=DEPRECATED):
        self.alpha = alpha
        self.alphas = alphas
        self.temperature = temperature
        self.max_iter = max_iter
        self.max_candidates = max_candidates
        self.lam = lam
        self.lams = lams

    def _validate_params(self):
        """scikit-learn's checks, and no old name set together with its new one."""
        super()._validate_params()
        _renamed_settings(self, warn=False)

    def solve(self, problem):

        settings = _renamed_settings(self, warn=True)  # the 0.2 names lam / lams, if set
        alpha, alphas = settings["alpha"][0], _check_finite_grid(*settings["alphas"])
        blends = _softmax_blends(problem)
        if alpha != "auto" or len(blends) == 1 and not problem.has_prior:
            # A given penalty, or label-only: one problem, no blend to choose.
            sub, prior = self._subproblem(problem, blends[0])
            W, chosen, history = select_and_fit(sub, prior, lam=alpha, lams=alphas,
                                                max_iter=self.max_iter,
                                                random_state=problem.random_state)
            return AdaptResult(coef=_full_map(W, problem), intercept=problem.intercept,
                               blend=blends[0], penalty=float(chosen), history=history)
        subs = {b: self._subproblem(problem, b) for b in blends}
        # The cheap encoder alone, scored on the same held-out queries (hybrid only).
        cheap = {"cheap encoder": problem.prior(0.0)} if problem.hybrid else {}
        searches = {}
        for b, (sub, prior) in subs.items():  # the default blend first
            searches[b] = search_penalty(
                sub, prior, lams=self._blend_lams(alphas, searches), max_iter=self.max_iter,
                random_state=problem.random_state,
                also_score=cheap if not _plain(problem, b) else {})
        blend, blend_summary = choose_blend(searches, blends[0])
        sub, prior = subs[blend]
        W, history = final_fit(sub, prior, searches[blend], max_iter=self.max_iter)
        if len(blends) > 1:
            history["blend"] = blend_summary
        heldout = _heldout_summary(problem, searches[blend], searches)
        return AdaptResult(coef=_full_map(W, problem), intercept=problem.intercept,
                           blend=blend, penalty=float(searches[blend].lam), history=history,
                           heldout=heldout)

    @staticmethod
    def _blend_lams(lams, searches):
        """Penalties for a further blend: all of them with few labels; with many (one
        held-out split and the adaptive search), only the first blend's choice, so that
        comparing blends costs one more held-out fit rather than a second search."""
        first = next(iter(searches.values()), None)
        if lams is not None or first is None or not first.many:
            return lams
        return [] if np.isinf(first.C) else [first.lam]

    def _subproblem(self, problem, blend):
        """The softmax problem and prior of one blend (blend 1.0: the query block alone)."""

        X = problem.X[:, : _query_width(problem)] if _plain(problem, blend) else problem.X
        prior_map = problem.prior(blend)[: X.shape[1]] if problem.bases else None
        candidates, targets = self._bounded_candidates(problem, X, prior_map)
        sub = SoftmaxProblem.from_pairs(
            X, targets, candidates, qids=problem.qids, grades=problem.grades,
            query_weight=np.bincount(problem.qids, weights=problem.weights),
            intercept=problem.intercept, temperature=self.temperature,
        )
        return sub, (prior_map if prior_map is not None else label_only_prior(sub))

    def _bounded_candidates(self, problem, X, prior_map):
        """The problem's candidates, reduced when there are more than ``max_candidates``."""
        if len(problem.candidates) <= self.max_candidates:
            return problem.candidates, problem.targets

        queries = None if prior_map is None else X @ prior_map + problem.intercept
        candidates, targets, _ = bounded_candidates(
            problem.candidates, problem.targets, queries=queries,
            max_candidates=self.max_candidates, random_state=problem.random_state)
        return candidates, targets


#: Blend 1.0 of hybrid input: plain ERA, the cheap block held at zero.
PLAIN_BLEND = 1.0


def _softmax_blends(problem):
    """The blends Softmax compares: the default hybrid and plain ERA, or the one given."""
    if problem.hybrid and problem.has_prior and len(problem.blends) > 1:
        return [float(problem.default_blend), PLAIN_BLEND]
    return [float(problem.blends[0]) if problem.hybrid else 1.0]


def _plain(problem, blend):
    return problem.hybrid and problem.has_prior and blend == PLAIN_BLEND


def _query_width(problem):
    """Columns of the query encoder's block (all of X unless hybrid)."""
    return problem.X.shape[1] - (problem.Y.shape[1] if problem.hybrid else 0)


def _full_map(W, problem):
    """A plain-ERA map on hybrid input: zero rows for the cheap block."""
    if W.shape[0] == problem.X.shape[1]:
        return W
    full = np.zeros((problem.X.shape[1], W.shape[1]))
    full[: W.shape[0]] = W
    return full


def _heldout_summary(problem, chosen, searches):
    """Held-out nDCG@10 (mean and standard error over queries) that ``fit`` rests on."""

    out = {"n_queries": chosen.n_queries, "n_folds": chosen.history.get("n_folds", 0),
           "stage 1": heldout_estimate(chosen.prior_per_query),
           "chosen": heldout_estimate(chosen.per_query),
           "gain over stage 1": heldout_estimate(chosen.per_query - chosen.prior_per_query)}
    for blend, search in searches.items():
        if len(searches) > 1:
            name = "plain ERA" if _plain(problem, blend) else f"hybrid blend {blend:g}"
            out[f"{name} stage 1"] = heldout_estimate(search.prior_per_query)
            out[f"{name} chosen"] = heldout_estimate(search.per_query)
        for name, per_query in search.extra.items():
            out[name] = heldout_estimate(per_query)
    return out


#: The short names ``ERAAdapter(adapt=...)`` accepts.
ADAPT_SOLVERS = {"softmax": Softmax, "ridge": Ridge, "contrastive": Contrastive}
