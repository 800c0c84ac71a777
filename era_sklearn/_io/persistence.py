"""Pickle-free persistence of a fitted estimator: one safetensors file.

File layout (``FORMAT_VERSION`` 2)
----------------------------------
A standard `safetensors <https://github.com/huggingface/safetensors>`_ file.
Every numeric array of the fitted state is a tensor; everything else is JSON
text in the header's string-to-string ``__metadata__``, whose keys are exactly:

- ``format`` (``"era-sklearn-adapter"``), ``format_version`` (``"2"``),
  ``class`` (the estimator's class name);
- ``versions``: JSON object of the era-sklearn, numpy, scikit-learn and
  safetensors versions that wrote the file (informative only);
- ``params``: JSON of ``get_params(deep=False)``;
- ``attributes``: JSON of the fitted state: every attribute whose name ends
  with ``"_"`` and does not start with ``"_"``, plus the private names in
  :data:`PRIVATE_ATTRIBUTES`;
- ``sha256``: digest of the other fields and of every tensor (name, dtype,
  shape, bytes). It detects a file damaged or edited after saving; it is not
  a signature (whoever edits a file can recompute it), so everything below is
  validated on every load regardless.

JSON values are plain JSON or one of these tagged objects:
``{"__ndarray__": tensor name}``; ``{"__strings__": [...], "shape": [...]}``
(string arrays such as ``feature_names_in_``); ``{"__float__": "nan" | "inf" |
"-inf"}``; ``{"__tuple__": [...]}``; ``{"__dtype__": "float32" | "float64"}``;
``{"__dataclass__": name, "module": ..., "fields": {...}}`` (classes of
:data:`DATACLASS_MODULES` only); ``{"__estimator__": name, "module": ...,
"params": {...}}`` (solver objects, classes of :data:`SOLVER_MODULES` only);
``{"__fitted__": {"params": ..., "attributes": ...}}`` (an estimator of the
saved class given as a parameter, e.g. ``align=`` a fitted adapter: stored
with its own fitted state, tensors under the parameter's name, restored
fitted); ``{"__frozen__": value}`` (a :class:`sklearn.frozen.FrozenEstimator`).

Loading untrusted files
-----------------------
Nothing is unpickled and no module outside the allow-lists is imported.
Memory is bounded before anything is read: the header may not exceed
:data:`MAX_HEADER_BYTES`; every tensor must have an allowed dtype and a
declared byte size equal to ``prod(shape) * itemsize`` that lies inside the
file, the tensors must tile the data section exactly, and their total may not
exceed :data:`MAX_TENSOR_BYTES`. Every tensor must be named by the metadata and
the SHA-256, streamed from the file in chunks, must match, before any tensor is
read; so a refused file costs little and a load allocates at most about the
file's size. Then every field is validated: unknown or missing metadata keys,
parameters or tagged-object fields are refused; parameters go through the
estimator's ``_validate_params`` (and each solver object's); fitted arrays
must agree with ``n_features_in_`` and with each other, and weights must be
finite. Any failure is a ``ValueError`` naming the file.

A parameter renamed since a file was written (a class's ``_renamed_parameters``,
e.g. 0.2's ``Softmax(lam=...)``) is read under its new name: such files load
unchanged and without a warning.

Files written by era-sklearn 0.1 (``.npz``) are not read by :func:`load_adapter`;
:func:`era_sklearn._io.legacy.convert_legacy_adapter` rewrites one in this
format (reading it with the same bounds).
"""

import dataclasses
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import secrets
import struct
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

#: Written in ``format``; anything else is not an era-sklearn file.
FORMAT = "era-sklearn-adapter"
#: Version of the layout; bump it on any change that older readers would misread.
FORMAT_VERSION = 2
#: Largest safetensors header (JSON: tensor table + metadata) read. Real
#: adapters need a few kB (a 1,000-epoch training history is ~120 kB); the
#: bound also caps what ``json.loads`` can build from a hostile header.
MAX_HEADER_BYTES = 1 << 20
#: Largest total of tensor bytes read (4 GiB; a 4096 x 4096 float64 map is 128 MiB).
MAX_TENSOR_BYTES = 1 << 32
_DIGEST_CHUNK = 1 << 22  # bytes hashed at a time when checking a file's digest
#: Modules whose (BaseEstimator) classes may appear as parameter values.
SOLVER_MODULES = ("era_sklearn.align", "era_sklearn.adapt")
#: Modules whose dataclasses may appear in the fitted state (``align_stats_``).
DATACLASS_MODULES = ("era_sklearn._stage1.statistics",)
#: Fitted attributes whose float arrays must be finite (weights and the data they derive from).
FINITE_ATTRIBUTES = ("coef_", "intercept_", "align_coef_", "align_intercept_", "module_params_",
                     "align_docs_", "align_stats_")
