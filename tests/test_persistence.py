"""Pickle-free save/load of ERAAdapter (``era_sklearn._persistence``)."""

import json
import zipfile

import joblib
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from era_sklearn import ERAAdapter, _persistence


def _pairs(dtype, n=120, d_q=12, d_d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_q))
    Y = X @ rng.normal(size=(d_q, d_d)) + 0.1 * rng.normal(size=(n, d_d))
    return X.astype(dtype), Y.astype(dtype)


def _hybrid_X(X, Y):
    return np.hstack([X, Y])


def _fitted(kind, dtype):
    """A fitted adapter of each kind and the X to transform with it."""
    X, Y = _pairs(dtype)
    if kind == "align_only":
        return ERAAdapter(align="lstsq", center=True).fit_align(X, Y), X
    if kind == "closed_form":
        est = ERAAdapter(random_state=0).fit_align(X, Y)
        return est.fit(X[:40], Y[:40], groups=np.arange(40) // 2), X
    if kind == "hybrid":
        Xh = _hybrid_X(X, Y)
        return ERAAdapter(hybrid=True, random_state=0).fit_align(Xh, Y).fit(Xh[:40], Y[:40]), Xh
    if kind == "streamed":
        return ERAAdapter(align="lstsq").partial_fit_align(X[:60], Y[:60]), X
    est = ERAAdapter(adapt="contrastive", model="mlp", adapt__max_epochs=3,
                     module__hidden_size=8, random_state=0)
    return est.fit_align(X, Y).fit(X[:40], Y[:40]), X


KINDS = ["align_only", "closed_form", "hybrid", "streamed", "contrastive_mlp"]


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_gives_identical_transform(kind, dtype, tmp_path):
    est, X = _fitted(kind, dtype)
    path = est.save(tmp_path / "adapter.npz")
    loaded = ERAAdapter.load(path)
    out = loaded.transform(X)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, est.transform(X))
    assert loaded.get_params() == {**est.get_params(), "init": None}
    for name in ("alpha_", "blend_", "history_", "align_history_", "n_features_in_"):
        assert repr(getattr(loaded, name)) == repr(getattr(est, name))


def test_contrastive_mlp_saves_its_branch(tmp_path):
    est, _ = _fitted("contrastive_mlp", np.float32)
    with np.load(est.save(tmp_path / "a.npz"), allow_pickle=False) as npz:
        branch = [k for k in npz.files if k.startswith("module_params__")]
    assert sorted(branch) == sorted(f"module_params__{k}" for k in est.module_params_)
    assert ERAAdapter.load(tmp_path / "a.npz").get_params()["adapt__max_epochs"] == 3


def test_streamed_statistics_resume(tmp_path):
    """align_stats_ is saved, so partial_fit_align continues after a load."""
    X, Y = _pairs(np.float64)
    est = ERAAdapter(align="lstsq").partial_fit_align(X[:60], Y[:60])
    resumed = ERAAdapter.load(est.save(tmp_path / "s.npz")).partial_fit_align(X[60:], Y[60:])
    np.testing.assert_array_equal(resumed.coef_, est.partial_fit_align(X[60:], Y[60:]).coef_)


def test_feature_names_round_trip(tmp_path):
    pd = pytest.importorskip("pandas")
    X, Y = _pairs(np.float64)
    df = pd.DataFrame(X, columns=[f"q{i}" for i in range(X.shape[1])])
    loaded = ERAAdapter.load(ERAAdapter().fit_align(df, Y).save(tmp_path / "f.npz"))
    assert list(loaded.feature_names_in_) == list(df.columns)
    assert loaded.feature_names_in_.dtype == object  # as scikit-learn stores them
    np.testing.assert_array_equal(loaded.get_feature_names_out(), [f"eraadapter{i}" for i in
                                                                   range(6)])


