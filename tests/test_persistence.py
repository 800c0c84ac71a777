"""Pickle-free save/load on safetensors (``era_sklearn._io.persistence``), hostile files included."""

import copy
import functools
import json
import subprocess
import sys
import textwrap
import warnings
import zipfile
import zlib
from numbers import Real
from pathlib import Path
from typing import ClassVar

import joblib
import numpy as np
import pytest
from _bounds import assert_within, transform_reference
from _few_labels import stage2_data
from safetensors import safe_open
from safetensors.numpy import save_file
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import Interval, StrOptions

from era_sklearn import ERAAdapter, convert_legacy_adapter
from era_sklearn._io import persistence as _persistence
from era_sklearn._io import safetensors_file as _container
from era_sklearn._io.registry import ClassRegistry
from era_sklearn._io.schema import Attribute, Dimension, StateSchema
from era_sklearn._io.state_codec import fitted_attributes

ROOT = Path(__file__).resolve().parents[1]
LEGACY_FILE = ROOT / "tests" / "data" / "adapter_0.1.0.npz"  # written by era-sklearn 0.1.0


def _pairs(dtype, n=120, d_q=12, d_d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_q))
    Y = X @ rng.normal(size=(d_q, d_d)) + 0.1 * rng.normal(size=(n, d_d))
    return X.astype(dtype), Y.astype(dtype)


STAGE1_PARAM = "align"  # a fitted adapter whose stage-1 map is reused


def _config(kind):
    from era_sklearn.adapt import Contrastive, Ridge
    from era_sklearn.align import LeastSquares

    return {
        "align_only": {"align": LeastSquares(center=True)},
        "closed_form": {"adapt": Ridge(), "random_state": 0},
        "hybrid": {"hybrid": True, "adapt": "ridge", "random_state": 0},
        "streamed": {"align": LeastSquares()},
        # No fallback and a small validation floor: the trained MLP branch is kept.
        "contrastive_mlp": {"adapt": Contrastive(model="mlp", hidden_size=8, max_epochs=3,
                                                 min_valid_queries=2, fallback=False,
                                                 device="cpu"), "random_state": 0},
        "from_source": {"adapt": Ridge(alpha=1.0)},
    }[kind]


def _set_alpha(params, value):
    """Edit the stage-2 ridge strength in saved parameters (a solver's own since issue 11)."""
    params["adapt"]["params"]["alpha"] = value


def _fitted(kind, dtype):
    """A fitted adapter of each kind (a fresh copy: tests may change it) and its X."""
    est, X = _fit(kind, dtype)
    return copy.deepcopy(est), X


@functools.cache
def _fit(kind, dtype):
    X, Y = _pairs(dtype)
    est = ERAAdapter(**_config(kind))
    if kind == "align_only":
        return est.fit_align(X, Y), X
    if kind == "closed_form":
        return est.fit_align(X, Y).fit(X[:40], Y[:40], groups=np.arange(40) // 2), X
    if kind == "hybrid":
        Xh = np.hstack([X, Y])
        return est.fit_align(Xh, Y).fit(Xh[:40], Y[:40]), Xh
    if kind == "streamed":
        return est.partial_fit_align(X[:60], Y[:60]), X
    return est.fit_align(X, Y).fit(X[:40], Y[:40]), X


KINDS = ["align_only", "closed_form", "hybrid", "streamed",
         pytest.param("contrastive_mlp", marks=pytest.mark.torch)]


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


# -- round trips -----------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_gives_identical_transform(kind, dtype, tmp_path):
    est, X = _fitted(kind, dtype)
    path = est.save(tmp_path / "adapter.safetensors")
    loaded = ERAAdapter.load(path)
    out = loaded.transform(X)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, est.transform(X))
    assert repr(loaded.get_params()) == repr(est.get_params())  # solver objects: by value
    fitted = fitted_attributes(est, ERAAdapter._state_schema)
    assert set(fitted_attributes(loaded, ERAAdapter._state_schema)) == set(fitted)
    for name, value in fitted.items():
        assert repr(getattr(loaded, name)) == repr(value), name


@pytest.mark.torch
def test_contrastive_mlp_saves_its_branch_as_tensors(tmp_path):
    est, _ = _fitted("contrastive_mlp", np.float32)
    assert est.module_params_ is not None  # the case exercises the MLP branch
    with safe_open(est.save(tmp_path / "a"), framework="numpy") as f:
        branch = {k: f.get_tensor(k) for k in f.keys() if k.startswith("module_params_/")}  # noqa: SIM118 (not a dict)
    assert sorted(branch) == sorted(f"module_params_/{k}" for k in est.module_params_)
    for key, value in est.module_params_.items():
        np.testing.assert_array_equal(branch[f"module_params_/{key}"], value)