#: scikit-learn's own private state worth keeping (``set_output`` configuration).
SKLEARN_PRIVATE = ("_sklearn_output_config",)
#: Private fitted state of the 0.1 estimator. ISOLATED HOOK: delete these names
#: once ERAAdapter keeps all its state in public attributes.
LEGACY_PRIVATE = ("_n_features_out", "_fit_dtype")
PRIVATE_ATTRIBUTES = SKLEARN_PRIVATE + LEGACY_PRIVATE

_META_KEYS = frozenset({"format", "format_version", "class", "versions", "params", "attributes",
                        "sha256"})
_DTYPES = {"F64": np.float64, "F32": np.float32, "I64": np.int64, "I32": np.int32,
           "U8": np.uint8, "BOOL": np.bool_}
_DTYPE_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_TAGS = ("__ndarray__", "__strings__", "__float__", "__tuple__", "__dtype__", "__dataclass__",
         "__estimator__", "__fitted__", "__frozen__")
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
# A fitted attribute's name as scikit-learn spells them: "coef_", "n_features_in_".
_ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9_]*_\Z")
_MLP_KEY = re.compile(r"(coef|intercept)\Z|mlp_(coef|intercept)_(\d+)\Z")


class _Invalid(ValueError):
    """A problem with the file's content; :func:`load_adapter` adds the path."""


class _Refused(ValueError):
    """A readable file this version will not load (newer format, other class, 0.1 archive)."""


#: What decoding hostile content can raise besides _Invalid: reported as an invalid file.
_CONTENT_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
                   RecursionError)


# -- save ------------------------------------------------------------------
def save_adapter(est, path):
    """Write the fitted ``est`` to exactly ``path`` (no suffix added), atomically.

    Parameters
    ----------
    est : estimator
        Fitted. Parameters must be JSON values, solver objects from
        :data:`SOLVER_MODULES`, fitted estimators of the same class, or
        ``FrozenEstimator`` of one; a ``RandomState`` is saved as ``None``
        with a warning.
    path : str or path-like
        ``.safetensors`` is the natural suffix, but any name is kept as given,
        so ``load_adapter(cls, path)`` reads the same path.

    Returns
    -------
    path : pathlib.Path
    """
    import safetensors.numpy
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; save needs a file name.")
    _check_state(est)  # never write a file that load would refuse
    encoder = _Encoder(type(est))
    state = encoder.estimator(est, "")
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "class": type(est).__name__,
        "versions": _dumps(_versions()),
        "params": _dumps(state["params"], sort_keys=False),  # keep dict order (cv_results_)
        "attributes": _dumps(state["attributes"], sort_keys=False),
    }
    metadata["sha256"] = _digest(metadata, encoder.tensors)
    data = safetensors.numpy.save(encoder.tensors, metadata=metadata)
    header_bytes = int.from_bytes(data[:8], "little")
    if header_bytes > MAX_HEADER_BYTES:
        raise ValueError(f"The non-array state of this {type(est).__name__} needs a "
                         f"{header_bytes}-byte header, over the {MAX_HEADER_BYTES}-byte limit "
                         "that load enforces.")
    _atomic_write(path, data)
    return path


def _versions():
    import safetensors
    import sklearn

    import era_sklearn  # late: the package imports this module's users

    return {"era_sklearn": era_sklearn.__version__, "numpy": np.__version__,
            "scikit_learn": sklearn.__version__, "safetensors": safetensors.__version__}