def test_init_is_dropped_with_a_note(tmp_path):
    X, Y = _pairs(np.float64)
    source = ERAAdapter().fit_align(X, Y)
    est = ERAAdapter(init=source, alpha=1.0).fit(X[:30], Y[:30])
    path = est.save(tmp_path / "i.npz")
    meta = _meta(path)
    assert "init" in meta["dropped_params"]
    loaded = ERAAdapter.load(path)
    assert loaded.init is None
    np.testing.assert_array_equal(loaded.transform(X), est.transform(X))


def test_suffix_is_added_like_np_savez(tmp_path):
    est, _ = _fitted("align_only", np.float64)
    assert est.save(tmp_path / "model") == tmp_path / "model.npz"


def test_joblib_round_trip(dtype, tmp_path):
    est, X = _fitted("closed_form", dtype)
    joblib.dump(est, tmp_path / "a.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "a.joblib").transform(X),
                                  est.transform(X))


def test_load_never_allows_pickle(tmp_path, monkeypatch):
    est, _ = _fitted("contrastive_mlp", np.float32)
    path = est.save(tmp_path / "a.npz")
    real_load, calls = np.load, []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    ERAAdapter.load(path)
    assert calls == [False]
    monkeypatch.undo()
    # No member is an object array: each one's .npy header says so.
    with zipfile.ZipFile(path) as zf:
        headers = [zf.read(name)[:200] for name in zf.namelist()]
    assert headers and not any(b"'descr': '|O'" in h for h in headers)
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def _meta(path):
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(npz["__meta__"].item())


def _rewrite(path, meta=None, drop=None, replace=None):
    """Rewrite an archive with edited metadata or members (a tampered file)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != drop}
    if meta is not None:
        arrays["__meta__"] = np.array(json.dumps(meta))
    arrays.update(replace or {})
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.fixture
def saved(tmp_path):
    est, _ = _fitted("closed_form", np.float32)
    return est.save(tmp_path / "adapter.npz")


@pytest.mark.parametrize("keep", [0.5, 0.9, 10])
def test_truncated_file_fails_clearly(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(ValueError, match="not a valid era-sklearn adapter file") as info:
        ERAAdapter.load(saved)
    assert str(saved) in str(info.value)


def test_newer_format_version_is_refused(saved):
    meta = _meta(saved)
    meta["format_version"] = _persistence.FORMAT_VERSION + 1
    _rewrite(saved, meta=meta)
    with pytest.raises(ValueError, match="written by a newer era-sklearn") as info:
        ERAAdapter.load(saved)
    assert "format version 2" in str(info.value) and "format version 1" in str(info.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"drop": "__meta__"}, "no '__meta__' entry"),
        ({"drop": "coef_"}, r"missing arrays \['coef_'\]"),
        ({"replace": {"coef_": np.zeros((3, 6), np.float32)}}, "array 'coef_' has shape"),
        ({"replace": {"coef_": np.zeros((12, 6), np.float32)}}, "does not match its checksum"),
    ],
    ids=["no_meta", "missing_array", "wrong_shape", "edited_values"],
)
def test_tampered_archive_fails_clearly(saved, edit, message):
    _rewrite(saved, **edit)
    with pytest.raises(ValueError, match=message):
        ERAAdapter.load(saved)


def test_meta_dims_disagreeing_with_arrays_fail_clearly(saved):
    meta = _meta(saved)
    meta["values"]["n_features_in_"] = 7
    _rewrite(saved, meta=meta)
    with pytest.raises(ValueError, match=r"coef_ has shape \(12, 6\), expected \(7, 6\)"):
        ERAAdapter.load(saved)


def test_crash_mid_save_leaves_existing_file_intact(saved, monkeypatch):
    before = saved.read_bytes()

    def crashing_savez(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(np, "savez", crashing_savez)
    est, _ = _fitted("align_only", np.float64)
    with pytest.raises(KeyboardInterrupt):
        est.save(saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temporary left


def test_unfitted_save_raises_not_fitted(tmp_path):
    with pytest.raises(NotFittedError):
        ERAAdapter().save(tmp_path / "a.npz")
    assert not list(tmp_path.iterdir())


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="No adapter file"):
        ERAAdapter.load(tmp_path / "absent.npz")
