"""On-disk cache of text embeddings: one SQLite file, raw float32 bytes, no pickle.

A row is keyed by a *namespace* (a digest of the encoder's identity: its weights,
tokenizer and output settings, or an API's url, model and dimensions) and the
SHA-256 of the text. Vectors are stored as little-endian float32 bytes and read
back with ``numpy.frombuffer``, so a cache file can hold nothing that executes.

Every row read is checked before it is returned: finite, and of the width the
model gave when it last wrote to the namespace (recorded beside the rows). A row
that fails (a torn write, an edit, a row of another model) is left out with a
warning, so the encoder computes it again and replaces it. A file that SQLite
cannot use (not SQLite, damaged, another program's tables) is a ValueError
naming it.

SQLite's own locking makes the file safe to share between threads and
processes: each operation opens its own connection, waits up to ``TIMEOUT``
seconds in all for a writer, and writes a batch in one transaction (WAL journal, so
readers never block the writer). Do not put the folder on a network file
system, where SQLite's locks are unreliable.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
import warnings
from contextlib import closing
from pathlib import Path

import numpy as np

FILENAME = "embeddings.sqlite3"
TIMEOUT = 60.0
# SQLite limits the number of ``?`` parameters of one statement (999 in old builds).
_CHUNK = 900
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS vectors (
    namespace TEXT NOT NULL,
    key BLOB NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
""",
    # The width the model's vectors had when it last wrote to the namespace.
    "CREATE TABLE IF NOT EXISTS widths (namespace TEXT PRIMARY KEY, dim INTEGER NOT NULL)",
)
_DTYPE = np.dtype("<f4")
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")


