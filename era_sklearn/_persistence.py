"""Pickle-free persistence of a fitted ERAAdapter: one ``.npz`` archive.

Every fitted array goes into the archive as a plain numeric (or unicode)
array, and everything else (parameters, scalar attributes, training
histories, versions) into one JSON document stored as the 0-d unicode array
``__meta__``. Reading uses ``np.load(allow_pickle=False)``, so opening an
untrusted file cannot execute code, unlike ``pickle``/``joblib``.

Layout of ``__meta__`` (``FORMAT_VERSION`` 1):

- ``format_version``, ``era_sklearn_version``, ``numpy_version``,
  ``sklearn_version``, ``class``;
- ``params``: ``get_params(deep=False)`` (prefixed torch settings included);
  ``dropped_params`` names the ones JSON cannot hold (``init``, a
  ``RandomState``): they load with their defaults;
- ``values``: scalar and list fitted attributes (``n_features_in_``,
  ``_n_features_out``, ``alpha_``, ``blend_``, ``history_``, ...); non-finite floats are written as the strings
  ``"inf"``, ``"-inf"``, ``"nan"`` to keep the JSON strict;
- ``dtype_attributes``: ``{"_fit_dtype": "float32"}``;
- ``array_attributes``, ``dict_attributes``, ``stats_attributes``: which
  attributes are arrays (key = attribute name), dicts of arrays (key
  ``<attribute>_<key>``, e.g. ``module_params__mlp_coef_0``) and
  ``PairStatistics`` (key ``<attribute>_<field>``);
- ``arrays``: shape, dtype and SHA-256 of every archive member, checked on
  load so that a truncated or edited file is refused rather than half-used.

``align_stats_`` (the sufficient statistics accumulated by
``partial_fit_align``) is saved when present, so a loaded adapter resumes
streaming where it stopped; it costs ``8 * d_q * (d_q + d_d)`` bytes at most.
"""

import hashlib
import json
import math
import os
import tempfile
import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import sklearn
from sklearn.utils.validation import check_is_fitted

from ._statistics import PairStatistics

#: Version of the archive layout; bump it on any change old readers would misread.
FORMAT_VERSION = 1
META_KEY = "__meta__"
#: Private fitted attributes that transform needs (public ones end with "_").
PRIVATE_ATTRIBUTES = ("_n_features_out", "_fit_dtype", "_sklearn_output_config")
_META_FIELDS = ("class", "params", "values", "array_attributes", "dict_attributes",
                "stats_attributes", "dtype_attributes", "arrays")
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


# -- save ------------------------------------------------------------------
def save_adapter(est, path):
    """Write ``est`` to ``path`` atomically; see the module docstring for the layout.

    ``.npz`` is appended when ``path`` has another suffix, as ``np.savez`` does.

    Returns
    -------
    path : pathlib.Path
    """
    check_is_fitted(est, "coef_")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays, meta = _encode(est)
    arrays[META_KEY] = np.array(json.dumps(meta, allow_nan=False))
    _atomic_savez(path, arrays)
    return path


def _atomic_savez(path, arrays):
    """``np.savez`` into a temporary sibling, then rename it over ``path``.

    ``os.replace`` is atomic within one file system, so a crash mid-write
    leaves the previous file (if any) untouched and only a temporary behind,
    which is removed here.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _encode(est):
    """(arrays for the archive, JSON-able meta) of a fitted estimator."""
    import era_sklearn  # the package, for its version; imported late to avoid a cycle

    params, dropped = _json_params(est.get_params(deep=False))
    meta = {
        "format_version": FORMAT_VERSION,
        "era_sklearn_version": era_sklearn.__version__,
        "numpy_version": np.__version__,
        "sklearn_version": sklearn.__version__,
        "class": type(est).__name__,
        "params": params,
        "dropped_params": dropped,
        "values": {},
        "array_attributes": [],
        "dict_attributes": {},
        "stats_attributes": {},
        "dtype_attributes": {},
    }
    arrays = {}
    for name, value in _fitted_attributes(est).items():
        _encode_attribute(name, value, arrays, meta)
    meta["arrays"] = {key: _describe(a) for key, a in arrays.items()}
    return arrays, meta


def _fitted_attributes(est):
    public = {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}
    private = {k: getattr(est, k) for k in PRIVATE_ATTRIBUTES if hasattr(est, k)}
    return {**public, **private}


def _encode_attribute(name, value, arrays, meta):
    """Route one fitted attribute to the archive (arrays) or to the JSON meta."""
    if isinstance(value, np.ndarray):
        arrays[name] = _plain_array(name, value)
        meta["array_attributes"].append(name)
    elif isinstance(value, PairStatistics):
        scalars = {}
        for field in fields(value):
            item = getattr(value, field.name)
            if isinstance(item, np.ndarray):
                arrays[f"{name}_{field.name}"] = item
            else:  # a float, or xtx=None (Procrustes)
                scalars[field.name] = _json_value(item, name)
        meta["stats_attributes"][name] = scalars
    elif isinstance(value, dict) and value and all(
        isinstance(v, np.ndarray) for v in value.values()
    ):
        for key, item in value.items():
            arrays[f"{name}_{key}"] = _plain_array(f"{name}[{key!r}]", item)
        meta["dict_attributes"][name] = list(value)
    elif isinstance(value, np.dtype):
        meta["dtype_attributes"][name] = value.name
    else:
        meta["values"][name] = _json_value(value, name)


def _plain_array(name, a):
    """``a`` as a numeric or unicode array: object arrays would need pickle."""
    if a.dtype == object:
        if not all(isinstance(v, str) for v in a.flat):  # feature_names_in_ is object-typed str
            raise TypeError(f"{name} is an object array of non-strings: it cannot be saved "
                            "without pickle.")
        return a.astype(str)
    return a


def _describe(a):
    return {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": _digest(a)}


def _digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8)).hexdigest()


def _json_params(params):
    """JSON-able parameters, and a note for each one that had to be dropped."""
    kept, dropped = {}, {}
    for name, value in params.items():
        if name == "init" and value is not None:
            dropped[name] = ("an estimator object; it only supplies the stage-1 prior at fit time "
                             "and loads as None (the fitted maps are saved).")
            continue
        try:
            kept[name] = _json_value(value, name)
        except TypeError as exc:
            dropped[name] = f"not JSON-serialisable ({exc}); loads with its default."
    return kept, dropped


def _json_value(value, name):
    """``value`` as plain JSON types; non-finite floats become strings."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v, name) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_value(v, name) for k, v in value.items()}
    raise TypeError(f"{name} holds a {type(value).__name__}, which JSON cannot represent")


