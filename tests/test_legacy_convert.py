"""The 0.1 converter's output stays a valid adapter after a refit (issue 20).

Public names only, so the same file runs against older commits: on 4685f9f the
refit-then-save case fails with "n_features_out_ is 6 but coef_ maps to 3".
"""

import warnings
from pathlib import Path

import numpy as np

from era_sklearn import ERAAdapter, convert_legacy_adapter

LEGACY_FILE = Path(__file__).resolve().parent / "data" / "adapter_0.1.0.npz"  # 12 -> 6


def _converted(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 0.1 parameters taking defaults
        return ERAAdapter.load(convert_legacy_adapter(LEGACY_FILE, tmp_path / "a.safetensors"))


def test_converted_adapter_refit_to_another_width_saves_and_loads(tmp_path):
    adapter = _converted(tmp_path)
    assert adapter.coef_.shape == (12, 6)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 12)).astype(np.float32)
    Y = X @ rng.normal(size=(12, 3)).astype(np.float32)
    adapter.fit_align(X, Y)
    loaded = ERAAdapter.load(adapter.save(tmp_path / "b.safetensors"))
    assert loaded.coef_.shape == (12, 3)
    np.testing.assert_array_equal(loaded.transform(X), adapter.transform(X))
    assert loaded.get_feature_names_out().shape == (3,)


def test_converted_file_stores_no_output_width(tmp_path):
    """The output width is coef_'s: no stored copy to go stale."""
    adapter = _converted(tmp_path)
    assert "n_features_out_" not in vars(adapter) and "_n_features_out" not in vars(adapter)
    assert adapter.get_feature_names_out().shape == (6,)
