"""Pickle-free persistence of a fitted estimator: one safetensors file.

File layout (``FORMAT_VERSION`` 2)
----------------------------------
A standard `safetensors <https://github.com/huggingface/safetensors>`_ file
(the container: :mod:`.safetensors_file`). Every numeric array of the fitted
state is a tensor; everything else is JSON text in the header's
string-to-string ``__metadata__``, whose keys are exactly:

- ``format`` (``"era-sklearn-adapter"``), ``format_version`` (``"2"``),
  ``class`` (the estimator's class name);
- ``versions``: JSON object of the era-sklearn, numpy, scikit-learn and
  safetensors versions that wrote the file (informative only);
- ``params``: JSON of ``get_params(deep=False)``;
- ``attributes``: JSON of the fitted state: every attribute whose name ends
  with ``"_"`` and does not start with ``"_"``, plus the private names the
  class's schema allows; never its derived attributes;
- ``sha256``: digest of the other fields and of every tensor (name, dtype,
  shape, bytes). It detects a file damaged or edited after saving; it is not
  a signature (whoever edits a file can recompute it), so everything below is
  validated on every load regardless.

JSON values are plain JSON or one of these tagged objects (:mod:`.state_codec`):
``{"__ndarray__": tensor name}``; ``{"__strings__": [...], "shape": [...]}``
(string arrays such as ``feature_names_in_``); ``{"__float__": "nan" | "inf" |
"-inf"}``; ``{"__tuple__": [...]}``; ``{"__dtype__": "float32" | "float64"}``;
``{"__dataclass__": name, "module": ..., "fields": {...}}`` and
``{"__estimator__": name, "module": ..., "params": {...}}`` (a dataclass or a
solver object; ``module + "." + name`` is the class's stable name in the
schema's registry, e.g. ``era_sklearn.align.Procrustes``, looked up, never
imported); ``{"__fitted__": {"params": ..., "attributes": ...}}`` (an estimator
of the saved class given as a parameter, e.g. ``align=`` a fitted adapter:
stored with its own fitted state, tensors under the parameter's name, restored
fitted); ``{"__frozen__": value}`` (a :class:`sklearn.frozen.FrozenEstimator`).

What the state may hold is the estimator's to say: its class declares a
:class:`~.schema.StateSchema` (``_state_schema``) naming its attributes, their
shapes relative to each other, which must be finite, the private attributes
saved and the registered classes. This module takes the class as an argument
and never imports it.

Loading untrusted files
-----------------------
Nothing is unpickled and no module is imported from a name in the file.
Memory is bounded before anything is read: the header may not exceed
:data:`~.safetensors_file.MAX_HEADER_BYTES`; every tensor must have an allowed
dtype and a declared byte size equal to ``prod(shape) * itemsize`` that lies
inside the file, the tensors must tile the data section exactly, and their
total may not exceed :data:`~.safetensors_file.MAX_TENSOR_BYTES`. Every tensor
must be named by the metadata and the SHA-256, streamed from the file in
chunks, must match, before any tensor is read; so a refused file costs little
and a load allocates at most about the file's size. Then every field is
validated: unknown or missing metadata keys, parameters or tagged-object fields
are refused; parameters go through the estimator's ``_validate_params`` (and
each solver object's); the fitted state must satisfy the class's schema. Any
failure is a ``ValueError`` naming the file.

A parameter renamed since a file was written (a class's ``_renamed_parameters``,
e.g. 0.2's ``Softmax(lam=...)``) is read under its new name: such files load
unchanged and without a warning.

Files written by era-sklearn 0.1 (``.npz``) are not read by :func:`load_adapter`;
``era_sklearn.convert_legacy_adapter`` rewrites one in this format (reading it
with the same bounds, :mod:`.legacy`).
"""

from pathlib import Path

import numpy as np
import safetensors
import sklearn
from sklearn.utils.validation import check_is_fitted

from .._utils.version import __version__
from .safetensors_file import (
    CONTENT_ERRORS,
    MAX_HEADER_BYTES,
    Invalid,
    Refused,
    ZipArchive,
    atomic_write,
    check_all_referenced,
    dumps,
    encode,
    file_digest,
    loads,
    read_header,
    read_tensors,
    short,
)
from .schema import check_state, schema_of
from .state_codec import Decoder, Encoder

#: Written in ``format``; anything else is not an era-sklearn file.
FORMAT = "era-sklearn-adapter"
#: Version of the layout; bump it on any change that older readers would misread.
FORMAT_VERSION = 2
_META_KEYS = frozenset({"format", "format_version", "class", "versions", "params", "attributes",
                        "sha256"})