# -- load ------------------------------------------------------------------
def load_adapter(cls, path):
    """Rebuild a fitted ``cls`` from a file written by :func:`save_adapter`.

    Raises
    ------
    ValueError
        When the file is not a readable era-sklearn archive, was written by a
        newer format version, or fails its shape / checksum checks.
    """
    path = Path(path)
    meta, arrays = _read_archive(path)
    _check_meta(meta, arrays, cls, path)
    est = cls(**_decode_value(meta["params"]))
    for name, value in _decode(meta, arrays).items():
        setattr(est, name, value)
    _check_dims(est, path)
    return est


def _read_archive(path):
    """(meta, arrays) with every member read; any damage becomes a ValueError."""
    if not path.is_file():
        raise FileNotFoundError(f"No adapter file at {path}.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    if META_KEY not in arrays:
        raise _corrupt(path, f"it has no {META_KEY!r} entry (not written by ERAAdapter.save?)")
    try:
        meta = json.loads(arrays.pop(META_KEY).item())
    except (ValueError, TypeError) as exc:
        raise _corrupt(path, f"{META_KEY!r} is not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise _corrupt(path, f"{META_KEY!r} is not a JSON object")
    return meta, arrays


def _corrupt(path, problem):
    return ValueError(f"{path}: not a valid era-sklearn adapter file (truncated, corrupted or "
                      f"edited?): {problem}.")


def _check_meta(meta, arrays, cls, path):
    """Version, class, and every member's presence, shape, dtype and checksum."""
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _corrupt(path, f"format_version is {version!r}, not an integer")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer era-sklearn ({meta.get('era_sklearn_version')}, "
            f"file format version {version}); this era-sklearn reads format version "
            f"{FORMAT_VERSION} and older. Upgrade era-sklearn to load it."
        )
    absent = [key for key in _META_FIELDS if key not in meta]
    if absent:
        raise _corrupt(path, f"the metadata lacks {absent}")
    if meta.get("class") != cls.__name__:
        raise ValueError(f"{path} holds a {meta.get('class')!r}, not a {cls.__name__}.")
    expected = meta["arrays"]
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise _corrupt(path, f"missing arrays {missing}")
    for key, a in arrays.items():
        spec = expected.get(key)
        if spec is None:
            raise _corrupt(path, f"unexpected array {key!r}")
        if list(a.shape) != spec["shape"] or a.dtype.str != spec["dtype"]:
            raise _corrupt(path, f"array {key!r} has shape {a.shape} and dtype {a.dtype.str}, "
                                 f"the metadata says {tuple(spec['shape'])} and {spec['dtype']}")
        if _digest(a) != spec["sha256"]:
            raise _corrupt(path, f"array {key!r} does not match its checksum")


def _decode(meta, arrays):
    """The fitted attributes, as the estimator held them."""
    out = {name: _decode_value(value) for name, value in meta["values"].items()}
    for name in meta["array_attributes"]:
        a = arrays[name]
        out[name] = a.astype(object) if a.dtype.kind == "U" else a  # as sklearn stores names
    for name, keys in meta["dict_attributes"].items():
        out[name] = {key: arrays[f"{name}_{key}"] for key in keys}
    for name, dtype in meta["dtype_attributes"].items():
        out[name] = np.dtype(dtype)
    for name, scalars in meta["stats_attributes"].items():
        parts = {f.name: arrays.get(f"{name}_{f.name}") for f in fields(PairStatistics)}
        parts.update({k: _decode_value(v) for k, v in scalars.items()})
        out[name] = PairStatistics(**parts)
    return out


def _decode_value(value):
    """Inverse of ``_json_value``."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode_value(v) for k, v in value.items()}
    return value


def _check_dims(est, path):
    """The maps' shapes against the recorded dimensions (edited metadata)."""
    d_in, d_out = getattr(est, "n_features_in_", None), getattr(est, "_n_features_out", None)
    expected = {"coef_": (d_in, d_out), "intercept_": (d_out,)}
    if getattr(est, "align_coef_", None) is not None:
        d_q = d_in - d_out if est.hybrid else d_in
        expected.update(align_coef_=(d_q, d_out), align_intercept_=(d_out,))
    for name, shape in expected.items():
        actual = getattr(est, name, None)
        if actual is None or actual.shape != shape:
            found = None if actual is None else actual.shape
            raise _corrupt(path, f"{name} has shape {found}, expected {shape} from "
                                 f"n_features_in_={d_in} and n_doc_features={d_out}")