def _atomic_write(path, data):
    """Write ``data`` to a new temporary sibling, fsync it, then rename it over ``path``.

    ``os.replace`` is atomic within one file system: a crash mid-write leaves
    any previous file intact and the temporary is removed. The file gets mode
    0o666 minus the umask, as ``open`` would give it (safetensors' own
    ``save_file`` makes 0o600 files).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _dumps(value, sort_keys=True):
    return json.dumps(value, allow_nan=False, sort_keys=sort_keys, separators=(",", ":"))


def _digest(metadata, tensors):
    """SHA-256 of the metadata (but ``sha256``) and of every tensor, in name order."""
    h = _metadata_hash(metadata)
    for name in sorted(tensors):
        a = tensors[name]
        h.update(_tensor_label(name, a.dtype, a.shape))
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _metadata_hash(metadata):
    return hashlib.sha256(_dumps({k: v for k, v in metadata.items() if k != "sha256"}).encode())


def _tensor_label(name, dtype, shape):
    """What the digest hashes before a tensor's bytes: its name, dtype code and shape."""
    return _dumps([name, _DTYPE_CODES[np.dtype(dtype)], list(shape)]).encode()


class _Encoder:
    """Fitted state -> (JSON with tagged objects, tensors by name)."""

    def __init__(self, cls):
        self.cls = cls
        self.tensors = {}

    def estimator(self, est, where):
        params = {name: self.value(v, _join(where, name))
                  for name, v in est.get_params(deep=False).items()}
        attributes = {name: self.value(v, _join(where, name))
                      for name, v in _fitted_attributes(est).items()}
        return {"params": params, "attributes": attributes}

    def value(self, v, where):
        from sklearn.base import BaseEstimator
        from sklearn.frozen import FrozenEstimator

        if isinstance(v, np.ndarray):
            return self.array(v, where)
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"__float__": str(v)}
        if isinstance(v, (list, tuple)):
            items = [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
            return items if isinstance(v, list) else {"__tuple__": items}
        if isinstance(v, dict):
            bad = [k for k in v if not isinstance(k, str) or k in _TAGS]
            if bad:
                raise TypeError(f"{where} is a dict with keys {bad!r}: keys must be strings "
                                f"other than {_TAGS}.")
            return {k: self.value(x, _join(where, k)) for k, x in v.items()}
        if isinstance(v, np.dtype):
            return {"__dtype__": v.name}
        if isinstance(v, (np.random.RandomState, np.random.Generator)):
            warnings.warn(f"{where} is a {type(v).__name__} instance, which is saved as None: "
                          "refitting the loaded estimator is not reproducible. Pass an int "
                          "to make it so.", UserWarning, stacklevel=4)
            return None
        if type(v) is self.cls:
            return {"__fitted__": self.estimator(v, where)}
        if isinstance(v, FrozenEstimator):
            return {"__frozen__": self.value(v.estimator, _join(where, "estimator"))}
        if isinstance(v, BaseEstimator) and type(v).__module__ in SOLVER_MODULES:
            params = {k: self.value(x, _join(where, k))
                      for k, x in v.get_params(deep=False).items()}
            return {"__estimator__": type(v).__name__, "module": type(v).__module__,
                    "params": params}
        if dataclasses.is_dataclass(v) and type(v).__module__ in DATACLASS_MODULES:
            fields = {f.name: self.value(getattr(v, f.name), _join(where, f.name))
                      for f in dataclasses.fields(v)}
            return {"__dataclass__": type(v).__name__, "module": type(v).__module__,
                    "fields": fields}
        raise TypeError(
            f"{where} holds a {type(v).__module__}.{type(v).__name__}, which cannot be saved: "
            f"allowed are JSON values, numeric or string arrays, solver objects from "
            f"{SOLVER_MODULES}, a {self.cls.__name__} or FrozenEstimator of one."
        )

    def array(self, a, where):
        if isinstance(a, np.ma.MaskedArray):
            raise TypeError(f"{where} is a masked array; its mask cannot be saved.")
        if a.dtype == object or a.dtype.kind == "U":
            if not all(isinstance(x, str) for x in a.flat):
                raise TypeError(f"{where} is an object array of non-strings: it cannot be "
                                "saved without pickle.")
            return {"__strings__": [str(x) for x in a.flat], "shape": list(a.shape)}
        dtype = a.dtype.newbyteorder("=")  # safetensors stores little-endian
        if dtype not in _DTYPE_CODES:
            raise TypeError(f"{where} has dtype {a.dtype}; savable dtypes are "
                            f"{sorted(str(d) for d in _DTYPE_CODES)}.")
        if where in self.tensors:
            raise TypeError(f"Two arrays of the fitted state are both named {where!r}.")
        self.tensors[where] = np.ascontiguousarray(a, dtype=dtype.newbyteorder("<"))
        return {"__ndarray__": where}


def _join(where, name):
    return f"{where}/{name}" if where else name


def _fitted_attributes(est):
    """Public fitted attributes (read through getattr: lazy solves resolve) + allowed private."""
    names = [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]
    names += [k for k in PRIVATE_ATTRIBUTES if k in vars(est)]
    return {name: getattr(est, name) for name in names}


# -- load ------------------------------------------------------------------
def load_adapter(cls, path):
    """Rebuild a fitted ``cls`` from a file written by :func:`save_adapter`.

    Reads in bounded memory and validates every field (see the module
    docstring).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a valid era-sklearn file (damaged, edited, hostile), a newer
        format version, another class, an era-sklearn 0.1 ``.npz`` file
        (the message says how to convert it), or a parameter or fitted array
        that fails validation.
    """
    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.with_name(path.name + ".npz").is_file():
            hint = (f" ({path.name}.npz exists: era-sklearn 0.1 added '.npz' on save; see "
                    "convert_legacy_adapter)")
        raise FileNotFoundError(f"No adapter file at {path}{hint}.")
    try:
        # Cheapest first, so a refused file costs little: the header and the JSON state
        # (bounded by MAX_HEADER_BYTES), then the digest streamed from the file in
        # chunks, and only then the tensors themselves (about the file's size).
        specs, metadata = _read_header(path)
        _check_metadata(metadata, cls, path)
        state = {"params": _loads(metadata["params"], "params"),
                 "attributes": _loads(metadata["attributes"], "attributes")}
        _check_all_referenced(specs, state)
        if _file_digest(path, metadata, specs) != metadata["sha256"]:
            raise _Invalid("its content does not match the sha256 recorded when it was saved "
                           "(damaged or edited after saving)")
        tensors = _read_tensors(path, specs)
        decoder = _Decoder(cls, tensors)
        est = decoder.estimator(state, "")
    except _Refused:
        raise
    except _CONTENT_ERRORS as exc:
        problem = exc if isinstance(exc, _Invalid) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path}: not a valid era-sklearn adapter file: {_short(problem)}.") \
            from None
    return est