def test_save_and_load_take_the_same_path(tmp_path):
    """0.1 wrote save("a") to a.npz and load("a") failed; now the path is kept as given."""
    est, X = _fitted("align_only", np.float64)
    assert est.save(tmp_path / "a") == tmp_path / "a"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    np.testing.assert_array_equal(ERAAdapter.load(tmp_path / "a").transform(X), est.transform(X))
    np.testing.assert_array_equal(ERAAdapter.load(str(tmp_path / "a")).transform(X),
                                  est.transform(X))


def test_streamed_adapter_round_trips_but_cannot_resume(tmp_path):
    """The streamed map is saved; its statistics are not, so streaming more is refused."""
    X, Y = _pairs(np.float64)
    est = ERAAdapter(**_config("streamed")).partial_fit_align(X[:60], Y[:60])
    loaded = ERAAdapter.load(est.save(tmp_path / "s"))
    np.testing.assert_array_equal(loaded.transform(X), est.transform(X))
    with pytest.raises(ValueError, match="partial_fit_align cannot continue it"):
        loaded.partial_fit_align(X[60:], Y[60:])


def test_feature_names_round_trip(tmp_path):
    pd = pytest.importorskip("pandas")
    X, Y = _pairs(np.float64)
    df = pd.DataFrame(X, columns=[f"q{i}" for i in range(X.shape[1])])
    loaded = ERAAdapter.load(ERAAdapter().fit_align(df, Y).save(tmp_path / "f"))
    assert list(loaded.feature_names_in_) == list(df.columns)
    assert loaded.feature_names_in_.dtype == object  # as scikit-learn stores them
    np.testing.assert_array_equal(loaded.transform(df), ERAAdapter().fit_align(df, Y).transform(df))


@pytest.mark.parametrize("frozen", [False, True], ids=["adapter", "frozen"])
def test_fitted_adapter_parameter_is_stored_and_restored_fitted(frozen, tmp_path):
    """An adapter given as a parameter (0.1's init=, 0.2's align=) keeps its own fitted map."""
    X, Y = _pairs(np.float64)
    source = ERAAdapter(**_config("align_only")).fit_align(X, Y)
    stage1 = FrozenEstimator(source) if frozen else source
    est = ERAAdapter(**{STAGE1_PARAM: stage1}, **_config("from_source")).fit(X[:30], Y[:30])
    path = est.save(tmp_path / "i")
    with safe_open(path, framework="numpy") as f:
        names = list(f.keys())
    stored = f"{STAGE1_PARAM}/estimator/align_coef_" if frozen else f"{STAGE1_PARAM}/align_coef_"
    assert stored in names
    loaded = ERAAdapter.load(path)
    restored = getattr(loaded, STAGE1_PARAM)
    inner = restored.estimator if frozen else restored
    assert isinstance(restored, FrozenEstimator) == frozen
    assert repr(inner.get_params()) == repr(source.get_params())
    np.testing.assert_array_equal(inner.align_coef_, source.align_coef_)
    np.testing.assert_array_equal(inner.transform(X), source.transform(X))
    np.testing.assert_array_equal(loaded.transform(X), est.transform(X))


def test_random_state_instance_is_saved_as_none_with_a_warning(tmp_path):
    X, Y = _pairs(np.float64)
    est = ERAAdapter(random_state=np.random.RandomState(0)).fit_align(X, Y)
    with pytest.warns(UserWarning, match="random_state is a RandomState instance"):
        path = est.save(tmp_path / "r")
    assert ERAAdapter.load(path).random_state is None


