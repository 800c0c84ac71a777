"""Files written by era-sklearn 0.1 (``.npz`` + JSON): read with bounds, rewritten as format 2.

0.1's ``ERAAdapter.save`` wrote an uncompressed ``np.savez`` archive with a
JSON ``__meta__`` member and a SHA-256 per array. Its loader decompressed
whatever an archive held (a 1 MB file with a compressed extra member took it
to 1 GB); this reader accepts only uncompressed ``.npy`` members and checks
every declared size against the file before reading anything.
"""

import dataclasses
import hashlib
import math
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .persistence import (
    _CONTENT_ERRORS,
    _NON_FINITE,
    PRIVATE_ATTRIBUTES,
    _check_attribute_name,
    _check_state,
    _Invalid,
    _loads,
    _short,
    save_adapter,
)

#: What the 0.1 ``__meta__`` JSON holds besides parameters (for the converter).
_LEGACY_META = frozenset({"format_version", "era_sklearn_version", "numpy_version",
                          "sklearn_version", "class", "params", "dropped_params", "values",
                          "array_attributes", "dict_attributes", "stats_attributes",
                          "dtype_attributes", "arrays"})
_LEGACY_MAX_MEMBERS = 256


def convert_legacy_adapter(src, dst, cls=None):
    """Rewrite an era-sklearn 0.1 ``.npz`` adapter file in the current format.

    The archive is read with the same bounds as :func:`load_adapter` (only
    uncompressed members, every size checked before reading, no pickle) and
    its checksums verified. The fitted maps are carried over unchanged, so
    ``transform`` gives the same output; parameters that no longer exist or
    whose value is no longer valid take their default, with a warning naming
    them (they only matter for refitting).

    Parameters
    ----------
    src : str or path-like
        File written by ``ERAAdapter.save`` of era-sklearn 0.1.
    dst : str or path-like
        Where to write the converted file (e.g. ``"adapter.safetensors"``).
    cls : class, default=None
        Estimator class; ``era_sklearn.ERAAdapter`` when None.

    Returns
    -------
    dst : pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import era_sklearn
    >>> from era_sklearn import ERAAdapter, convert_legacy_adapter
    >>> old = Path(era_sklearn.__file__).parents[1] / "tests" / "data" / "adapter_0.1.0.npz"
    >>> new = convert_legacy_adapter(old, Path(tempfile.mkdtemp()) / "adapter.safetensors")
    >>> ERAAdapter.load(new).coef_.shape
    (12, 6)
    """
    if cls is None:
        from .._estimator.adapter import ERAAdapter as cls
    src = Path(src)
    try:
        meta, arrays = _read_legacy(src)
        est, dropped = _legacy_estimator(cls, meta, arrays)
    except _CONTENT_ERRORS as exc:
        problem = exc if isinstance(exc, _Invalid) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{src}: not a valid era-sklearn 0.1 adapter file: "
                         f"{_short(problem)}.") from None
    try:  # the converted state must be enough for this version's transform
        est.transform(np.ones((2, est.n_features_in_), dtype=est.coef_.dtype))
    except Exception as exc:
        raise ValueError(f"{src}: converted, but this era-sklearn's {cls.__name__} cannot "
                         f"transform with it ({exc}); refit the adapter instead.") from exc
    if dropped:
        warnings.warn(f"{src}: parameters {sorted(dropped)} of the 0.1 file are not valid for "
                      f"this {cls.__name__} and take their defaults (fitted maps unchanged).",
                      UserWarning, stacklevel=2)
    return save_adapter(est, dst)