def _short(text, limit=400):
    """A message part echoing file content, cut so a hostile file cannot flood the error."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _loads(text, what):
    """Strict JSON: no NaN/Infinity literals, no duplicate keys, bounded nesting."""
    def reject_constant(name):
        raise _Invalid(f"{what} contains the non-JSON constant {name}")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise _Invalid(f"{what} has duplicate keys")
        return dict(pairs)

    try:
        return json.loads(text, parse_constant=reject_constant, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, _Invalid):
            raise
        raise _Invalid(f"{what} is not valid JSON ({type(exc).__name__})") from None


def _read_header(path):
    """(tensor specs, metadata) after checking every size against the file's."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if prefix[:4] == b"PK\x03\x04":
            raise _Refused(_legacy_message(path))
        if len(prefix) < 8:
            raise _Invalid(f"it has {size} bytes, fewer than a safetensors header")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES:
            raise _Invalid(f"its header claims {n} bytes, over the {MAX_HEADER_BYTES}-byte limit")
        if 8 + n > size:
            raise _Invalid(f"its header claims {n} bytes but only {size - 8} follow (truncated?)")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid("its header is not UTF-8") from None
    header = _loads(text, "the header")
    if not isinstance(header, dict):
        raise _Invalid("its header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Invalid("its header has no __metadata__ of strings (not written by save?)")
    return _check_tensor_table(header, 8 + n, size - 8 - n), metadata


class _TensorSpec(NamedTuple):
    dtype: type
    shape: tuple
    start: int  # byte offset of the tensor's data in the file
    nbytes: int


def _check_tensor_table(table, data_start, data_size):
    """Each tensor's dtype, shape and offsets; together they must tile the data exactly."""
    specs, end_of_previous = {}, 0
    for name, spec in sorted(table.items(), key=lambda kv: _offsets(kv)[0]):
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise _Invalid(f"tensor {name!r} has a malformed entry")
        dtype, shape = _DTYPES.get(spec["dtype"]), spec["shape"]
        if dtype is None:
            raise _Invalid(f"tensor {name!r} has dtype {spec['dtype']!r}; allowed: {sorted(_DTYPES)}")
        if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
            raise _Invalid(f"tensor {name!r} has shape {shape!r}")
        start, end = _offsets((name, spec))
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize  # python ints: no overflow
        if start != end_of_previous or end - start != nbytes or end > data_size:
            raise _Invalid(f"tensor {name!r} declares shape {shape} ({nbytes} bytes) at offsets "
                           f"[{start}, {end}] of a {data_size}-byte data section")
        end_of_previous = end
        specs[name] = _TensorSpec(dtype, tuple(shape), data_start + start, nbytes)
    if end_of_previous != data_size:
        raise _Invalid(f"its tensors cover {end_of_previous} of {data_size} data bytes")
    if data_size > MAX_TENSOR_BYTES:
        raise _Invalid(f"its tensors hold {data_size} bytes, over the {MAX_TENSOR_BYTES}-byte "
                       "limit")
    return specs


def _offsets(item):
    name, spec = item
    offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))
            and 0 <= offsets[0] <= offsets[1]):
        raise _Invalid(f"tensor {name!r} has data_offsets {offsets!r}")
    return offsets


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _legacy_message(path):
    return (f"{path} is an era-sklearn 0.1 adapter file (.npz); this version reads the "
            f"safetensors format (file format {FORMAT_VERSION}). Convert it once with "
            f"era_sklearn.convert_legacy_adapter({str(path)!r}, 'adapter.safetensors'), then "
            "load the new file (or refit the adapter).")