def test_unsavable_parameter_is_a_clear_type_error(tmp_path):
    X, Y = _pairs(np.float64)
    est = ERAAdapter().fit_align(X, Y)
    est.blend = lambda: 0.5
    with pytest.raises(TypeError, match="blend holds a builtins.function"):
        est.save(tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_joblib_round_trip(dtype, tmp_path):
    est, X = _fitted("closed_form", dtype)
    joblib.dump(est, tmp_path / "a.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "a.joblib").transform(X),
                                  est.transform(X))


# -- solver objects (registered classes only) ------------------------------------
class _Solver(BaseEstimator):
    """Stands in for the solver objects of era_sklearn.align / era_sklearn.adapt."""

    _parameter_constraints: ClassVar[dict] = {"alpha": [Interval(Real, 0, None, closed="left")],
                                              "loss": [StrOptions({"cosine", "mse"})]}

    def __init__(self, alpha=0.1, loss="cosine"):
        self.alpha = alpha
        self.loss = loss


class _Estimator(BaseEstimator):
    """A minimal adapter-like estimator whose parameter takes a solver object.

    Its own schema and registry: the file format knows no estimator but the class it is given.
    """

    _parameter_constraints: ClassVar[dict] = {"align": [StrOptions({"lstsq"}), _Solver],
                                              "normalize_output": ["boolean"]}
    _state_schema = StateSchema(
        dimensions=(Dimension("d", attribute="n_features_in_"),),
        attributes=(Attribute("coef_", "float_array", ("d", "d"), required=True, finite=True),
                    Attribute("intercept_", "float_array", ("d",), required=True)),
        classes=ClassRegistry({f"{__name__}._Solver": _Solver}),
    )

    def __init__(self, align="lstsq", normalize_output=True):
        self.align = align
        self.normalize_output = normalize_output

    def fit(self, X):
        self.n_features_in_ = X.shape[1]
        self.coef_, self.intercept_ = np.eye(X.shape[1]), np.zeros(X.shape[1])
        return self


def test_solver_object_round_trip(tmp_path):
    est = _Estimator(align=_Solver(alpha=2.5, loss="mse")).fit(np.ones((3, 4)))
    path = _persistence.save_adapter(est, tmp_path / "s")
    params = json.loads(_metadata(path)["params"])
    assert params["align"] == {"__estimator__": "_Solver", "module": __name__,
                               "params": {"alpha": 2.5, "loss": "mse"}}
    loaded = _persistence.load_adapter(_Estimator, path)
    assert isinstance(loaded.align, _Solver)
    assert loaded.align.get_params() == {"alpha": 2.5, "loss": "mse"}


@pytest.mark.parametrize("edit, message", [
    ({"alpha": -5.0}, "'alpha' parameter of _Solver must be a float in the range"),
    ({"loss": "bogus"}, "'loss' parameter of _Solver must be a str among"),
    ({"alhpa": 1.0}, r"unknown parameters \['alhpa'\] for _Solver"),
], ids=["negative_alpha", "bogus_loss", "unknown_name"])
def test_edited_solver_parameters_are_refused(tmp_path, edit, message):
    est = _Estimator(align=_Solver()).fit(np.ones((3, 4)))
    path = _persistence.save_adapter(est, tmp_path / "s")
    _tamper(path, edit_params=lambda p: p["align"]["params"].update(edit))
    with pytest.raises(ValueError, match=message):
        _persistence.load_adapter(_Estimator, path)


def test_class_outside_the_allow_list_is_never_imported(tmp_path):
    est = _Estimator(align=_Solver()).fit(np.ones((3, 4)))
    path = _persistence.save_adapter(est, tmp_path / "s")
    assert "antigravity" not in sys.modules
    _tamper(path, edit_params=lambda p: p["align"].update(module="antigravity", __estimator__="x"))
    with pytest.raises(ValueError, match="class antigravity.x is not allowed"):
        _persistence.load_adapter(_Estimator, path)
    assert "antigravity" not in sys.modules  # importing it would open a web browser


# -- hostile and damaged files: every metadata field is validated ---------------
def _metadata(path):
    with safe_open(path, framework="numpy") as f:
        return f.metadata()


def _tamper(path, *, edit_params=None, edit_attributes=None, edit_meta=None, tensors=None,
            resign=True):
    """Rewrite a saved file with edits, re-computing its sha256 unless resign=False.

    Re-signing is what a deliberate attacker does: the validation must not rest on the digest.
    """
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    for key, edit in (("params", edit_params), ("attributes", edit_attributes)):
        if edit is not None:
            value = json.loads(meta[key])
            edit(value)
            meta[key] = json.dumps(value)
    if edit_meta is not None:
        edit_meta(meta)
    arrays.update(tensors or {})
    if resign:
        meta["sha256"] = _container.digest(meta, arrays)
    save_file(arrays, path, metadata=meta)


@pytest.fixture
def saved(tmp_path):
    est, X = _fitted("closed_form", np.float32)
    return est.save(tmp_path / "adapter.safetensors"), est, X


@pytest.mark.parametrize("edit, message", [
    ({"align": "bogus"}, "'align' parameter of ERAAdapter must be a str among"),
    (lambda p: _set_alpha(p, -5), "'alpha' parameter of (ERAAdapter|Ridge) must be"),
    ({"normalize_output": "yes"}, "'normalize_output' parameter of ERAAdapter must be"),
    ({"alhpa": 1.0}, r"unknown parameters \['alhpa'\] for ERAAdapter"),
    ({"__class__": "x"}, r"unknown parameters \['__class__'\] for ERAAdapter"),
], ids=["bogus_align", "negative_alpha", "non_bool", "unknown_name", "dunder_name"])
def test_edited_parameters_are_validated(saved, edit, message):
    path, _, _ = saved
    _tamper(path, edit_params=edit if callable(edit) else lambda p: p.update(edit))
    with pytest.raises(ValueError, match=message) as info:
        ERAAdapter.load(path)
    assert str(path) in str(info.value)


def test_missing_parameter_is_refused(saved):
    path, _, _ = saved
    _tamper(path, edit_params=lambda p: p.pop("normalize_output"))
    with pytest.raises(ValueError, match=r"parameters \['normalize_output'\] .* missing"):
        ERAAdapter.load(path)


def test_edit_without_resigning_is_detected(saved):
    path, _, _ = saved
    _tamper(path, edit_params=lambda p: p.update(normalize_output=False), resign=False)
    with pytest.raises(ValueError, match="does not match the sha256"):
        ERAAdapter.load(path)


def test_resigned_flag_flip_loads_as_the_adapter_it_describes(saved):
    """A valid value cannot be told from an edit (the digest is not a signature): the file then
    loads as exactly the configuration it states, consistently, never half-applied."""
    path, est, X = saved
    _tamper(path, edit_params=lambda p: p.update(normalize_output=False))
    loaded = ERAAdapter.load(path)
    assert loaded.normalize_output is False
    expected = est.set_params(normalize_output=False).transform(X)
    np.testing.assert_array_equal(loaded.transform(X), expected)
    assert not np.allclose(np.linalg.norm(expected, axis=1), 1.0)


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.update(n_features_in_=7), r"coef_ has shape \(12, 6\), expected \(7, n_doc"),
    (lambda a: a.update(n_features_out_=5), r"n_features_out_ is 5 but n_doc_features \(coef_.shape\[1\]\) is 6"),
    (lambda a: a.update(fit=1), "'fit' is not a fitted attribute name"),
    (lambda a: a.update(get_params_=1), None),  # a new public name is allowed: checked below
    (lambda a: a.update(normalize_output_=True), None),
    (lambda a: a.update(_secret=1), "'_secret' is not a fitted attribute name"),
    # coef_'s tensor is then referenced nowhere: refused before any tensor is read.
    (lambda a: a.update(coef_={"__ndarray__": "intercept_"}), r"tensors \['coef_'\] are not ref"),
    (lambda a: a.update(x_={"__ndarray__": "coef_"}), "already used tensor 'coef_'"),
    (lambda a: a.update(x_={"__ndarray__": "nowhere"}), "missing or already used tensor"),
    (lambda a: a.update(coef_={"__ndarray__": "coef_", "x": 1}), "must have exactly the keys"),
    (lambda a: a.update(x_={"__dtype__": "object"}), "is the dtype 'object'"),
    (lambda a: a.update(x_={"__float__": "1e999"}), "is the float '1e999'"),
    (lambda a: a.update(x_={"__dataclass__": "Popen", "module": "subprocess", "fields": {}}),
     "class subprocess.Popen is not allowed"),
], ids=["n_features_in", "n_features_out", "method_name", "new_public_1", "new_public_2",
        "private_name", "swapped_tensor", "reused_tensor", "missing_tensor", "extra_tag_key", "bad_dtype",
        "bad_float", "foreign_dataclass"])
