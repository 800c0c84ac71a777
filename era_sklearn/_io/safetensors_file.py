"""The container of a saved estimator: a bounded, digest-checked safetensors file.

This module knows tensors, a string-to-string metadata table and a SHA-256 over
both; it knows nothing of estimators, so the JSON state encoding
(:mod:`.state_codec`) and the format's own fields (:mod:`.persistence`) are
written on top of it. Reading is bounded before anything is allocated: the
header may not exceed :data:`MAX_HEADER_BYTES`, every tensor must have an
allowed dtype and a declared size equal to ``prod(shape) * itemsize`` inside
the file, the tensors must tile the data section exactly and their total may
not exceed :data:`MAX_TENSOR_BYTES`.
"""

import hashlib
import json
import math
import os
import secrets
import struct
from typing import NamedTuple

import numpy as np
import safetensors.numpy

#: Largest safetensors header (JSON: tensor table + metadata) read. Real
#: adapters need a few kB (a 1,000-epoch training history is ~120 kB); the
#: bound also caps what ``json.loads`` can build from a hostile header.
MAX_HEADER_BYTES = 1 << 20
#: Largest total of tensor bytes read (4 GiB; a 4096 x 4096 float64 map is 128 MiB).
MAX_TENSOR_BYTES = 1 << 32
_DIGEST_CHUNK = 1 << 22  # bytes hashed at a time when checking a file's digest
DTYPES = {"F64": np.float64, "F32": np.float32, "I64": np.int64, "I32": np.int32,
          "U8": np.uint8, "BOOL": np.bool_}
DTYPE_CODES = {np.dtype(v): k for k, v in DTYPES.items()}


class Invalid(ValueError):
    """A problem with the file's content; the loader adds the path."""


class Refused(ValueError):
    """A readable file this version will not load (newer format, other class, 0.1 archive)."""


class ZipArchive(Refused):
    """The file is a zip archive (era-sklearn 0.1 wrote ``.npz``): the caller says how to convert."""


#: What decoding hostile content can raise besides Invalid: reported as an invalid file.
CONTENT_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
                  RecursionError)


def short(text, limit=400):
    """A message part echoing file content, cut so a hostile file cannot flood the error."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def dumps(value, sort_keys=True):
    return json.dumps(value, allow_nan=False, sort_keys=sort_keys, separators=(",", ":"))


def loads(text, what):
    """Strict JSON: no NaN/Infinity literals, no duplicate keys, bounded nesting."""
    def reject_constant(name):
        raise Invalid(f"{what} contains the non-JSON constant {name}")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise Invalid(f"{what} has duplicate keys")
        return dict(pairs)

    try:
        return json.loads(text, parse_constant=reject_constant, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, Invalid):
            raise
        raise Invalid(f"{what} is not valid JSON ({type(exc).__name__})") from None


# -- write -------------------------------------------------------------------
def encode(tensors, metadata):
    """The file's bytes, with ``sha256`` added to ``metadata``, and the header's size."""
    metadata = {**metadata, "sha256": digest(metadata, tensors)}
    data = safetensors.numpy.save(tensors, metadata=metadata)
    return data, int.from_bytes(data[:8], "little")


def atomic_write(path, data):
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


def digest(metadata, tensors):
    """SHA-256 of the metadata (but ``sha256``) and of every tensor, in name order."""
    h = metadata_hash(metadata)
    for name in sorted(tensors):
        a = tensors[name]
        h.update(tensor_label(name, a.dtype, a.shape))
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def metadata_hash(metadata):
    return hashlib.sha256(dumps({k: v for k, v in metadata.items() if k != "sha256"}).encode())


def tensor_label(name, dtype, shape):
    """What the digest hashes before a tensor's bytes: its name, dtype code and shape."""
    return dumps([name, DTYPE_CODES[np.dtype(dtype)], list(shape)]).encode()