def _check_metadata(metadata, cls, path):
    if metadata.get("format") != FORMAT:
        raise _Invalid(f"its format is {metadata.get('format')!r}, not {FORMAT!r}")
    version = metadata.get("format_version", "")
    if not version.isdigit():
        raise _Invalid(f"format_version is {version!r}, not an integer")
    if int(version) > FORMAT_VERSION:
        raise _Refused(
            f"{path} was written by a newer era-sklearn (file format version {version}); this "
            f"era-sklearn reads file format version {FORMAT_VERSION}. Upgrade era-sklearn to "
            f"load it. Writer's versions: {_short(metadata.get('versions'))}."
        )
    if int(version) != FORMAT_VERSION:
        raise _Invalid(f"format_version {version} is not one this version writes")
    unknown, missing = set(metadata) - _META_KEYS, _META_KEYS - set(metadata)
    if unknown or missing:
        raise _Invalid(f"its metadata has unknown keys {sorted(unknown)} and lacks "
                       f"{sorted(missing)}")
    if metadata["class"] != cls.__name__:
        raise _Refused(f"{path} holds a {_short(repr(metadata['class']))}, not a {cls.__name__}.")
    versions = _loads(metadata["versions"], "versions")
    if not (isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values())):
        raise _Invalid("versions is not an object of strings")


def _check_all_referenced(specs, state):
    """Refuse tensors that no ``__ndarray__`` tag names, before any tensor is read.

    Decoding later checks each reference itself (the tensor exists and is used
    once); every tagged object decodes all its values or is refused, so a tensor
    named here is one that decoding uses.
    """
    unreferenced = sorted(set(specs) - _tensor_references(state))
    if unreferenced:
        raise _Invalid(f"tensors {unreferenced[:5]} are not referenced by the metadata")


def _tensor_references(value):
    """Every string under an ``__ndarray__`` key anywhere in decoded JSON."""
    names, stack = set(), [value]
    while stack:  # no recursion: nesting depth is the file's choice
        v = stack.pop()
        if isinstance(v, dict):
            if isinstance(v.get("__ndarray__"), str):
                names.add(v["__ndarray__"])
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return names


def _file_digest(path, metadata, specs):
    """:func:`_digest` of the tensors as stored in ``path``, hashed in bounded chunks.

    Nothing of the data section is kept, so a damaged or edited file is refused
    with memory growth of one chunk, whatever size its table declares.
    """
    h = _metadata_hash(metadata)
    buffer = memoryview(bytearray(_DIGEST_CHUNK))
    with open(path, "rb") as f:
        for name in sorted(specs):
            spec = specs[name]
            h.update(_tensor_label(name, spec.dtype, spec.shape))
            f.seek(spec.start)
            left = spec.nbytes
            while left:
                n = f.readinto(buffer[: min(left, _DIGEST_CHUNK)])
                if not n:
                    raise _Invalid("it is shorter than its tensor table says (truncated while "
                                   "reading?)")
                h.update(buffer[:n])
                left -= n
    return h.hexdigest()


