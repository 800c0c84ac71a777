"""Stage-1 solvers: how ``ERAAdapter`` maps query-encoder space onto document space.

Each solver is a small parameter object (the idiom of scikit-learn's
``estimator=`` parameters): it holds only the settings that apply to it, so
``GridSearchCV(ERAAdapter(align=LeastSquares()), {"align__alpha": [...]})``
reaches them through scikit-learn's own nested parameters. A solver returns
arrays and a history; only :class:`~era_sklearn.ERAAdapter` assigns fitted
attributes.

- :class:`Procrustes`: a (semi-)orthogonal map, closed form (the default).
- :class:`LeastSquares`: ridge least squares, closed form.
- :class:`TorchAlign`: ERA's own stage 1, a torch linear layer with bias
  trained with a cosine (or MSE / smooth-L1) loss. Needs the torch extra:
  ``pip install "era-sklearn[torch]"``.

Every solver follows one protocol, :class:`AlignSolver`: ``solve(problem)``
takes an :class:`AlignProblem` (the pair statistics, and the rows when the
solver sets ``requires_rows``) and returns an :class:`AlignResult`. The
closed-form solvers only read sufficient statistics (``X^T X``, ``X^T Y``,
column sums), so they stream through ``partial_fit_align`` and Dask; a user's
own solver that does the same works there too.
"""

from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions

from ._stage1.closed_form import procrustes, ridge
from ._stage1.problem import AlignProblem, AlignResult
from ._utils.blas import single_threaded_blas
from ._utils.optional import require_torch

__all__ = ["AlignProblem", "AlignResult", "AlignSolver", "LeastSquares", "Procrustes",
           "TorchAlign"]


class AlignSolver(BaseEstimator):
    """Base class of stage-1 solvers: the protocol ``ERAAdapter(align=...)`` calls.

    A solver is a parameter object (``__init__`` stores its settings, so
    ``clone`` and ``GridSearchCV``'s ``align__<name>`` reach them) with one
    method, ``solve(problem)``, which takes an :class:`AlignProblem` and
    returns an :class:`AlignResult`. The estimator reads two class attributes
    to build the problem. Any object with a ``solve`` method is accepted;
    one without these attributes gets the defaults below.

    Attributes
    ----------
    requires_rows : bool, default=False
        The solver needs the rows ``problem.X``, ``problem.Y`` and not only
        ``problem.stats``. Such a solver cannot run on ``partial_fit_align``
        or Dask arrays (the estimator says so).
    requires_gram : bool, default=True
        The solver reads ``problem.stats.xtx`` (``X^T X``); False halves the
        statistics pass (then ``xtx`` is None).

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import ERAAdapter
    >>> from era_sklearn.align import AlignResult, AlignSolver
    >>> class PlainLeastSquares(AlignSolver):
    ...     def solve(self, problem):
    ...         s = problem.stats
    ...         W = np.linalg.lstsq(s.xtx, s.xty, rcond=None)[0]
    ...         return AlignResult(coef=W, intercept=np.zeros(W.shape[1]))
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 6))
    >>> ERAAdapter(align=PlainLeastSquares()).fit_align(X, X[:, :3]).align_coef_.shape
    (6, 3)
    """

    requires_rows = False
    requires_gram = True
    #: No constraints of its own: a subclass lists its parameters' (unlisted ones are not checked).
    _parameter_constraints: ClassVar[dict] = {}

    def solve(self, problem):
        """Return the :class:`AlignResult` of ``problem`` (an :class:`AlignProblem`)."""
        raise NotImplementedError(f"{type(self).__name__} must define solve(problem).")


class _ClosedFormAlign(AlignSolver):
    """Shared solve of the closed-form solvers: optional centring, then a map."""

    def solve(self, problem):
        """The map from ``problem.stats`` alone, in float64."""
        stats = problem.stats
        centred = stats.centered() if self.center else stats
        # A d x d LAPACK problem (the SVD of a 768 x 384 X^T Y) is too small to
        # share: on the busy 2-core machine, two OpenBLAS threads took 1.2-3.7 s
        # where one takes 0.08 s (benchmarks/speed.py, solve_*_1thread).
        with single_threaded_blas():
            W = self._map(centred)
        b = stats.y_mean - stats.x_mean @ W if self.center else np.zeros(W.shape[1])
        return AlignResult(coef=W, intercept=b)


