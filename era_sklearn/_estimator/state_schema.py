"""ERAAdapter's fitted state, declared for the file format, and the solver classes it may name.

The file format (:mod:`era_sklearn._io`) knows no estimator: it reads this schema
from the class it is given. The shapes say how the maps chain: stage 1 maps the
query-encoder block (all of X, or X without its trailing document block when
``hybrid``) into the document space, and the adapted map takes all of X there.
"""

import re

from sklearn.base import BaseEstimator

from .._io.registry import ClassRegistry
from .._io.schema import Attribute, Dimension, StateSchema, is_float_array
from .._stage1.statistics import PairStatistics
from ..adapt import ADAPT_SOLVERS
from ..align import ALIGN_SOLVERS

#: The names files record for the solver classes (and the one dataclass the state
#: ever held). They are the public paths of 0.2, which still reads a file that names
#: only these, and stay the same wherever the classes move.
_BUILT_IN = {
    # The solvers the names in align= / adapt= resolve to: one list, so a solver added
    # there can be saved.
    **{f"era_sklearn.align.{c.__name__}": c for c in ALIGN_SOLVERS.values()},
    **{f"era_sklearn.adapt.{c.__name__}": c for c in ADAPT_SOLVERS.values()},
    "era_sklearn._statistics.PairStatistics": PairStatistics,  # 0.2's module path
}
#: Names written by the subpackage-move commit (4685f9f) for a class since renamed.
_ALIASES = {"era_sklearn._stage1.statistics.PairStatistics": PairStatistics}

SOLVER_CLASSES = ClassRegistry(
    _BUILT_IN, _ALIASES,
    hint="call era_sklearn.register_solver(YourSolver) before saving and before loading",
)

_MLP_KEY = re.compile(r"(coef|intercept)\Z|mlp_(coef|intercept)_(\d+)\Z")


def register_solver(cls, name=None):
    """Let :meth:`ERAAdapter.save` and :meth:`ERAAdapter.load` handle a solver class of yours.

    A saved file names each solver object's class; ``load`` builds only classes
    registered here (nothing named in a file is ever imported). Register your class
    once per process, before saving and before loading: a file naming a class that is
    not registered is refused with this function's name in the message, and so is
    saving an adapter that holds one.

    Parameters
    ----------
    cls : class
        A scikit-learn estimator class (``get_params`` / ``set_params``) whose
        parameters are JSON values, arrays or other registered objects.
    name : str, default=None
        The name files record; ``f"{cls.__module__}.{cls.__qualname__}"`` by
        default. Give one that stays the same if the class moves.

    Returns
    -------
    cls : class
        Unchanged, so the function works as a class decorator.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from era_sklearn import ERAAdapter, register_solver
    >>> from era_sklearn.align import Procrustes
    >>> @register_solver
    ... class ScaledProcrustes(Procrustes):
    ...     '''Procrustes under a name of its own.'''
    >>> X = np.random.default_rng(0).normal(size=(40, 6))
    >>> adapter = ERAAdapter(align=ScaledProcrustes()).fit_align(X, X[:, :4])
    >>> path = adapter.save(Path(tempfile.mkdtemp()) / "adapter.safetensors")
    >>> ERAAdapter.load(path).align
    ScaledProcrustes()
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise TypeError(f"register_solver takes a scikit-learn estimator class (a subclass of "
                        f"sklearn.base.BaseEstimator), not {cls!r}.")
    return SOLVER_CLASSES.register(cls, name)


def _align_rows(est, sizes):
    """Stage 1 maps the query-encoder block: with ``hybrid``, X without its document block."""
    if est.hybrid:
        return sizes["n_features_in"] - sizes["n_doc_features"]
    return sizes["n_features_in"]


def _residual_mlp_problem(params, sizes):
    """The residual branch's layers must chain n_features_in -> ... -> n_doc_features."""
    d_in, d_out = sizes.get("n_features_in"), sizes.get("n_doc_features")
    if not isinstance(params, dict) or not all(
            isinstance(k, str) and _MLP_KEY.match(k) and is_float_array(v)
            for k, v in params.items()):
        return ("module_params_ must map 'coef', 'intercept', 'mlp_coef_<i>', "
                "'mlp_intercept_<i>' to float arrays")
    n_layers = sum(k.startswith("mlp_coef_") for k in params)
    width = d_in
    for i in range(n_layers):
        coef, intercept = params.get(f"mlp_coef_{i}"), params.get(f"mlp_intercept_{i}")
        out = d_out if i == n_layers - 1 else getattr(coef, "shape", (0, 0))[-1]
        if coef is None or intercept is None or coef.shape != (width, out) \
                or intercept.shape != (out,):
            return (f"module_params_ layer {i} has shapes {getattr(coef, 'shape', None)} and "
                    f"{getattr(intercept, 'shape', None)}, expected ({width}, {out}) and "
                    f"({out},)")
        width = out
    layers = {f"mlp_{p}_{i}" for p in ("coef", "intercept") for i in range(n_layers)}
    if set(params) - layers - {"coef", "intercept"}:
        return "module_params_ has layers out of sequence"
    for key, shape in (("coef", (d_in, d_out)), ("intercept", (d_out,))):
        if key in params and params[key].shape != shape:
            return f"module_params_[{key!r}] has shape {params[key].shape}, expected {shape}"
    return None


def _unchecked(*names):
    """Attributes the state holds as plain values (histories, scores, choices)."""
    return tuple(Attribute(name) for name in names)


STATE_SCHEMA = StateSchema(
    dimensions=(
        Dimension("n_features_in", attribute="n_features_in_"),
        Dimension("n_doc_features", attribute="coef_", axis=1),
        Dimension("n_align_features", rule=_align_rows),
    ),
    attributes=(
        Attribute("n_features_in_", "count", required=True),
        Attribute("coef_", "float_array", ("n_features_in", "n_doc_features"), required=True,
                  finite=True),
        Attribute("intercept_", "float_array", ("n_doc_features",), required=True, finite=True),
        Attribute("feature_names_in_", "strings", ("n_features_in",)),
        Attribute("align_coef_", "float_array", ("n_align_features", "n_doc_features"),
                  finite=True),
        Attribute("align_intercept_", "float_array", ("n_doc_features",), finite=True),
        Attribute("align_docs_", "float_array", (None, "n_doc_features"), finite=True),
        Attribute("module_params_", check=_residual_mlp_problem, finite=True),
        Attribute("_fit_dtype", "dtype"),
        # The output width is coef_'s: a stored copy (0.1's private one, or the public one
        # the converter once wrote) is checked against it and dropped.
        Attribute("_n_features_out", "count", equals="n_doc_features", derived=True),
        Attribute("n_features_out_", "count", equals="n_doc_features", derived=True),
        *_unchecked("align_fingerprint_", "align_history_", "blend_", "penalty_",
                    "cv_results_", "history_", "heldout_ndcg_"),
    ),
    together=(("align_coef_", "align_intercept_"),),
    private=("_sklearn_output_config", "_fit_dtype"),  # set_output's configuration; fit dtype
    classes=SOLVER_CLASSES,
)