def _read_legacy(path):
    """(meta, arrays) of a 0.1 archive: stored members only, sizes checked before reading."""
    if not path.is_file():
        raise FileNotFoundError(f"No adapter file at {path}.")
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > _LEGACY_MAX_MEMBERS:
                raise _Invalid(f"it has {len(infos)} members")
            for info in infos:  # np.savez stores members uncompressed: sizes are real
                if (info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size
                        or not info.filename.endswith(".npy")):
                    raise _Invalid(f"member {info.filename!r} is compressed or not an array "
                                   "(0.1 archives hold only uncompressed .npy members)")
            if sum(info.file_size for info in infos) > size:
                raise _Invalid("its members claim more bytes than the file holds")
            arrays = {info.filename[:-4]: _read_npy(zf, info) for info in infos}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise _Invalid(f"{type(exc).__name__}: {exc}") from None
    if "__meta__" not in arrays or arrays["__meta__"].dtype.kind != "U":
        raise _Invalid("it has no '__meta__' entry")
    meta = _loads(str(arrays.pop("__meta__")), "__meta__")
    if not isinstance(meta, dict) or set(meta) != _LEGACY_META or meta["format_version"] != 1:
        raise _Invalid("its __meta__ is not a format-1 era-sklearn document")
    _check_legacy_arrays(meta["arrays"], arrays)
    return meta, arrays


def _read_npy(zf, info):
    """One ``.npy`` member, its declared size checked against the member's before reading."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise _Invalid(f"member {info.filename!r} has .npy version {version}")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise _Invalid(f"member {info.filename!r} is an object array")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size:
            raise _Invalid(f"member {info.filename!r} declares {nbytes} bytes in a "
                           f"{info.file_size}-byte member")
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise _Invalid(f"member {info.filename!r} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _check_legacy_arrays(expected, arrays):
    if not isinstance(expected, dict) or set(expected) != set(arrays):
        raise _Invalid("its members do not match the recorded array list")
    for key, a in arrays.items():
        spec = expected[key]
        digest = hashlib.sha256(np.ascontiguousarray(a).view(np.uint8)).hexdigest()
        if (list(a.shape), a.dtype.str, digest) != (spec.get("shape"), spec.get("dtype"),
                                                    spec.get("sha256")):
            raise _Invalid(f"array {key!r} does not match its recorded shape, dtype or checksum")


def _legacy_estimator(cls, meta, arrays):
    """A fitted ``cls`` from 0.1 content, and the names of parameters left at default."""
    if meta["class"] != cls.__name__:
        raise _Invalid(f"it holds a {meta['class']!r}, not a {cls.__name__}")
    est, dropped = cls(), []
    for name, value in _legacy_value(meta["params"]).items():
        try:
            trial = cls(**{**est.get_params(deep=False), name: value})
            trial._validate_params()
        except (TypeError, ValueError):
            dropped.append(name)
            continue
        est = trial
    attributes = {k: _legacy_value(v) for k, v in meta["values"].items()}
    attributes.update({k: arrays[k].astype(object) if arrays[k].dtype.kind == "U" else arrays[k]
                       for k in meta["array_attributes"]})
    attributes.update({name: {k: arrays[f"{name}_{k}"] for k in keys}
                       for name, keys in meta["dict_attributes"].items()})
    attributes.update({k: np.dtype(v) for k, v in meta["dtype_attributes"].items()
                       if v in ("float32", "float64")})
    if meta["stats_attributes"]:
        from .._stage1.statistics import PairStatistics

        for name, scalars in meta["stats_attributes"].items():
            parts = {f.name: arrays.get(f"{name}_{f.name}") for f in dataclasses.fields(PairStatistics)}
            parts.update({k: _legacy_value(v) for k, v in scalars.items()})
            attributes[name] = PairStatistics(**parts)
    if "_n_features_out" in attributes:
        attributes.setdefault("n_features_out_", attributes["_n_features_out"])
    params = est.get_params(deep=False)
    for name, value in attributes.items():
        if name.startswith("_") and (name not in PRIVATE_ATTRIBUTES
                                     or isinstance(getattr(cls, name, None), property)):
            continue  # 0.1's private bookkeeping this version does not use (or derives)
        _check_attribute_name(cls, name, params, name)
        setattr(est, name, value)
    _check_state(est)
    return est, dropped


def _legacy_value(value):
    """0.1 wrote non-finite floats as the strings "inf", "-inf", "nan"."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [_legacy_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _legacy_value(v) for k, v in value.items()}
    return value
