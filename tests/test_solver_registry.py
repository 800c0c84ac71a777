"""Saved files name solver classes by stable registry names (issue 20).

A file's class names are looked up in the estimator's registry, never imported;
a user's own solver class saves and loads once registered with
``era_sklearn.register_solver``, and is refused with that fix named otherwise.
"""

import json
import sys

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from era_sklearn import ERAAdapter, register_solver
from era_sklearn._io import safetensors_file
from era_sklearn._io.registry import ClassRegistry
from era_sklearn._stage1.statistics import PairStatistics
from era_sklearn.adapt import Ridge
from era_sklearn.align import LeastSquares, Procrustes


class ShiftedProcrustes(Procrustes):
    """A user's stage-1 solver: a subclass of a built-in one, under a name of its own."""


class UnregisteredProcrustes(Procrustes):
    """Never registered: saving an adapter that holds one must say how to fix it."""


class MyRidge(Ridge):
    """A user's stage-2 solver."""


register_solver(ShiftedProcrustes)
register_solver(MyRidge, name="my_package.MyRidge")


def _pairs(n=80, d_q=8, d_d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_q))
    return X, X @ rng.normal(size=(d_q, d_d)) + 0.1 * rng.normal(size=(n, d_d))


def _params(path):
    with safe_open(path, framework="numpy") as f:
        return json.loads(f.metadata()["params"])


def _rewrite_params(path, edit):
    """Edit the saved parameters and re-sign the file (as a deliberate editor would)."""
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    params = json.loads(meta["params"])
    edit(params)
    meta["params"] = json.dumps(params)
    meta["sha256"] = safetensors_file.digest(meta, arrays)
    save_file(arrays, path, metadata=meta)


def test_built_in_solvers_are_written_by_their_stable_names(tmp_path):
    X, Y = _pairs()
    est = ERAAdapter(align=LeastSquares(), adapt=Ridge(alpha=1.0)).fit_align(X, Y).fit(X, Y)
    params = _params(est.save(tmp_path / "a"))
    # module + "." + name is the registry name; the two fields are 0.2's, which still reads them
    assert {k: params["align"][k] for k in ("__estimator__", "module")} == \
        {"__estimator__": "LeastSquares", "module": "era_sklearn.align"}
    assert {k: params["adapt"][k] for k in ("__estimator__", "module")} == \
        {"__estimator__": "Ridge", "module": "era_sklearn.adapt"}


def test_registered_custom_solvers_round_trip(tmp_path):
    X, Y = _pairs()
    est = ERAAdapter(align=ShiftedProcrustes(), adapt=MyRidge(alpha=2.0))
    est.fit_align(X, Y).fit(X, Y)
    path = est.save(tmp_path / "a")
    params = _params(path)
    assert (params["align"]["module"], params["align"]["__estimator__"]) == \
        (__name__, "ShiftedProcrustes")
    assert (params["adapt"]["module"], params["adapt"]["__estimator__"]) == \
        ("my_package", "MyRidge")
    loaded = ERAAdapter.load(path)
    assert type(loaded.align) is ShiftedProcrustes and type(loaded.adapt) is MyRidge
    assert loaded.adapt.alpha == 2.0
    np.testing.assert_array_equal(loaded.transform(X), est.transform(X))


def test_saving_an_unregistered_solver_names_the_class_and_the_fix(tmp_path):
    X, Y = _pairs()
    est = ERAAdapter(align=UnregisteredProcrustes()).fit_align(X, Y)
    with pytest.raises(TypeError, match=r"align holds a .*UnregisteredProcrustes, which cannot be "
                                        r"saved.*era_sklearn\.register_solver\(YourSolver\)"):
        est.save(tmp_path / "a")
    assert not list(tmp_path.iterdir())


