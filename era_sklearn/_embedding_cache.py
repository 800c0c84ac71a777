"""On-disk cache of text embeddings: one SQLite file, raw float32 bytes, no pickle.

A row is keyed by a *namespace* (a digest of the encoder's identity: its weights,
tokenizer and output settings, or an API's url, model and dimensions) and the
SHA-256 of the text. Vectors are stored as little-endian float32 bytes and read
back with ``numpy.frombuffer``, so a cache file can hold nothing that executes.

SQLite's own locking makes the file safe to share between threads and
processes: each operation opens its own connection, waits up to ``TIMEOUT``
seconds for a writer, and writes a batch in one transaction (WAL journal, so
readers never block the writer). Do not put the folder on a network file
system, where SQLite's locks are unreliable.
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np

FILENAME = "embeddings.sqlite3"
TIMEOUT = 60.0
# SQLite limits the number of ``?`` parameters of one statement (999 in old builds).
_CHUNK = 900
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    namespace TEXT NOT NULL,
    key BLOB NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
"""
_DTYPE = np.dtype("<f4")


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
    """

    def __init__(self, folder, namespace):
        self.path = Path(folder) / FILENAME
        self.namespace = namespace
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn:
            # WAL lets readers proceed while one process writes; the mode is
            # stored in the file, so setting it once per open is cheap.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)

    def _connect(self):
        return sqlite3.connect(self.path, timeout=TIMEOUT, isolation_level=None)

    def get_many(self, keys):
        """Cached vectors of ``keys`` (``text_key`` digests) as ``{key: float32 row}``.

        A row whose byte length disagrees with its recorded dimension (a torn or
        foreign write) is left out, so the caller recomputes and replaces it.
        """
        found = {}
        with closing(self._connect()) as conn:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, dim, vector FROM vectors WHERE namespace = ? AND key IN ({marks})",
                    [self.namespace, *chunk],
                )
                for key, dim, blob in rows:
                    if isinstance(blob, bytes) and len(blob) == dim * _DTYPE.itemsize:
                        found[key] = np.frombuffer(blob, dtype=_DTYPE).astype(np.float32)
        return found

    def put_many(self, keys, vectors):
        """Store the rows of ``vectors`` (2-D float array) under ``keys`` in one transaction."""
        vectors = np.ascontiguousarray(vectors, dtype=_DTYPE)
        rows = [(self.namespace, key, vectors.shape[1], row.tobytes()) for key, row in zip(keys, vectors)]
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def __len__(self):
        with closing(self._connect()) as conn:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM vectors WHERE namespace = ?", [self.namespace]
            ).fetchone()
        return n
