"""Checks of an hnswlib index file before hnswlib reads it.

``hnswlib``'s ``loadIndex`` trusts its file and the ``dim`` it is handed: a vector
size that disagrees with ``dim``, a neighbour id past the element count or an entry
point above its own level make it read outside its buffers (NaN distances at best,
a segfault at worst). :func:`check_index_file` parses the layout written by
``HierarchicalNSW::saveIndex`` (hnswlib 0.8, ``hnswlib/hnswalg.h``) with numpy and
refuses, with a ValueError naming the field, any file that hnswlib could not search
safely or that disagrees with what the caller expects of it.

Layout: a packed header (below), then ``cur_element_count`` level-0 records of
``size_data_per_element`` bytes each (a 4-byte link header whose low 16 bits count
the neighbours and whose third byte holds the deleted mark, ``maxM0`` uint32
neighbour ids, ``dim`` float32 values, a uint64 label), then for every element a
uint32 byte size and its upper-level link lists (``level`` records of a 4-byte link
header and ``maxM`` uint32 ids).
"""

import os

import numpy as np
from sklearn.utils import gen_batches

__all__ = ["check_index_file"]

# hnswlib writes its native byte order; every platform it builds on is little-endian.
HEADER = np.dtype(
    [
        ("offset_level0", "<u8"),
        ("max_elements", "<u8"),
        ("cur_element_count", "<u8"),
        ("size_data_per_element", "<u8"),
        ("label_offset", "<u8"),
        ("offset_data", "<u8"),
        ("maxlevel", "<i4"),
        ("enterpoint_node", "<u4"),
        ("maxM", "<u8"),
        ("maxM0", "<u8"),
        ("M", "<u8"),
        ("mult", "<f8"),
        ("ef_construction", "<u8"),
    ]
)
#: Largest row norm the "ip" and "l2" spaces accept: inner products and squared
#: distances of such rows stay far below float32's maximum (3.4e38).
MAX_NORM = 1e18
_WORD = 4  # bytes of a link header and of a neighbour id (hnswlib's tableint)
_ROWS_PER_CHUNK = 1 << 16  # bounds the temporaries of the level-0 checks


class _Corrupt(ValueError):
    """Raised for the first disagreement found; the caller adds the path."""


def _require(ok, message):
    if not ok:
        raise _Corrupt(message)


def check_index_file(path, *, dim, n_elements, space):
    """Raise ValueError unless ``path`` holds an index hnswlib can search safely.

    Parameters
    ----------
    path : str or path-like
        hnswlib index file.
    dim, n_elements : int
        Vector dimension and number of stored vectors the file must have.
    space : {"cosine", "ip", "l2"}
        For ``"cosine"`` the stored vectors must be unit-norm (or zero), for the
        others of norm at most :data:`MAX_NORM` (what ``fit`` accepts).

    Returns
    -------
    max_elements : int
        Capacity recorded in the header.
    """
    try:
        return _check(path, dim, n_elements, space)
    except _Corrupt as e:
        raise ValueError(f"{path} is not a valid hnswlib index for this metadata: {e}") from None


def _check(path, dim, n_elements, space):
    size = os.path.getsize(path)
    _require(
        size >= HEADER.itemsize, f"{size} bytes, shorter than the {HEADER.itemsize}-byte header"
    )
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    header = raw[: HEADER.itemsize].view(HEADER)[0]
    M = _check_header(header, dim, n_elements)
    level0_end = HEADER.itemsize + n_elements * int(header["size_data_per_element"])
    _require(size >= level0_end, f"{size} bytes cannot hold {n_elements} elements")
    levels = _upper_levels(raw, level0_end, n_elements, M)
    _check_entry_point(header, levels)
    records = raw[HEADER.itemsize : level0_end].reshape(n_elements, -1)
    labelled = np.zeros(n_elements, dtype=bool)
    for rows in gen_batches(n_elements, _ROWS_PER_CHUNK):
        _check_level0(records[rows], rows.start, labelled, dim, M, space)
    return int(header["max_elements"])


def _check_header(header, dim, n_elements):
    """Check the header against ``dim`` and ``n_elements``; return its M."""
    M = int(header["M"])
    _require(2 <= M <= 10_000, f"header M is {M}, outside hnswlib's range 2 .. 10000")
    links0 = _WORD * (2 * M + 1)
    stored_dim = (int(header["label_offset"]) - int(header["offset_data"])) / 4
    _require(
        stored_dim == dim,
        f"the file stores vectors of {stored_dim:g} values, the metadata says dim={dim}",
    )
    expected = {
        "offset_level0": 0,
        "cur_element_count": n_elements,
        "maxM": M,
        "maxM0": 2 * M,
        "offset_data": links0,
        "label_offset": links0 + 4 * dim,
        "size_data_per_element": links0 + 4 * dim + 8,
    }
    for field, value in expected.items():
        found = int(header[field])
        _require(found == value, f"header {field} is {found}, expected {value}")
    # hnswlib keeps ef_construction >= M; a smaller one can leave a new element unlinked.
    _require(
        int(header["ef_construction"]) >= M,
        f"header ef_construction {int(header['ef_construction'])} is below M = {M}",
    )
    _require(
        int(header["max_elements"]) >= n_elements,
        f"header max_elements {int(header['max_elements'])} < element count {n_elements}",
    )
    # mult_ draws the level of every added element; a wrong one makes absurd levels.
    _require(
        np.isclose(header["mult"], 1 / np.log(M), rtol=1e-9, atol=0),
        f"header mult is {float(header['mult'])}, expected 1/log(M) = {1 / np.log(M)}",
    )
    return M