def _read_tensors(path, specs):
    """Every tensor, read straight into its own array (the table is checked already).

    Plain reads into preallocated arrays hold the data once. (safetensors' reader
    maps the file and copies each tensor out of the mapping; the mapped pages
    count as resident memory too, so a load peaked at twice the file's size.)
    """
    tensors = {}
    with open(path, "rb") as f:
        for name, spec in specs.items():
            a = np.empty(spec.shape, dtype=np.dtype(spec.dtype).newbyteorder("<"))
            f.seek(spec.start)
            if f.readinto(memoryview(a.reshape(-1)).cast("B")) != spec.nbytes:
                raise _Invalid(f"tensor {name!r} is shorter than its table entry (truncated "
                               "while reading?)")
            tensors[name] = a
    return tensors


class _Decoder:
    """Inverse of :class:`_Encoder`, validating every tagged object and name."""

    def __init__(self, cls, tensors):
        self.cls, self.tensors, self.used = cls, tensors, set()

    def estimator(self, state, where):
        _expect_keys(state, {"params", "attributes"}, where or "the file")
        params, attributes = state["params"], state["attributes"]
        if not isinstance(params, dict) or not isinstance(attributes, dict):
            raise _Invalid(f"{where or 'the file'}: params and attributes must be objects")
        params = {k: self.value(v, _join(where, k)) for k, v in params.items()}
        est = _build(self.cls, params, where)
        for name, v in attributes.items():
            _check_attribute_name(self.cls, name, params, _join(where, name))
            try:
                setattr(est, name, self.value(v, _join(where, name)))
            except (AttributeError, TypeError) as exc:
                raise _Invalid(f"attribute {_join(where, name)!r} cannot be set ({exc})") from None
        if attributes:
            _check_state(est, where)
        return est

    def value(self, v, where):
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if not isinstance(v, dict):
            return v  # None, bool, int, finite float (strict JSON), str
        tags = [k for k in v if k in _TAGS]
        if not tags:
            return {k: self.value(x, _join(where, k)) for k, x in v.items()}
        return getattr(self, "_" + tags[0].strip("_"))(v, where)

    def _ndarray(self, v, where):
        _expect_keys(v, {"__ndarray__"}, where)
        name = v["__ndarray__"]
        if name not in self.tensors or name in self.used:
            raise _Invalid(f"{where} refers to a missing or already used tensor {name!r}")
        self.used.add(name)
        return self.tensors[name]

    def _strings(self, v, where):
        _expect_keys(v, {"__strings__", "shape"}, where)
        items, shape = v["__strings__"], v["shape"]
        if not (isinstance(items, list) and all(isinstance(x, str) for x in items)
                and isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)
                and math.prod(shape) == len(items)):
            raise _Invalid(f"{where} is a malformed string array")
        out = np.empty(len(items), dtype=object)  # as scikit-learn stores feature names
        out[:] = items
        return out.reshape(shape)

    def _float(self, v, where):
        _expect_keys(v, {"__float__"}, where)
        if v["__float__"] not in _NON_FINITE:
            raise _Invalid(f"{where} is the float {v['__float__']!r}")
        return _NON_FINITE[v["__float__"]]

    def _tuple(self, v, where):
        _expect_keys(v, {"__tuple__"}, where)
        if not isinstance(v["__tuple__"], list):
            raise _Invalid(f"{where} is a malformed tuple")
        return tuple(self.value(v["__tuple__"], where))

    def _dtype(self, v, where):
        _expect_keys(v, {"__dtype__"}, where)
        if v["__dtype__"] not in ("float32", "float64"):
            raise _Invalid(f"{where} is the dtype {v['__dtype__']!r}")
        return np.dtype(v["__dtype__"])

    def _dataclass(self, v, where):
        _expect_keys(v, {"__dataclass__", "module", "fields"}, where)
        cls = _allowed_class(v["module"], v["__dataclass__"], DATACLASS_MODULES, where)
        fields = v["fields"]
        names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else None
        if not isinstance(fields, dict) or set(fields) != names:
            raise _Invalid(f"{where}: fields of {cls.__name__} must be exactly {names}")
        return cls(**{k: self.value(x, _join(where, k)) for k, x in fields.items()})

    def _estimator(self, v, where):
        from sklearn.base import BaseEstimator

        _expect_keys(v, {"__estimator__", "module", "params"}, where)
        cls = _allowed_class(v["module"], v["__estimator__"], SOLVER_MODULES, where)
        if not issubclass(cls, BaseEstimator) or not isinstance(v["params"], dict):
            raise _Invalid(f"{where}: {cls.__name__} is not a solver estimator")
        params = {k: self.value(x, _join(where, k)) for k, x in v["params"].items()}
        return _build(cls, params, where)

    def _fitted(self, v, where):
        _expect_keys(v, {"__fitted__"}, where)
        if not isinstance(v["__fitted__"], dict):
            raise _Invalid(f"{where} is a malformed estimator")
        return self.estimator(v["__fitted__"], where)

    def _frozen(self, v, where):
        from sklearn.frozen import FrozenEstimator

        _expect_keys(v, {"__frozen__"}, where)
        inner = self.value(v["__frozen__"], _join(where, "estimator"))
        if type(inner) is not self.cls:
            raise _Invalid(f"{where}: a FrozenEstimator must wrap a {self.cls.__name__}")
        return FrozenEstimator(inner)


