"""One penalty name across the solvers: ``alpha`` / ``alphas``, and Softmax's 0.2 names.

Softmax called its penalty ``lam`` / ``lams`` in era-sklearn 0.2. Since 0.3 it is
``alpha`` / ``alphas`` (scikit-learn's word, as in :class:`~era_sklearn.adapt.Ridge`);
the old names still work until 0.4, with a FutureWarning when the solver fits. Files
saved by 0.2 are covered in ``test_persistence.py``.
"""

import re
import warnings

import numpy as np
import pytest
from _few_labels import stage2_data
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from era_sklearn import ERAAdapter
from era_sklearn._stage2.heldout import RELATIVE_ALPHAS
from era_sklearn.adapt import Ridge, Softmax

OLD_LAM = r"Softmax\(lam=\.\.\.\) is deprecated since era_sklearn 0\.3.*0\.4.*renamed alpha"
OLD_LAMS = r"Softmax\(lams=\.\.\.\) is deprecated since era_sklearn 0\.3.*0\.4.*renamed alphas"


def _fit(solver, **kw):
    X_docs, Y_docs, X, Y = stage2_data()
    return ERAAdapter(adapt=solver, random_state=0, **kw).fit_align(X_docs, Y_docs).fit(X, Y)


def _fit_without_future_warnings(solver, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapter = _fit(solver, **kw)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    return adapter


def _same_fit(a, b):
    assert a.penalty_ == b.penalty_
    np.testing.assert_array_equal(a.coef_, b.coef_)


# -- the new names -----------------------------------------------------------------
def test_softmax_alpha_is_the_penalty_and_says_so_in_penalty_():
    fixed = _fit_without_future_warnings(Softmax(alpha=0.05))
    assert fixed.penalty_ == 0.05
    other = _fit_without_future_warnings(Softmax(alpha=5.0))
    assert not np.allclose(fixed.coef_, other.coef_)  # the value reaches the solver


def test_softmax_alphas_are_the_candidate_alphas():
    chosen = _fit_without_future_warnings(Softmax(alphas=[0.5, 0.05]))
    assert chosen.penalty_ in (0.5, 0.05, np.inf)
    # The grid holds alpha values, not C: with 16 queries the search tried
    # C = 16 alpha (and stage 1, C = inf).
    assert sorted(chosen.history_["C"]) == [0.8, 8.0, np.inf]


def test_default_softmax_warns_nothing():
    assert Softmax().get_params()["lam"] == "deprecated"
    assert repr(Softmax()) == "Softmax()"  # the unset old names stay out of the repr
    _fit_without_future_warnings(Softmax(max_iter=5))


# -- the 0.2 names: a FutureWarning, and they take effect ------------------------------
def test_old_lam_warns_names_alpha_and_takes_effect():
    with pytest.warns(FutureWarning, match=OLD_LAM) as caught:
        old = _fit(Softmax(lam=0.05))
    _same_fit(old, _fit_without_future_warnings(Softmax(alpha=0.05)))
    # stacklevel points at the line that called fit(), here _fit in this file
    assert {w.filename for w in caught if issubclass(w.category, FutureWarning)} == {__file__}


def test_old_lams_warns_names_alphas_and_takes_effect():
    with pytest.warns(FutureWarning, match=OLD_LAMS):
        old = _fit(Softmax(lams=[0.5, 0.05]))
    new = _fit_without_future_warnings(Softmax(alphas=[0.5, 0.05]))
    _same_fit(old, new)
    assert old.history_["C"] == new.history_["C"]


def test_old_name_through_set_params_warns_and_takes_effect():
    adapter = ERAAdapter(adapt=Softmax(), random_state=0).set_params(adapt__lam=0.05)
    X_docs, Y_docs, X, Y = stage2_data()
    adapter.fit_align(X_docs, Y_docs)
    with pytest.warns(FutureWarning, match=OLD_LAM):
        adapter.fit(X, Y)
    _same_fit(adapter, _fit_without_future_warnings(Softmax(alpha=0.05)))


def test_old_names_are_validated_like_the_new_ones():
    with pytest.raises(InvalidParameterError, match="'lam' parameter of Softmax"):
        _fit(Softmax(lam=-1.0))
    with pytest.raises(InvalidParameterError, match="'lams' parameter of Softmax"):
        _fit(Softmax(lams="bogus"))


@pytest.mark.filterwarnings("ignore:Softmax\\(lams=\\.\\.\\.\\) is deprecated")
@pytest.mark.parametrize("name", ["alphas", "lams"])
def test_a_bad_grid_is_named_as_it_was_given(name):
    with pytest.raises(ValueError, match=f"^{name} must be a non-empty list of non-negative"):
        _fit(Softmax(**{name: [0.1, -1.0]}))


@pytest.mark.parametrize("old, new", [
    ({"lam": 0.1}, {"alpha": 0.2}),
    ({"lams": [0.1]}, {"alphas": [0.2, 0.3]}),
])
def test_old_and_new_name_together_is_an_error_naming_both(old, new):
    (old_name, old_value), (new_name, new_value) = *old.items(), *new.items()
    message = re.escape(f"Softmax got both {old_name}={old_value!r} and {new_name}="
                        f"{new_value!r}: {old_name} is the deprecated name of {new_name}")
    solver = Softmax(**old, **new)
    with pytest.raises(ValueError, match=message):
        solver._validate_params()  # what ERAAdapter runs before any work, and load_adapter
    X_docs, Y_docs, X, Y = stage2_data()
    with pytest.raises(ValueError, match=message):  # before any work
        ERAAdapter(adapt=solver).fit_align(X_docs, Y_docs)
    adapter = ERAAdapter().fit_align(X_docs, Y_docs).set_params(adapt=solver)
    with pytest.raises(ValueError, match=message):
        adapter.fit(X, Y)


# -- GridSearchCV ----------------------------------------------------------------------
def _grid_search(param, values):
    X_docs, Y_docs, X, Y = stage2_data()
    aligned = FrozenEstimator(ERAAdapter(random_state=0).fit_align(X_docs, Y_docs))
    search = GridSearchCV(ERAAdapter(align=aligned, adapt=Softmax(max_iter=20), random_state=0),
                          {param: values}, cv=2)
    return search.fit(X, Y)


def test_gridsearch_over_the_new_name():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search = _grid_search("adapt__alpha", [0.01, 1.0])
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    assert list(search.cv_results_["param_adapt__alpha"]) == [0.01, 1.0]
    assert search.best_estimator_.penalty_ == search.best_params_["adapt__alpha"]
    scores = search.cv_results_["mean_test_score"]
    assert scores[0] != scores[1]  # the grid's values reached the fits


def test_gridsearch_over_the_old_name_warns_and_matches():
    with pytest.warns(FutureWarning, match=OLD_LAM):
        old = _grid_search("adapt__lam", [0.01, 1.0])
    new = _grid_search("adapt__alpha", [0.01, 1.0])
    np.testing.assert_array_equal(old.cv_results_["mean_test_score"],
                                  new.cv_results_["mean_test_score"])
    _same_fit(old.best_estimator_, new.best_estimator_)


# -- Ridge: what scale each of alpha and alphas holds ------------------------------------
def test_ridge_default_grid_is_factors_of_the_mean_eigenvalue_and_a_given_grid_is_absolute():
    X_docs, Y_docs, X, Y = stage2_data()
    adapter = ERAAdapter(adapt=Ridge(), normalize_input=False, random_state=0)
    adapter.fit_align(X_docs, Y_docs).fit(X, Y)
    # One relevant document per query: every row weighs 1, so X^T W X = X^T X.
    mean_eigenvalue = np.trace(X.T @ X) / X.shape[1]
    tried = adapter.cv_results_["alpha"]
    np.testing.assert_allclose(tried[np.isfinite(tried)], RELATIVE_ALPHAS * mean_eigenvalue,
                               rtol=1e-12)  # one trace of 8 terms, in float64
    given = ERAAdapter(adapt=Ridge(alphas=[0.1, 10.0]), normalize_input=False, random_state=0)
    given.fit_align(X_docs, Y_docs).fit(X, Y)
    assert set(given.cv_results_["alpha"]) == {0.1, 10.0, np.inf}  # used as given
