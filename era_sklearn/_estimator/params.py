"""The solver parameters ``align=`` / ``adapt=``: names resolved to solver objects, nested
``solver__param`` keys, and the checks that run before any work."""

from ..adapt import ADAPT_SOLVERS
from ..align import ALIGN_SOLVERS


def resolve_align(value):
    """The stage-1 solver object of ``align=`` (a fresh one for a name)."""
    return ALIGN_SOLVERS[value]() if isinstance(value, str) else value


def resolve_adapt(value):
    """The stage-2 solver object of ``adapt=`` (a fresh one for a name)."""
    return ADAPT_SOLVERS[value]() if isinstance(value, str) else value


class SolverParamsMixin:
    """``set_params`` that names the fix for a nested key on a solver name, and the checks of
    the solver parameters that run before any work."""

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
        refuse_nested_keys_of_solver_names(self.get_params(deep=False), params)
        return super().set_params(**params)

    def _check_solver_settings(self):
        check_solver_settings(self.align, self.adapt, blend=self.blend, hybrid=self.hybrid)


def check_solver_settings(align, adapt, *, blend, hybrid):
    """Validate the nested solver objects and the cross-parameter rules."""
    for solver in (align, adapt):
        # A solver object (one with solve) that validates its own parameters; an adapter
        # given as align has no solve and was validated when it was fitted.
        if hasattr(solver, "solve") and hasattr(solver, "_validate_params"):
            solver._validate_params()  # names the bad setting, before any work
    if blend != "auto" and not hybrid:
        raise ValueError(
            f"blend={blend!r} only applies with hybrid=True (it weighs the query-encoder "
            "block of hybrid input); leave blend='auto' or set hybrid=True."
        )


def refuse_nested_keys_of_solver_names(current, params):
    """A ``solver__param`` key needs a solver object: a solver name (a str) has no parameters.

    scikit-learn would call ``"softmax".set_params(...)`` and fail with an
    AttributeError that says nothing of the fix. ``current`` is
    ``get_params(deep=False)``.
    """
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