def test_edited_fitted_attributes_are_validated(saved, edit, message):
    path, est, X = saved
    _tamper(path, edit_attributes=edit)
    if message is None:  # an inert extra fitted attribute: loads, transform unchanged
        np.testing.assert_array_equal(ERAAdapter.load(path).transform(X), est.transform(X))
        return
    with pytest.raises(ValueError, match=message):
        ERAAdapter.load(path)


@pytest.mark.parametrize("name", ["coef_", "intercept_", "align_coef_"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused(saved, name, bad):
    path, est, _ = saved
    weights = getattr(est, name).copy()
    weights.flat[3] = bad
    _tamper(path, tensors={name: weights})
    with pytest.raises(ValueError, match=f"{name} contains NaN or infinity"):
        ERAAdapter.load(path)


def test_unreferenced_tensor_is_refused(saved):
    path, _, _ = saved
    _tamper(path, tensors={"extra": np.zeros(3)})
    with pytest.raises(ValueError, match=r"tensors \['extra'\] are not referenced"):
        ERAAdapter.load(path)


def test_wrong_shape_tensor_is_refused(saved):
    path, _, _ = saved
    _tamper(path, tensors={"coef_": np.zeros((3, 6), np.float32)})
    with pytest.raises(ValueError, match=r"coef_ has shape \(3, 6\), expected \(12, n_doc"):
        ERAAdapter.load(path)


@pytest.mark.torch
def test_non_finite_mlp_weights_are_refused(tmp_path):
    est, _ = _fitted("contrastive_mlp", np.float32)
    path = est.save(tmp_path / "m")
    bad = est.module_params_["mlp_coef_0"].copy()
    bad[0, 0] = np.nan
    _tamper(path, tensors={"module_params_/mlp_coef_0": bad})
    with pytest.raises(ValueError, match=r"module_params_\['mlp_coef_0'\] contains NaN"):
        ERAAdapter.load(path)


@pytest.mark.torch
def test_inconsistent_mlp_layers_are_refused(tmp_path):
    est, _ = _fitted("contrastive_mlp", np.float32)
    path = est.save(tmp_path / "m")
    _tamper(path, tensors={"module_params_/mlp_coef_0": np.zeros((12, 5), np.float32)})
    with pytest.raises(ValueError, match=r"module_params_ layer 0 has shapes \(12, 5\) and \(8,\)"):
        ERAAdapter.load(path)


def test_save_refuses_non_finite_weights(tmp_path):
    est, _ = _fitted("align_only", np.float64)
    est.coef_[0, 0] = np.nan
    with pytest.raises(ValueError, match="coef_ contains NaN"):
        est.save(tmp_path / "x")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format_version="3"),
     "written by a newer era-sklearn .*file format version 3.*reads file format version 2"),
    (lambda m: m.update(format="other"), "its format is 'other'"),
    (lambda m: m.update(extra="1"), r"unknown keys \['extra'\]"),
    (lambda m: m.pop("versions"), r"lacks \['versions'\]"),
    (lambda m: m.update({"class": "HNSWIndex"}), "holds a 'HNSWIndex', not a ERAAdapter"),
    (lambda m: m.update(params="[" * 100000 + "]" * 100000), "params is not valid JSON"),
    (lambda m: m.update(attributes='{"alpha_": NaN}'), "non-JSON constant NaN"),
    (lambda m: m.update(attributes='{"a_": 1, "a_": 2}'), "duplicate keys"),
], ids=["newer_version", "format", "unknown_key", "missing_key", "class", "deep_nesting",
        "nan_literal", "duplicate_keys"])