# -- read --------------------------------------------------------------------
def read_header(path):
    """(tensor specs, metadata) after checking every size against the file's."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if prefix[:4] == b"PK\x03\x04":
            raise ZipArchive(str(path))
        if len(prefix) < 8:
            raise Invalid(f"it has {size} bytes, fewer than a safetensors header")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES:
            raise Invalid(f"its header claims {n} bytes, over the {MAX_HEADER_BYTES}-byte limit")
        if 8 + n > size:
            raise Invalid(f"its header claims {n} bytes but only {size - 8} follow (truncated?)")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("its header is not UTF-8") from None
    header = loads(text, "the header")
    if not isinstance(header, dict):
        raise Invalid("its header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise Invalid("its header has no __metadata__ of strings (not written by save?)")
    return check_tensor_table(header, 8 + n, size - 8 - n), metadata


class _TensorSpec(NamedTuple):
    dtype: type
    shape: tuple
    start: int  # byte offset of the tensor's data in the file
    nbytes: int


def check_tensor_table(table, data_start, data_size):
    """Each tensor's dtype, shape and offsets; together they must tile the data exactly."""
    specs, end_of_previous = {}, 0
    for name, spec in sorted(table.items(), key=lambda kv: _offsets(kv)[0]):
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise Invalid(f"tensor {name!r} has a malformed entry")
        dtype, shape = DTYPES.get(spec["dtype"]), spec["shape"]
        if dtype is None:
            raise Invalid(f"tensor {name!r} has dtype {spec['dtype']!r}; allowed: {sorted(DTYPES)}")
        if not (isinstance(shape, list) and all(is_int(d) and d >= 0 for d in shape)):
            raise Invalid(f"tensor {name!r} has shape {shape!r}")
        start, end = _offsets((name, spec))
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize  # python ints: no overflow
        if start != end_of_previous or end - start != nbytes or end > data_size:
            raise Invalid(f"tensor {name!r} declares shape {shape} ({nbytes} bytes) at offsets "
                           f"[{start}, {end}] of a {data_size}-byte data section")
        end_of_previous = end
        specs[name] = _TensorSpec(dtype, tuple(shape), data_start + start, nbytes)
    if end_of_previous != data_size:
        raise Invalid(f"its tensors cover {end_of_previous} of {data_size} data bytes")
    if data_size > MAX_TENSOR_BYTES:
        raise Invalid(f"its tensors hold {data_size} bytes, over the {MAX_TENSOR_BYTES}-byte "
                       "limit")
    return specs


def _offsets(item):
    name, spec = item
    offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(is_int, offsets))
            and 0 <= offsets[0] <= offsets[1]):
        raise Invalid(f"tensor {name!r} has data_offsets {offsets!r}")
    return offsets


def check_all_referenced(specs, state):
    """Refuse tensors that no ``__ndarray__`` tag names, before any tensor is read.

    Decoding later checks each reference itself (the tensor exists and is used
    once); every tagged object decodes all its values or is refused, so a tensor
    named here is one that decoding uses.
    """
    unreferenced = sorted(set(specs) - tensor_references(state))
    if unreferenced:
        raise Invalid(f"tensors {unreferenced[:5]} are not referenced by the metadata")


def tensor_references(value):
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


def file_digest(path, metadata, specs):
    """:func:`digest` of the tensors as stored in ``path``, hashed in bounded chunks.

    Nothing of the data section is kept, so a damaged or edited file is refused
    with memory growth of one chunk, whatever size its table declares.
    """
    h = metadata_hash(metadata)
    buffer = memoryview(bytearray(_DIGEST_CHUNK))
    with open(path, "rb") as f:
        for name in sorted(specs):
            spec = specs[name]
            h.update(tensor_label(name, spec.dtype, spec.shape))
            f.seek(spec.start)
            left = spec.nbytes
            while left:
                n = f.readinto(buffer[: min(left, _DIGEST_CHUNK)])
                if not n:
                    raise Invalid("it is shorter than its tensor table says (truncated while "
                                   "reading?)")
                h.update(buffer[:n])
                left -= n
    return h.hexdigest()


def read_tensors(path, specs):
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
                raise Invalid(f"tensor {name!r} is shorter than its table entry (truncated "
                               "while reading?)")
            tensors[name] = a
    return tensors