def text_key(text):
    """SHA-256 of a text; lone surrogates (from odd decodes) are hashed, not refused."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """Vectors of one encoder identity in ``folder/embeddings.sqlite3``.

    Parameters
    ----------
    folder : str or path-like
        Created if missing.
    namespace : str
        Digest of the encoder identity; rows of other namespaces are never read.

    Raises
    ------
    ValueError
        If the file is not an SQLite database, is damaged, or holds tables of
        another layout; the message names the file (delete it to start afresh).
    TimeoutError
        If another process keeps the file locked for more than ``TIMEOUT`` seconds.
    """

    def __init__(self, folder, namespace):
        self.path = Path(folder) / FILENAME
        self.namespace = namespace
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._run(_create)

    def _run(self, work):
        """``work(conn)`` on a fresh connection, run again while the file is busy, ``TIMEOUT`` s in all.

        SQLite's busy timeout does not cover every wait: where waiting could
        deadlock (switching to WAL, recovering a WAL left by a closed connection,
        opening a read snapshot while the last connection checkpoints) it answers
        "database is locked" at once. That was seen in 4 of 300 rounds of 8 threads
        opening a new cache together, so a busy answer is retried here until one
        deadline, and the TimeoutError's "over TIMEOUT s" is then true.
        """
        deadline = time.monotonic() + TIMEOUT
        pause = 0.001
        while True:
            left = deadline - time.monotonic()
            try:
                with closing(sqlite3.connect(self.path, timeout=max(left, 0.0),
                                             isolation_level=None)) as conn:
                    return work(conn)
            except sqlite3.DatabaseError as exc:
                if not (_is_busy(exc) and left > pause):
                    raise _cache_error(self.path, exc) from exc
            time.sleep(pause)
            pause = min(2 * pause, 0.1)

    def get_many(self, keys):
        """Cached vectors of ``keys`` (``text_key`` digests) as ``{key: float32 row}``.

        A row that is not finite, whose byte length disagrees with its recorded
        dimension, or whose dimension is not the model's is left out with one
        warning, so the caller recomputes and replaces it.
        """
        width, found, n_bad = self._run(lambda conn: self._read(conn, keys))
        if n_bad:
            warnings.warn(
                f"{n_bad} cached embedding(s) in {self.path} are invalid (NaN or infinity, a torn "
                f"write, or not the model's {width}-d vectors); they are encoded again and "
                "replaced.",
                UserWarning,
                stacklevel=4,  # the caller of the encoder's transform (behind set_output's wrapper)
            )
        return found

    def _read(self, conn, keys):
        """``(width, {key: valid row}, number of invalid rows)`` from one read snapshot.

        The width and the rows are read in one transaction: a writer commits rows
        and width together, and read apart a concurrent first write made every
        row look foreign.
        """
        found, n_bad = {}, 0
        conn.execute("BEGIN")
        try:
            width = self._model_width(conn)
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, dim, vector FROM vectors WHERE namespace = ? "
                    f"AND key IN ({marks})", [self.namespace, *chunk],
                )
                for key, dim, blob in rows:
                    vector = _valid_vector(dim, blob, width)
                    if vector is None:
                        n_bad += 1
                    else:
                        found[key] = vector
        finally:
            conn.execute("COMMIT")
        return width, found, n_bad

    def _model_width(self, conn):
        """The width recorded for this namespace; else (rows of an older file) the commonest."""
        row = conn.execute("SELECT dim FROM widths WHERE namespace = ?", [self.namespace]).fetchone()
        if row is None:
            row = conn.execute(
                "SELECT dim FROM vectors WHERE namespace = ? GROUP BY dim ORDER BY COUNT(*) DESC "
                "LIMIT 1",
                [self.namespace],
            ).fetchone()
        return None if row is None else row[0]

    def put_many(self, keys, vectors):
        """Store the rows of ``vectors`` (2-D float array) under ``keys`` in one transaction.

        Their width becomes the namespace's recorded width: the model's output
        is the reference that later reads are checked against.
        """
        vectors = np.ascontiguousarray(vectors, dtype=_DTYPE)
        rows = [(self.namespace, key, vectors.shape[1], row.tobytes()) for key, row in zip(keys, vectors)]
        self._run(lambda conn: _write(conn, self.namespace, rows, vectors.shape[1]))

    def __len__(self):
        query = "SELECT COUNT(*) FROM vectors WHERE namespace = ?"
        return self._run(lambda conn: conn.execute(query, [self.namespace]).fetchone()[0])


def _create(conn):
    """Switch the file to WAL (readers then never block the writer) and create the tables."""
    # The mode is stored in the file, so setting it on every open is cheap.
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in _SCHEMA:
        conn.execute(statement)


def _write(conn, namespace, rows, width):
    """Insert ``rows`` and record ``width`` for ``namespace`` in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)
        conn.execute("INSERT OR REPLACE INTO widths VALUES (?, ?)", [namespace, width])
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _is_busy(exc):
    """Whether an SQLite error says the file is locked (extended codes such as SQLITE_BUSY_RECOVERY too)."""
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(_BUSY) or "database is locked" in str(exc)


def _valid_vector(dim, blob, width):
    """The float32 row stored as ``blob``, or None unless it is whole, finite and ``width``-d."""
    if not (isinstance(blob, bytes) and isinstance(dim, int) and dim == width
            and len(blob) == dim * _DTYPE.itemsize):
        return None
    vector = np.frombuffer(blob, dtype=_DTYPE).astype(np.float32)
    return vector if np.isfinite(vector).all() else None


def _cache_error(path, exc):
    """The error to raise for an SQLite failure on the cache file ``path``."""
    name = getattr(exc, "sqlite_errorname", type(exc).__name__)
    if _is_busy(exc):
        return TimeoutError(
            f"The embedding cache {path} stayed locked by another process for over "
            f"{TIMEOUT:g} s ({exc})."
        )
    return ValueError(
        f"The embedding cache {path} cannot be used: {exc} ({name}). If the file is damaged "
        "or is not an era-sklearn embedding cache, delete it or pass another cache_dir; "
        "the cache is rebuilt as texts are encoded."
    )