# -- save ------------------------------------------------------------------
def save_adapter(est, path):
    """Write the fitted ``est`` to exactly ``path`` (no suffix added), atomically.

    Parameters
    ----------
    est : estimator
        Fitted; its class declares ``_state_schema``. Parameters must be JSON
        values, objects of classes the schema registers, fitted estimators of
        the same class, or ``FrozenEstimator`` of one; a ``RandomState`` is
        saved as ``None`` with a warning.
    path : str or path-like
        ``.safetensors`` is the natural suffix, but any name is kept as given,
        so ``load_adapter(cls, path)`` reads the same path.

    Returns
    -------
    path : pathlib.Path
    """
    check_is_fitted(est)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; save needs a file name.")
    check_state(est, schema_of(type(est)))  # never write a file that load would refuse
    encoder = Encoder(type(est))
    state = encoder.estimator(est, "")
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "class": type(est).__name__,
        "versions": dumps(_versions()),
        "params": dumps(state["params"], sort_keys=False),  # keep dict order (cv_results_)
        "attributes": dumps(state["attributes"], sort_keys=False),
    }
    data, header_bytes = encode(encoder.tensors, metadata)
    if header_bytes > MAX_HEADER_BYTES:
        raise ValueError(f"The non-array state of this {type(est).__name__} needs a "
                         f"{header_bytes}-byte header, over the {MAX_HEADER_BYTES}-byte limit "
                         "that load enforces.")
    atomic_write(path, data)
    return path


def _versions():
    """Informative only: recorded beside the state, never checked on load."""
    return {"era_sklearn": __version__, "numpy": np.__version__, "scikit_learn": sklearn.__version__,
            "safetensors": safetensors.__version__}


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
    schema_of(cls)  # a class without a schema is the caller's error, not the file's
    try:
        # Cheapest first, so a refused file costs little: the header and the JSON state
        # (bounded by MAX_HEADER_BYTES), then the digest streamed from the file in
        # chunks, and only then the tensors themselves (about the file's size).
        specs, metadata = read_header(path)
        _check_metadata(metadata, cls, path)
        state = {"params": loads(metadata["params"], "params"),
                 "attributes": loads(metadata["attributes"], "attributes")}
        check_all_referenced(specs, state)
        if file_digest(path, metadata, specs) != metadata["sha256"]:
            raise Invalid("its content does not match the sha256 recorded when it was saved "
                          "(damaged or edited after saving)")
        tensors = read_tensors(path, specs)
        decoder = Decoder(cls, tensors)
        est = decoder.estimator(state, "")
    except ZipArchive:
        raise Refused(_legacy_message(path)) from None
    except Refused:
        raise
    except CONTENT_ERRORS as exc:
        problem = exc if isinstance(exc, Invalid) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path}: not a valid era-sklearn adapter file: {short(problem)}.") \
            from None
    return est


def _legacy_message(path):
    return (f"{path} is an era-sklearn 0.1 adapter file (.npz); this version reads the "
            f"safetensors format (file format {FORMAT_VERSION}). Convert it once with "
            f"era_sklearn.convert_legacy_adapter({str(path)!r}, 'adapter.safetensors'), then "
            "load the new file (or refit the adapter).")


def _check_metadata(metadata, cls, path):
    if metadata.get("format") != FORMAT:
        raise Invalid(f"its format is {metadata.get('format')!r}, not {FORMAT!r}")
    version = metadata.get("format_version", "")
    if not version.isdigit():
        raise Invalid(f"format_version is {version!r}, not an integer")
    if int(version) > FORMAT_VERSION:
        raise Refused(
            f"{path} was written by a newer era-sklearn (file format version {version}); this "
            f"era-sklearn reads file format version {FORMAT_VERSION}. Upgrade era-sklearn to "
            f"load it. Writer's versions: {short(metadata.get('versions'))}."
        )
    if int(version) != FORMAT_VERSION:
        raise Invalid(f"format_version {version} is not one this version writes")
    unknown, missing = set(metadata) - _META_KEYS, _META_KEYS - set(metadata)
    if unknown or missing:
        raise Invalid(f"its metadata has unknown keys {sorted(unknown)} and lacks "
                       f"{sorted(missing)}")
    if metadata["class"] != cls.__name__:
        raise Refused(f"{path} holds a {short(repr(metadata['class']))}, not a {cls.__name__}.")
    versions = loads(metadata["versions"], "versions")
    if not (isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values())):
        raise Invalid("versions is not an object of strings")