def _expect_keys(v, keys, where):
    if not isinstance(v, dict) or set(v) != keys:
        got = sorted(v) if isinstance(v, dict) else type(v).__name__
        raise _Invalid(f"{where} must have exactly the keys {sorted(keys)}, got {got}")


def _allowed_class(module, name, allowed, where):
    """A class from an allow-listed module only: nothing else is ever imported."""
    if module not in allowed or not isinstance(name, str):
        raise _Invalid(f"{where}: class {module}.{name} is not allowed (only {allowed})")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise _Invalid(f"{where}: class {module}.{name} does not exist in this version") from None
    if not isinstance(cls, type):
        raise _Invalid(f"{where}: {module}.{name} is not a class")
    return cls


def _build(cls, params, where):
    """``cls(**params)``, refused unless the names are exactly its parameters and valid."""
    label = f"{where}: " if where else ""
    params = _current_names(cls, params)
    names = set(cls._get_param_names())
    missing, extra = sorted(names - set(params)), sorted(set(params) - names)
    if missing:
        raise _Invalid(f"{label}parameters {missing} of {cls.__name__} are missing")
    try:
        est = cls(**params)
    except TypeError as exc:
        problem = f"unknown parameters {extra}" if extra else f"refused parameters ({exc})"
        raise _Invalid(f"{label}{problem} for {cls.__name__}") from None
    unknown = sorted(set(params) - set(est.get_params(deep=False)))  # **kwargs constructors
    if unknown:
        raise _Invalid(f"{label}unknown parameters {unknown} for {cls.__name__}")
    try:
        est._validate_params()
    except (ValueError, TypeError) as exc:  # InvalidParameterError is both
        raise _Invalid(f"{label}invalid parameter: {exc}") from None
    return est


def _current_names(cls, params):
    """Parameters saved before a rename (``cls._renamed_parameters``) under their new names.

    An era-sklearn 0.2 file holds Softmax's ``lam`` / ``lams`` and no ``alpha`` /
    ``alphas``: the values move to the new names and the old ones stay unset, so
    the file loads (and refits) without a deprecation warning. A file with both
    names (written since 0.3) is read as written.
    """
    renamed = {old: new for old, new in getattr(cls, "_renamed_parameters", {}).items()
               if old in params and new not in params}
    if not renamed:
        return params
    signature = inspect.signature(cls).parameters
    current = {renamed.get(name, name): value for name, value in params.items()}
    current.update({old: signature[old].default for old in renamed})
    return current


def _check_attribute_name(cls, name, params, where):
    if name in PRIVATE_ATTRIBUTES:
        return
    # Never shadow a parameter, method or read-only class attribute; data
    # descriptors (settable properties) are fine.
    existing = inspect.getattr_static(cls, name, None)
    if (not _ATTRIBUTE_NAME.match(name) or name in params
            or (existing is not None and not hasattr(existing, "__set__"))):
        raise _Invalid(f"{where!r} is not a fitted attribute name")