class Procrustes(_ClosedFormAlign):
    """Orthogonal Procrustes alignment (closed form).

    ``W = U V^T`` from the SVD of ``X^T Y``: an orthogonal map when the two
    spaces have the same width, one with orthonormal columns (or rows)
    otherwise. It preserves angles, so it cannot overfit a small alignment
    set.

    Parameters
    ----------
    center : bool, default=False
        Subtract the column means first; the map then gets an intercept.
    scale : bool, default=False
        Also fit a global scale (irrelevant to rankings when the adapter
        normalises its output).

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import ERAAdapter
    >>> from era_sklearn.align import Procrustes
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 6))
    >>> R = np.linalg.qr(rng.normal(size=(6, 6)))[0][:, :3]
    >>> W = ERAAdapter(align=Procrustes()).fit_align(X, X @ R).align_coef_
    >>> bool(np.allclose(W.T @ W, np.eye(3)))  # orthonormal columns: angles are kept
    True
    """

    _parameter_constraints: ClassVar[dict] = {"center": ["boolean"], "scale": ["boolean"]}

    def __init__(self, center=False, scale=False):
        self.center = center
        self.scale = scale

    @property
    def requires_gram(self):
        # The scale's denominator ||X W||^2 needs X^T X unless W is square.
        return bool(self.scale)

    def _map(self, stats):
        W, factor = procrustes(stats, scale=self.scale)
        return W * factor


class LeastSquares(_ClosedFormAlign):
    """Ridge least-squares alignment ``argmin ||X W - Y||^2 + alpha ||W||^2``.

    Parameters
    ----------
    alpha : float, default=0.1
        Ridge strength (> 0).
    center : bool, default=False
        Subtract the column means first; the map then gets an intercept.

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import ERAAdapter
    >>> from era_sklearn.align import LeastSquares
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(100, 6)), rng.normal(size=(100, 3))
    >>> ERAAdapter(align=LeastSquares(alpha=1.0)).fit_align(X, Y).align_coef_.shape
    (6, 3)
    """

    _parameter_constraints: ClassVar[dict] = {
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "center": ["boolean"],
    }
    def __init__(self, alpha=0.1, center=False):
        self.alpha = alpha
        self.center = center

    def _map(self, stats):
        return ridge(stats, self.alpha)


class TorchAlign(AlignSolver):
    """ERA's stage 1: a torch linear layer with bias trained on paired embeddings.

    Needs torch: ``pip install "era-sklearn[torch]"`` (without it, fitting
    raises an ImportError that says so).

    Parameters
    ----------
    loss : {"cosine", "mse", "smooth_l1"}, default="cosine"
        Training loss between the mapped and the document-encoder embedding
        (ERA uses cosine).
    init : {"procrustes", "random"}, default="procrustes"
        Start from the closed-form Procrustes map, or from torch's random
        initialisation (ERA's own recipe).
    max_epochs : int, default=10
    lr : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=0.01
    batch_size : int, default=256
    validation_fraction : float in [0, 1), default=0.1
        Alignment rows held out for early stopping (ERA trains on 900 of
        1,000 texts).
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``. The fitted weights are numpy arrays either way.

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import ERAAdapter
    >>> from era_sklearn.align import TorchAlign
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(64, 6)), rng.normal(size=(64, 3))
    >>> adapter = ERAAdapter(align=TorchAlign(max_epochs=2, device="cpu"), random_state=0)
    >>> adapter.fit_align(X, Y).align_history_["stop_reason"] in {"max_epochs", "patience"}
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        "loss": [StrOptions({"cosine", "mse", "smooth_l1"})],
        "init": [StrOptions({"procrustes", "random"})],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "device": [str],
    }
    requires_rows = True  # trains on the rows: not with partial_fit_align nor Dask
    requires_gram = False
    #: Only with the extra: pip install "era-sklearn[torch]".
    needs_torch = True

    def __init__(self, loss="cosine", init="procrustes", max_epochs=10, lr=1e-3,
                 weight_decay=0.01, batch_size=256, validation_fraction=0.1, device="auto"):
        self.loss = loss
        self.init = init
        self.max_epochs = max_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.device = device

    def solve(self, problem):
        """Train on the normalised rows ``problem.X``, ``problem.Y``, from Procrustes."""
        require_torch("The TorchAlign solver")
        from ._torch.fit import train_align_torch  # torch is optional: imported only here

        start = Procrustes().solve(problem)
        W, b, history = train_align_torch(
            problem.X, problem.Y, W0=start.coef, b0=start.intercept,
            random_state=problem.random_state, verbose=problem.verbose, **self.get_params(),
        )
        return AlignResult(coef=W, intercept=b, history=history)


#: The short names ``ERAAdapter(align=...)`` accepts.
ALIGN_SOLVERS = {"procrustes": Procrustes, "lstsq": LeastSquares, "torch": TorchAlign}