def test_edited_metadata_is_refused(saved, edit, message):
    path, _, _ = saved
    _tamper(path, edit_meta=edit)
    with pytest.raises(ValueError, match=message):
        ERAAdapter.load(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 10, 4])
def test_truncated_file_fails_clearly(saved, keep):
    path, _, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(ValueError, match="not a valid era-sklearn adapter file") as info:
        ERAAdapter.load(path)
    assert str(path) in str(info.value)


def _raw_safetensors(path, header, data=b""):
    """Write a safetensors-framed file with an arbitrary (hostile) header."""
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def _hostile_files(tmp_path, saved_path):
    """Small files that claim huge allocations; each must be refused cheaply."""
    meta = _metadata(saved_path)
    one_mb = b"\0" * 2**20
    return {
        # A 1 MB file whose table declares a 8 TiB tensor.
        "huge_tensor": _raw_safetensors(tmp_path / "t", {
            "__metadata__": meta,
            "coef_": {"dtype": "F64", "shape": [2**20, 2**20], "data_offsets": [0, 2**43]}},
            one_mb),
        # The length prefix claims a 4 EiB header.
        "huge_header_claim": (tmp_path / "h").write_bytes((2**62).to_bytes(8, "little") + one_mb)
        and tmp_path / "h",
        # A header just under the limit made of empty JSON lists (the most objects per byte).
        "json_bomb_header": _raw_safetensors(tmp_path / "j", {
            "__metadata__": meta,
            "x": {"dtype": "F32", "shape": [[]] * ((_container.MAX_HEADER_BYTES - 4096) // 4),
                  "data_offsets": [0, 0]}}),
        # Metadata re-signed, with attributes a JSON bomb of the same size.
        "json_bomb_metadata": _raw_safetensors(tmp_path / "m", {"__metadata__": _resigned(
            {**meta, "attributes": "[" + ",".join(["[]"] * ((2**20 - 8192) // 3)) + "]"})}),
        # era-sklearn 0.1 archive with a compressed extra member that inflates to 1 GiB.
        "legacy_zip_bomb": _legacy_zip_bomb(tmp_path / "z.npz"),
    }


def _resigned(meta):
    return {**meta, "sha256": _container.digest(meta, {})}


class _RepeatingDeflate:
    """Deflates 16 MiB zero chunks fast: after a full flush, every such chunk compresses to the
    same bytes, so they are compressed once (building a 1 GiB bomb at zlib speed takes ~15 s)."""

    def __init__(self):
        self._zlib = zlib.compressobj(9, zlib.DEFLATED, -15)
        self._cache = {}

    def compress(self, data):
        if len(self._cache) < 2 or data not in self._cache:  # the first chunk sets the window
            out = self._zlib.compress(data) + self._zlib.flush(zlib.Z_FULL_FLUSH)
            self._cache.setdefault(data, out)
            return out
        return self._cache[data]

    def flush(self):
        return self._zlib.flush()


def _legacy_zip_bomb(path):
    """0.1's archive plus a compressed member that inflates to 1 GiB: ~1 MB on disk."""
    path.write_bytes(LEGACY_FILE.read_bytes())
    zero = bytes(2**24)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf, \
            zf.open("extra.npy", "w", force_zip64=True) as f:
            f._compressor = _RepeatingDeflate()  # test-only shortcut into zipfile's writer
            f.write(b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, "
                    b"'shape': (134217728,), }".ljust(118) + b"\n" + zero)
            for _ in range(63):
                f.write(zero)
    with zipfile.ZipFile(path) as zf:  # a well-formed archive, as the attack needs
        info = zf.getinfo("extra.npy")
        assert info.file_size > 2**30 and info.compress_size < 2**21
    return path


_MEASURE = textwrap.dedent("""
    import json, re, sys, tracemalloc
    import numpy as np
    from era_sklearn import ERAAdapter
    from era_sklearn import convert_legacy_adapter

    def status_mb(key):
        return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

    def growth_mb(call, *args):
        # The larger of two runs of the call: peak resident memory minus resident memory before
        # (Linux: writing 5 to clear_refs resets the peak, VmHWM, to the current resident size;
        # sees native and mapped memory), and tracemalloc's peak (Python and numpy allocations,
        # even where they reuse memory an earlier case freed, which RSS would not show).
        open("/proc/self/clear_refs", "w").write("5")
        before = status_mb("VmRSS")
        error = run(call, *args)
        rss = status_mb("VmHWM") - before
        tracemalloc.start()
        run(call, *args)
        traced = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        return [max(rss, traced), error]

    def run(call, *args):
        try:
            call(*args)
        except ValueError as exc:
            return str(exc)

    out = {}
    for name, path in json.loads(sys.argv[1]).items():
        out[name + "/load"] = growth_mb(ERAAdapter.load, path)
        if name.startswith("legacy"):
            out[name + "/convert"] = growth_mb(convert_legacy_adapter, path, path + ".o")
    out["control_300MB"] = growth_mb(lambda: np.ones(300 * 2**20 // 8).sum())
    print(json.dumps(out))
""")


def _memory_growth(files):
    """``{case: [MB, error or None]}`` of loading each file, measured by _MEASURE in a child."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps({k: str(v) for k, v in files.items()})],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    growth = json.loads(result.stdout.splitlines()[-1])
    print({k: round(v[0], 1) for k, v in growth.items()})  # MB; shown with pytest -s
    assert growth.pop("control_300MB")[0] > 250  # the probe sees a real allocation
    return growth


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures with Linux /proc")
def test_hostile_files_are_refused_in_bounded_memory(saved, tmp_path):
    """Issue 12: a 1 MB hostile file drove 0.1's load to 1.1 GB. Measured here in a subprocess
    (peak resident memory growth while loading each file), not assumed. The control case shows
    that the probe sees a real allocation."""
    files = _hostile_files(tmp_path, saved[0])
    assert all(p.stat().st_size < 2**21 for p in files.values())  # all small files
    growth = _memory_growth(files)
    for case, (mb, error) in growth.items():
        assert error is not None, case  # every hostile file is refused ...
        assert mb < 40, (case, mb)  # ... without a large allocation
    assert "convert_legacy_adapter" in growth["legacy_zip_bomb/load"][1]
    assert "is compressed" in growth["legacy_zip_bomb/convert"][1]


PADDING_BYTES = 256 * 2**20


def _padded_file(path, saved_path, *, referenced, resign):
    """The saved adapter plus a 256 MiB zero tensor left as a hole: a few kB on disk.

    ``referenced`` names the tensor in an inert extra fitted attribute ``padding_`` (so only
    the digest can refuse the file); ``resign`` recomputes the digest (a valid file when
    referenced, else one that only the "unreferenced tensor" check refuses).
    """
    meta = _metadata(saved_path)
    with safe_open(saved_path, framework="numpy") as f:
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    if referenced:
        attributes = json.loads(meta["attributes"])
        attributes["padding_"] = {"__ndarray__": "padding"}
        meta["attributes"] = json.dumps(attributes)
    if resign:
        meta["sha256"] = _container.digest(
            meta, {**arrays, "padding": np.zeros(PADDING_BYTES // 8)})
    table, data = {}, b""
    for name, a in arrays.items():
        table[name] = {"dtype": _container.DTYPE_CODES[a.dtype], "shape": list(a.shape),
                       "data_offsets": [len(data), len(data) + a.nbytes]}
        data += a.tobytes()
    table["padding"] = {"dtype": "F64", "shape": [PADDING_BYTES // 8],
                        "data_offsets": [len(data), len(data) + PADDING_BYTES]}
    _raw_safetensors(path, {"__metadata__": meta, **table}, data)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size + PADDING_BYTES)  # the hole reads as zeros
    return path


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures with Linux /proc")
def test_large_files_cost_what_they_hold(saved, tmp_path):
    """Issue 17: a sparse file with one extra tensor was read whole, twice over, before the
    "unreferenced tensor" and sha256 checks refused it. Those checks now run before any tensor
    is read (the digest streamed in chunks), and a valid load peaks at about the file's size
    (docs/persistence.md), not twice it (safetensors' reader mapped the file and copied it)."""
    files = {
        "unreferenced": _padded_file(tmp_path / "u", saved[0], referenced=False, resign=True),
        "edited": _padded_file(tmp_path / "e", saved[0], referenced=True, resign=False),
        "valid": _padded_file(tmp_path / "v", saved[0], referenced=True, resign=True),
    }
    growth = _memory_growth(files)
    assert "tensors ['padding'] are not referenced" in growth["unreferenced/load"][1]
    assert "does not match the sha256" in growth["edited/load"][1]
    assert growth["unreferenced/load"][0] < 40 and growth["edited/load"][0] < 40, growth
    mb, error = growth["valid/load"]
    file_mb = files["valid"].stat().st_size / 2**20
    assert error is None and 0.9 * file_mb < mb < 1.1 * file_mb, (mb, file_mb)
    loaded = ERAAdapter.load(files["valid"])
    assert loaded.padding_.shape == (PADDING_BYTES // 8,) and not loaded.padding_.any()
    np.testing.assert_array_equal(loaded.transform(saved[2]), saved[1].transform(saved[2]))


def test_crash_mid_save_leaves_existing_file_intact(saved, monkeypatch):
    path, _, _ = saved
    before = path.read_bytes()

    def crashing_fsync(fd):
        raise KeyboardInterrupt("simulated crash after the temporary was written")

    monkeypatch.setattr(_container.os, "fsync", crashing_fsync)
    est, _ = _fitted("align_only", np.float64)
    with pytest.raises(KeyboardInterrupt):
        est.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_saved_file_has_a_normal_mode(saved):
    path, _, _ = saved
    assert path.stat().st_mode & 0o644 == 0o644  # not mkstemp's 0600


def test_unfitted_save_raises_not_fitted(tmp_path):
    with pytest.raises(NotFittedError):
        ERAAdapter().save(tmp_path / "a")
    assert not list(tmp_path.iterdir())


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="No adapter file"):
        ERAAdapter.load(tmp_path / "absent")


def test_oversized_state_is_refused_at_save(tmp_path):
    est, _ = _fitted("align_only", np.float64)
    est.history_ = {"log": "x" * _container.MAX_HEADER_BYTES}
    with pytest.raises(ValueError, match="over the 1048576-byte limit that load enforces"):
        est.save(tmp_path / "big")


# -- files written by era-sklearn 0.1 ----------------------------------------------
def test_legacy_file_fails_with_conversion_instructions():
    with pytest.raises(ValueError, match=r"era-sklearn 0\.1 adapter file.*convert_legacy_adapter"):
        ERAAdapter.load(LEGACY_FILE)


def test_legacy_save_path_gets_a_hint(tmp_path):
    (tmp_path / "a.npz").write_bytes(LEGACY_FILE.read_bytes())
    with pytest.raises(FileNotFoundError, match="a.npz exists: era-sklearn 0.1 added '.npz'"):
        ERAAdapter.load(tmp_path / "a")


def test_legacy_file_converts_to_the_same_map(tmp_path):
    with np.load(LEGACY_FILE, allow_pickle=False) as npz:  # a trusted fixture
        coef, intercept = npz["coef_"], npz["intercept_"]
        meta = json.loads(npz["__meta__"].item())
    with pytest.warns(UserWarning, match="of the 0.1 file are not valid for this ERAAdapter"):
        path = convert_legacy_adapter(LEGACY_FILE, tmp_path / "new.safetensors")
    loaded = ERAAdapter.load(path)
    X, _ = _pairs(np.float32)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    expected = Xn @ coef + intercept
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(loaded.transform(X), expected, rtol=1e-5, atol=1e-6)
    params = loaded.get_params(deep=False)
    assert (meta["params"]["align"], meta["params"]["random_state"]) == ("lstsq", 0)
    assert (params["align"], params["random_state"]) == ("lstsq", 0)
    assert loaded.alpha_ == float(meta["values"]["alpha_"])  # 0.1 wrote inf as "inf"


def test_legacy_file_with_edited_array_is_refused(tmp_path):
    path = tmp_path / "old.npz"
    with np.load(LEGACY_FILE, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["coef_"] = arrays["coef_"] + 1
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="array 'coef_' does not match its recorded"):
        convert_legacy_adapter(path, tmp_path / "new")


# -- files written by era-sklearn 0.2: Softmax's lam / lams ---------------------------
#: Written by tests/data/make_softmax_0_2_files.py under the 0.2 code (commit 0991e06):
#: 0.2 names -> the 0.3 name and the value the file holds.
SOFTMAX_0_2 = {"lam": ("alpha", 0.05), "lams": ("alphas", [0.5, 0.05])}
SOFTMAX_0_2_EXPECTED = ROOT / "tests" / "data" / "softmax_0.2.0_expected.npz"


def _softmax_0_2_file(old):
    return ROOT / "tests" / "data" / f"softmax_{old}_0.2.0.safetensors"


def _no_future_warnings(action):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = action()
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], caught
    return result


@pytest.mark.parametrize("old", sorted(SOFTMAX_0_2))
def test_softmax_file_of_0_2_loads_under_the_new_names_and_transforms_the_same(old):
    path = _softmax_0_2_file(old)
    with safe_open(path, framework="numpy") as f:
        saved = json.loads(f.metadata()["params"])["adapt"]["params"]
    assert old in saved and SOFTMAX_0_2[old][0] not in saved  # the file holds the 0.2 name
    loaded = _no_future_warnings(lambda: ERAAdapter.load(path))
    new, value = SOFTMAX_0_2[old]
    params = loaded.adapt.get_params()
    assert params[new] == value and params[old] == "deprecated"  # mapped at load
    with np.load(SOFTMAX_0_2_EXPECTED) as expected:
        X, out = expected["X"], expected[f"{old}_transform"]
        np.testing.assert_array_equal(loaded.coef_, expected[f"{old}_coef"])
        assert loaded.penalty_ == expected[f"{old}_penalty"]
    # 0.2's output and ours each lie within the rounding bound of the exact transform.
    _, bound = transform_reference(loaded.coef_, loaded.intercept_, X)
    assert_within(loaded.transform(X), out, 2 * bound, err_msg=f"{path.name} transform")


@pytest.mark.parametrize("old", sorted(SOFTMAX_0_2))
def test_softmax_file_of_0_2_refits_with_the_new_names_and_saves_them(old, tmp_path):
    from era_sklearn.adapt import Softmax

    loaded = ERAAdapter.load(_softmax_0_2_file(old))
    _X_docs, _Y_docs, X, Y = stage2_data()
    new, value = SOFTMAX_0_2[old]
    refit = _no_future_warnings(lambda: loaded.fit(X, Y))  # stage 1 kept from the file
    solver = Softmax(**{new: value}, max_iter=30, temperature=loaded.adapt.temperature)
    same = copy.deepcopy(loaded).set_params(adapt=solver).fit(X, Y)
    np.testing.assert_array_equal(refit.coef_, same.coef_)
    with safe_open(refit.save(tmp_path / "a"), framework="numpy") as f:
        resaved = json.loads(f.metadata()["params"])["adapt"]["params"]
    assert (resaved[new], resaved[old]) == (value, "deprecated")


# -- ERA checkpoints ---------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_era_checkpoint_with_non_finite_weights_is_refused(tmp_path, bad):
    torch = pytest.importorskip("torch")
    weight = np.ones((4, 6), np.float32)
    weight[1, 2] = bad
    torch.save({"proj.weight": torch.from_numpy(weight), "proj.bias": torch.zeros(4)},
               tmp_path / "era.pt")
    with pytest.raises(ValueError, match="the checkpoint holds non-finite"):
        ERAAdapter.from_era_checkpoint(tmp_path / "era.pt")
    weight[1, 2] = 0.5
    torch.save({"proj.weight": torch.from_numpy(weight), "proj.bias": torch.zeros(4)},
               tmp_path / "era.pt")
    adapter = ERAAdapter.from_era_checkpoint(tmp_path / "era.pt")
    np.testing.assert_array_equal(adapter.coef_, weight.T)
    np.testing.assert_array_equal(adapter.intercept_, np.zeros(4, np.float32))


# -- files saved by main before the subpackage move (issue 20) -------------------------
#: Written by tests/data/make_main_files.py under commit d0ce75f; a move that breaks a
#: recorded module path or a state rule fails here.
MAIN_FILES = {"softmax": "X", "hybrid": "X_hybrid", "mlp": "X"}


@pytest.mark.parametrize("kind", sorted(MAIN_FILES))
def test_files_saved_before_the_move_transform_the_same(kind):
    loaded = ERAAdapter.load(ROOT / "tests" / "data" / f"main_{kind}_d0ce75f.safetensors")
    with np.load(ROOT / "tests" / "data" / "main_d0ce75f_expected.npz") as expected:
        X, out = expected[MAIN_FILES[kind]], expected[f"{kind}_transform"]
    np.testing.assert_allclose(loaded.transform(X), out, rtol=0, atol=1e-6)
    if kind == "mlp":
        assert loaded.module_params_  # the residual branch was saved and is used