# -- consistency of the fitted state ------------------------------------------
def _check_state(est, where=""):
    """Dimensions of every known fitted array against each other; finite weights."""
    label = f"{where}: " if where else ""

    def fail(problem):
        raise _Invalid(label + problem)

    state = vars(est)
    d_in = getattr(est, "n_features_in_", None)
    if not (_is_int(d_in) and d_in >= 1):
        fail(f"n_features_in_ is {d_in!r}, not a positive integer")
    coef = getattr(est, "coef_", None)
    if not (_is_float_array(coef) and coef.ndim == 2 and coef.shape[0] == d_in
            and coef.shape[1] >= 1):
        fail(f"coef_ has shape {getattr(coef, 'shape', None)}, expected ({d_in}, n_doc_features)")
    d_out = coef.shape[1]
    expected = {"intercept_": (d_out,)}
    names = state.get("feature_names_in_")
    if names is not None and (not isinstance(names, np.ndarray) or names.shape != (d_in,)):
        fail(f"feature_names_in_ has shape {getattr(names, 'shape', None)}, expected ({d_in},)")
    for name in ("n_features_out_", "_n_features_out"):
        if name in state and not (_is_int(state[name]) and state[name] == d_out):
            fail(f"{name} is {state[name]!r} but coef_ maps to {d_out} features")
    if "_fit_dtype" in state and not isinstance(state["_fit_dtype"], np.dtype):
        fail("_fit_dtype is not a dtype")
    if state.get("align_coef_") is not None or state.get("align_intercept_") is not None:
        d_q = d_in - d_out if getattr(est, "hybrid", False) else d_in
        expected.update(align_coef_=(d_q, d_out), align_intercept_=(d_out,))
    for name, shape in expected.items():
        a = getattr(est, name, None)
        if not (_is_float_array(a) and a.shape == shape):
            fail(f"{name} has shape {getattr(a, 'shape', None)}, expected {shape} from "
                 f"n_features_in_={d_in} and coef_ {coef.shape}")
    docs = state.get("align_docs_")
    if docs is not None and not (_is_float_array(docs) and docs.ndim == 2
                                 and docs.shape[1] == d_out):
        fail(f"align_docs_ has shape {getattr(docs, 'shape', None)}, expected (n, {d_out})")
    if state.get("module_params_") is not None:
        _check_mlp(state["module_params_"], d_in, d_out, fail)
    for name in FINITE_ATTRIBUTES:
        for key, a in _float_arrays(state.get(name), name):
            if not np.isfinite(a).all():
                fail(f"{key} contains NaN or infinity")


def _is_float_array(a):
    return isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64)


def _check_mlp(params, d_in, d_out, fail):
    """The residual branch's layers chain d_in -> ... -> d_out."""
    if not isinstance(params, dict) or not all(isinstance(k, str) and _MLP_KEY.match(k)
                                               and _is_float_array(v) for k, v in params.items()):
        fail("module_params_ must map 'coef', 'intercept', 'mlp_coef_<i>', 'mlp_intercept_<i>' "
             "to float arrays")
    n_layers = sum(k.startswith("mlp_coef_") for k in params)
    width = d_in
    for i in range(n_layers):
        coef, intercept = params.get(f"mlp_coef_{i}"), params.get(f"mlp_intercept_{i}")
        out = d_out if i == n_layers - 1 else getattr(coef, "shape", (0, 0))[-1]
        if coef is None or intercept is None or coef.shape != (width, out) \
                or intercept.shape != (out,):
            fail(f"module_params_ layer {i} has shapes {getattr(coef, 'shape', None)} and "
                 f"{getattr(intercept, 'shape', None)}, expected ({width}, {out}) and ({out},)")
        width = out
    if set(params) - {f"mlp_{p}_{i}" for p in ("coef", "intercept") for i in range(n_layers)} \
            - {"coef", "intercept"}:
        fail("module_params_ has layers out of sequence")
    for key, shape in (("coef", (d_in, d_out)), ("intercept", (d_out,))):
        if key in params and params[key].shape != shape:
            fail(f"module_params_[{key!r}] has shape {params[key].shape}, expected {shape}")


def _float_arrays(value, where):
    """(name, array) of every float array in ``value`` (arrays, dicts, dataclasses)."""
    if isinstance(value, np.ndarray):
        return [(where, value)] if value.dtype.kind == "f" else []
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in _float_arrays(v, f"{where}[{k!r}]")]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [x for f in dataclasses.fields(value)
                for x in _float_arrays(getattr(value, f.name), f"{where}.{f.name}")]
    return []


# -- ERA checkpoints -----------------------------------------------------------