def test_loading_an_unregistered_class_names_the_fix_and_imports_nothing(tmp_path):
    X, Y = _pairs()
    path = ERAAdapter(align=ShiftedProcrustes()).fit_align(X, Y).save(tmp_path / "a")
    # As in a process that never registered it (or a file from elsewhere): an unknown name.
    _rewrite_params(path, lambda p: p["align"].update(module="antigravity",
                                                      __estimator__="ShiftedProcrustes"))
    with pytest.raises(ValueError, match=r"class antigravity\.ShiftedProcrustes is not allowed.*"
                                         r"era_sklearn\.register_solver"):
        ERAAdapter.load(path)
    assert "antigravity" not in sys.modules  # importing it would open a web browser


def test_a_class_reached_by_its_module_path_but_not_registered_is_refused(tmp_path):
    """era_sklearn.align.Procrustes is registered; the private base class it derives from
    sits in the same module but is not, and the registry, not the module, decides."""
    X, Y = _pairs()
    path = ERAAdapter(align=Procrustes()).fit_align(X, Y).save(tmp_path / "a")
    _rewrite_params(path, lambda p: p["align"].update(__estimator__="_ClosedFormAlign"))
    with pytest.raises(ValueError, match=r"class era_sklearn\.align\._ClosedFormAlign is not "
                                         "allowed"):
        ERAAdapter.load(path)


@pytest.mark.parametrize("module", ["era_sklearn._statistics", "era_sklearn._stage1.statistics"],
                         ids=["0.2_path", "4685f9f_path"])
def test_dataclass_records_of_earlier_module_paths_load(module, tmp_path):
    """0.2 recorded PairStatistics under era_sklearn._statistics; the subpackage move wrote
    era_sklearn._stage1.statistics. Both names resolve; the first is the one written."""
    X, Y = _pairs()
    est = ERAAdapter().fit_align(X, Y)
    est.extra_stats_ = PairStatistics.from_arrays(X, Y)
    path = est.save(tmp_path / "a")
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    attributes = json.loads(meta["attributes"])
    assert attributes["extra_stats_"]["module"] == "era_sklearn._statistics"
    attributes["extra_stats_"]["module"] = module
    meta["attributes"] = json.dumps(attributes)
    meta["sha256"] = safetensors_file.digest(meta, arrays)
    save_file(arrays, path, metadata=meta)
    loaded = ERAAdapter.load(path)
    assert isinstance(loaded.extra_stats_, PairStatistics)
    np.testing.assert_array_equal(loaded.extra_stats_.xty, est.extra_stats_.xty)


def test_register_solver_refuses_what_it_cannot_save():
    with pytest.raises(TypeError, match="scikit-learn estimator class"):
        register_solver(object)
    with pytest.raises(TypeError, match="scikit-learn estimator class"):
        register_solver(Procrustes())


def test_registry_names_are_unique_per_class():
    registry = ClassRegistry({"pkg.A": Procrustes})
    with pytest.raises(ValueError, match="'pkg.A' is already registered for"):
        registry.register(LeastSquares, "pkg.A")
    with pytest.raises(ValueError, match="already registered as 'pkg.A'"):
        registry.register(Procrustes, "pkg.B")
    with pytest.raises(ValueError, match="dotted string"):
        registry.register(LeastSquares, "A")
    assert registry.register(Procrustes, "pkg.A") is Procrustes  # the same pair again: no-op
    assert registry.resolve("pkg.A") is Procrustes and registry.name_of(Procrustes) == "pkg.A"
    assert registry.name_of(ShiftedProcrustes) is None  # exact classes only, not subclasses


def test_a_class_defined_again_replaces_its_predecessor():
    """Re-running a notebook cell (or a doctest) defines a new class of the same name."""
    registry = ClassRegistry()

    def define():
        class Mine(Procrustes):
            pass
        return Mine

    first, second = define(), define()
    registry.register(first, "pkg.Mine")
    registry.register(second, "pkg.Mine")
    assert registry.resolve("pkg.Mine") is second and registry.name_of(first) is None
