"""The estimator declares its fitted state; the file format only applies the declaration."""

import json
from typing import ClassVar

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file
from sklearn.base import BaseEstimator

from era_sklearn import ERAAdapter
from era_sklearn._io import safetensors_file
from era_sklearn._io.persistence import load_adapter, save_adapter
from era_sklearn._io.registry import ClassRegistry
from era_sklearn._io.schema import Attribute, Dimension, StateSchema


def _fitted(hybrid=False):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8))
    Y = X[:, :4] + 0.1 * rng.normal(size=(60, 4))
    X = np.hstack([X, Y]) if hybrid else X
    return ERAAdapter(hybrid=hybrid).fit_align(X, Y), X


def _rewrite_attributes(path, edit, tensors=None, drop=()):
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
        arrays = {k: f.get_tensor(k) for k in f.keys() if k not in drop}  # noqa: SIM118
    attributes = json.loads(meta["attributes"])
    edit(attributes)
    arrays.update(tensors or {})
    meta["attributes"] = json.dumps(attributes)
    meta["sha256"] = safetensors_file.digest(meta, arrays)
    save_file(arrays, path, metadata=meta)


class _NoSchema(BaseEstimator):
    def fit(self, X):
        self.coef_ = np.eye(X.shape[1])
        return self


def test_a_class_without_a_schema_is_the_callers_error(tmp_path):
    est = _NoSchema().fit(np.ones((2, 3)))
    with pytest.raises(TypeError, match="_NoSchema declares no _state_schema"):
        save_adapter(est, tmp_path / "a")
    with pytest.raises(TypeError, match="_NoSchema declares no _state_schema"):
        load_adapter(_NoSchema, _fitted()[0].save(tmp_path / "b"))


def test_derived_attributes_are_checked_but_never_stored(tmp_path):
    """Files converted before the fix hold n_features_out_: it must agree, then it is dropped."""
    est, X = _fitted()
    est.n_features_out_ = 99  # whatever an object carries, a file never holds it
    path = est.save(tmp_path / "a")
    with safe_open(path, framework="numpy") as f:
        assert "n_features_out_" not in json.loads(f.metadata()["attributes"])
    _rewrite_attributes(path, lambda a: a.update(n_features_out_=4))
    loaded = ERAAdapter.load(path)
    assert "n_features_out_" not in vars(loaded)
    np.testing.assert_array_equal(loaded.transform(X), est.transform(X))
    _rewrite_attributes(path, lambda a: a.update(n_features_out_=5))
    with pytest.raises(ValueError, match=r"n_features_out_ is 5 but n_doc_features"):
        ERAAdapter.load(path)


@pytest.mark.parametrize("hybrid", [False, True], ids=["plain", "hybrid"])
def test_stage1_map_rows_follow_the_input_layout(hybrid, tmp_path):
    """align_coef_ maps the query block: all of X, or X without its document block."""
    est, _ = _fitted(hybrid)
    path = est.save(tmp_path / "a")
    rows = 8  # the query encoder's width either way
    assert est.align_coef_.shape == (rows, 4)
    wrong = np.zeros((rows + 4, 4))
    _rewrite_attributes(path, lambda a: None, tensors={"align_coef_": wrong})
    with pytest.raises(ValueError, match=rf"align_coef_ has shape \({rows + 4}, 4\), "
                                         rf"expected \({rows}, 4\)"):
        ERAAdapter.load(path)


def test_maps_set_together(tmp_path):
    est, _ = _fitted()
    path = est.save(tmp_path / "a")
    _rewrite_attributes(path, lambda a: a.update(align_intercept_=None),
                        drop=["align_intercept_"])
    with pytest.raises(ValueError, match=r"align_intercept_ has shape None, expected \(4,\)"):
        ERAAdapter.load(path)


class _Plain(BaseEstimator):
    """A user's solver class that declares no parameter constraints."""

    def __init__(self, k=1):
        self.k = k


class _Tiny(BaseEstimator):
    """A schema of its own: the format holds nothing specific to ERAAdapter."""

    _parameter_constraints: ClassVar[dict] = {}
    _state_schema = StateSchema(
        dimensions=(Dimension("width", attribute="w_", axis=0),),
        attributes=(Attribute("w_", "float_array", ("width",), required=True, finite=True),
                    Attribute("n_seen_", "count", required=True),
                    Attribute("total_", "count", equals="width", derived=True)),
        classes=ClassRegistry({"tests._Plain": _Plain}),
    )

    def __init__(self, solver=None):
        self.solver = solver

    def fit(self, X):
        self.w_, self.n_seen_ = np.asarray(X, dtype=float).sum(axis=0), len(X)
        return self


def test_another_estimator_declares_its_own_state(tmp_path):
    est = _Tiny(solver=_Plain(k=3)).fit(np.ones((3, 5)))
    loaded = load_adapter(_Tiny, save_adapter(est, tmp_path / "t"))
    assert type(loaded.solver) is _Plain and loaded.solver.k == 3
    np.testing.assert_array_equal(loaded.w_, est.w_)
    assert loaded.n_seen_ == 3
    est.w_[0] = np.inf
    with pytest.raises(ValueError, match=r"w_ contains NaN or infinity"):
        save_adapter(est, tmp_path / "u")
    est.w_, est.n_seen_ = np.ones(5), -1
    with pytest.raises(ValueError, match="n_seen_ is -1, not a count"):
        save_adapter(est, tmp_path / "u")


def test_the_writers_version_is_recorded_without_importing_the_package(tmp_path):
    """The format records era-sklearn's version without importing the package."""
    import era_sklearn

    with safe_open(_fitted()[0].save(tmp_path / "a"), framework="numpy") as f:
        versions = json.loads(f.metadata()["versions"])
    assert versions["era_sklearn"] == era_sklearn.__version__
