"""Files written by era-sklearn 0.1 (``.npz`` + JSON): read with bounds, as plain values.

0.1's ``ERAAdapter.save`` wrote an uncompressed ``np.savez`` archive with a
JSON ``__meta__`` member and a SHA-256 per array. Its loader decompressed
whatever an archive held (a 1 MB file with a compressed extra member took it
to 1 GB); this reader accepts only uncompressed ``.npy`` members and checks
every declared size against the file before reading anything. Building an
estimator from what it reads is the converter's job
(``era_sklearn._estimator.legacy_convert``), which sits above the estimator.
"""

import hashlib
import math
import zipfile

import numpy as np

from .safetensors_file import Invalid, loads
from .state_codec import NON_FINITE

#: What the 0.1 ``__meta__`` JSON holds besides parameters (for the converter).
_LEGACY_META = frozenset({"format_version", "era_sklearn_version", "numpy_version",
                          "sklearn_version", "class", "params", "dropped_params", "values",
                          "array_attributes", "dict_attributes", "stats_attributes",
                          "dtype_attributes", "arrays"})
_LEGACY_MAX_MEMBERS = 256


def read_legacy(path):
    """(class name, parameters, fitted attributes, statistics) of a 0.1 archive.

    Attributes are plain values, arrays, dicts of arrays and dtypes. Statistics
    (0.1's ``align_stats_``-like attributes) come as ``{name: {field: value}}``,
    for the caller to build its dataclass from.
    """
    meta, arrays = _read_legacy(path)
    attributes = {k: _legacy_value(v) for k, v in meta["values"].items()}
    attributes.update({k: arrays[k].astype(object) if arrays[k].dtype.kind == "U" else arrays[k]
                       for k in meta["array_attributes"]})
    attributes.update({name: {k: arrays[f"{name}_{k}"] for k in keys}
                       for name, keys in meta["dict_attributes"].items()})
    attributes.update({k: np.dtype(v) for k, v in meta["dtype_attributes"].items()
                       if v in ("float32", "float64")})
    statistics = {}
    for name, scalars in meta["stats_attributes"].items():
        prefix = f"{name}_"
        parts = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
        parts.update({k: _legacy_value(v) for k, v in scalars.items()})
        statistics[name] = parts
    return meta["class"], _legacy_value(meta["params"]), attributes, statistics


def _read_legacy(path):
    """(meta, arrays) of a 0.1 archive: stored members only, sizes checked before reading."""
    if not path.is_file():
        raise FileNotFoundError(f"No adapter file at {path}.")
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > _LEGACY_MAX_MEMBERS:
                raise Invalid(f"it has {len(infos)} members")
            for info in infos:  # np.savez stores members uncompressed: sizes are real
                if (info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size
                        or not info.filename.endswith(".npy")):
                    raise Invalid(f"member {info.filename!r} is compressed or not an array "
                                   "(0.1 archives hold only uncompressed .npy members)")
            if sum(info.file_size for info in infos) > size:
                raise Invalid("its members claim more bytes than the file holds")
            arrays = {info.filename[:-4]: _read_npy(zf, info) for info in infos}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise Invalid(f"{type(exc).__name__}: {exc}") from None
    if "__meta__" not in arrays or arrays["__meta__"].dtype.kind != "U":
        raise Invalid("it has no '__meta__' entry")
    meta = loads(str(arrays.pop("__meta__")), "__meta__")
    if not isinstance(meta, dict) or set(meta) != _LEGACY_META or meta["format_version"] != 1:
        raise Invalid("its __meta__ is not a format-1 era-sklearn document")
    _check_legacy_arrays(meta["arrays"], arrays)
    return meta, arrays


def _read_npy(zf, info):
    """One ``.npy`` member, its declared size checked against the member's before reading."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise Invalid(f"member {info.filename!r} has .npy version {version}")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise Invalid(f"member {info.filename!r} is an object array")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size:
            raise Invalid(f"member {info.filename!r} declares {nbytes} bytes in a "
                           f"{info.file_size}-byte member")
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise Invalid(f"member {info.filename!r} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _check_legacy_arrays(expected, arrays):
    if not isinstance(expected, dict) or set(expected) != set(arrays):
        raise Invalid("its members do not match the recorded array list")
    for key, a in arrays.items():
        spec = expected[key]
        digest = hashlib.sha256(np.ascontiguousarray(a).view(np.uint8)).hexdigest()
        if (list(a.shape), a.dtype.str, digest) != (spec.get("shape"), spec.get("dtype"),
                                                    spec.get("sha256")):
            raise Invalid(f"array {key!r} does not match its recorded shape, dtype or checksum")


def _legacy_value(value):
    """0.1 wrote non-finite floats as the strings "inf", "-inf", "nan"."""
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [_legacy_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _legacy_value(v) for k, v in value.items()}
    return value