def _upper_levels(raw, start, n_elements, M):
    """Level of every element, after checking the upper-level link lists.

    The tail is a sequence of ``(uint32 size, size bytes of links)``; sizes are
    multiples of 4, so it is read as uint32 words, jumping over the runs of zero
    sizes (level-0 elements, the vast majority) with one search each.
    """
    tail = raw[start:]
    _require(tail.size % _WORD == 0, "upper-level link lists are not whole 4-byte words")
    words = tail.view("<u4")
    row_words = M + 1  # link header + maxM ids
    nonzero = np.flatnonzero(words)
    levels = np.zeros(n_elements, dtype=np.int64)
    owners, offsets = [], []
    pos, element = 0, 0
    while element < n_elements:
        k = np.searchsorted(nonzero, pos)
        nxt = int(nonzero[k]) if k < nonzero.size else words.size
        skip = min(nxt - pos, n_elements - element)  # zero sizes: level-0 elements
        pos, element = pos + skip, element + skip
        if element == n_elements:
            break
        _require(pos < words.size, f"the file ends before element {element}'s upper links")
        n_bytes = int(words[pos])
        _require(
            n_bytes % (_WORD * row_words) == 0,
            f"element {element} has {n_bytes} bytes of upper links, not a multiple of "
            f"{_WORD * row_words}",
        )
        levels[element] = n_bytes // (_WORD * row_words)
        owners.append(element)
        offsets.append(pos + 1)
        pos += 1 + n_bytes // _WORD
        _require(pos <= words.size, f"element {element}'s upper links run past the end of the file")
        element += 1
    _require(
        pos == words.size, f"{_WORD * (words.size - pos)} trailing bytes after the last element"
    )
    if owners:
        _check_upper_links(words, np.array(owners), np.array(offsets), levels, row_words)
    return levels


def _check_upper_links(words, owners, offsets, levels, row_words):
    """Every upper-level neighbour exists and lives on that level (hnswlib reads its list there)."""
    n_rows = levels[owners]
    row_owner = np.repeat(owners, n_rows)
    first_row = np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    row_level = np.arange(len(row_owner)) - first_row + 1
    row_start = np.repeat(offsets, n_rows) + (row_level - 1) * row_words
    rows = words[row_start[:, None] + np.arange(row_words)]
    used = _check_links(rows, "upper-level", row_owner)
    ids = rows[:, 1:][used]
    _refuse_any(ids >= len(levels), lambda i: "an upper-level link points past the last element")
    below = levels[ids] < np.broadcast_to(row_level[:, None], used.shape)[used]
    _refuse_any(below, lambda i: "an upper-level link points to an element below that level")


def _refuse_any(bad, describe):
    """Raise ``describe(i)`` for the first index ``i`` where ``bad`` holds."""
    hits = np.flatnonzero(bad)
    if hits.size:
        raise _Corrupt(describe(hits[0]))


def _check_links(rows, where, owner):
    """Check link headers (count <= capacity, no deleted mark); return the mask of used slots."""
    header = rows[:, 0]
    _refuse_any(
        header >> 16,
        lambda i: f"element {owner[i]} is marked deleted or has a corrupt {where} link header",
    )
    count = (header & 0xFFFF).astype(np.int64)
    capacity = rows.shape[1] - 1
    _refuse_any(
        count > capacity,
        lambda i: f"element {owner[i]} lists {count[i]} {where} neighbours, more than {capacity}",
    )
    return np.arange(capacity) < count[:, None]


def _check_entry_point(header, levels):
    entry, top = int(header["enterpoint_node"]), int(header["maxlevel"])
    _require(entry < len(levels), f"entry point {entry} is past the last element")
    _require(
        top == levels.max() == levels[entry],
        f"top level {top} disagrees with the levels stored (max {levels.max()}, "
        f"entry point's {levels[entry]})",
    )


def _check_level0(records, first, labelled, dim, M, space):
    """Links, vectors and labels of the level-0 records of elements ``first ...``."""
    n_elements = len(labelled)
    owner = np.arange(first, first + len(records))
    start = _WORD * (2 * M + 1)
    links = records[:, :start].view("<u4")
    used = _check_links(links, "level-0", owner)
    _refuse_any(
        links[:, 1:][used] >= n_elements, lambda i: "a level-0 link points past the last element"
    )
    vectors = records[:, start : start + 4 * dim].view("<f4")
    _refuse_any(
        ~np.isfinite(vectors).all(axis=1),
        lambda i: f"stored vector {owner[i]} holds NaN or infinity",
    )
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
    if space != "cosine":
        _refuse_any(
            norms > MAX_NORM,
            lambda i: f"stored vector {owner[i]} has norm {norms[i]:.3g}, above {MAX_NORM:.0e}",
        )
    else:
        # hnswlib stores cosine vectors normalised; others were built in another space.
        _refuse_any(
            (norms != 0) & (np.abs(norms - 1) > 1e-3),
            lambda i: (
                f"stored vector {owner[i]} has norm {norms[i]:.6g}, not 1: "
                "the index was not built in cosine space"
            ),
        )
    # Labels are the documents' row positions, each exactly once (a threaded build
    # stores them in arrival order, so not necessarily in order).
    labels = records[:, start + 4 * dim :].view("<u8")[:, 0]
    _refuse_any(
        labels >= n_elements,
        lambda i: f"element {owner[i]} has label {labels[i]}, past the last row position",
    )
    _refuse_any(
        labelled[labels] | _repeated(labels),
        lambda i: f"label {labels[i]} is stored more than once",
    )
    labelled[labels] = True


def _repeated(values):
    """Mask of the entries equal to an earlier entry."""
    order = np.argsort(values, kind="stable")
    later = np.zeros(len(values), dtype=bool)
    later[order[1:]] = values[order[1:]] == values[order[:-1]]
    return later
