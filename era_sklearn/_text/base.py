"""The machinery shared by the text encoders: validation, batching, cache, progress.

A subclass says how to encode one batch of texts (``_encode_batch``) and what
identifies its model (``_identity``); :class:`TextEncoder` does the rest:
deduplicates the texts, reads the cache, encodes the misses batch by batch
(writing each finished batch to the cache at once, so an interrupted long run
resumes where it stopped), checks every vector and warns about all-zero rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import closing
from numbers import Integral
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from era_sklearn._text.cache import EmbeddingCache, text_key

# "auto" shows the progress bar when more batches than this are left to encode.
AUTO_PROGRESS_BATCHES = 10


def check_texts(X, owner="the encoder"):
    """``X`` as a non-empty list of str, or a TypeError/ValueError that says what is wrong."""
    if isinstance(X, (str, bytes)):
        raise TypeError(
            f"{owner} expects a list of texts, got a single {type(X).__name__}; "
            "wrap it in a list: [text]."
        )
    if isinstance(X, np.ndarray) and X.ndim != 1:
        raise ValueError(f"{owner} expects a 1-D list of texts, got an array of shape {X.shape}.")
    if hasattr(X, "ndim") and getattr(X, "ndim", 1) != 1:  # a DataFrame
        raise ValueError(
            f"{owner} expects a 1-D list of texts, got a {type(X).__name__} of "
            f"{X.ndim} dimensions; pass one column."
        )
    try:
        texts = list(X)
    except TypeError:
        raise TypeError(f"{owner} expects a list of texts, got {type(X).__name__}.") from None
    if not texts:
        raise ValueError(f"{owner} got no texts (an empty list); pass at least one.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"{owner} expects str texts; item {i} is {type(text).__name__} ({text!r:.60})."
            )
    return [str(t) for t in texts]  # np.str_ -> str


def digest(*parts):
    """SHA-256 hex digest of byte strings and JSON-able values, order-sensitive."""
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


class TextEncoder(TransformerMixin, BaseEstimator):
    """Base of the encoders: ``transform(list of str) -> float32 (n_texts, dim)``.

    ``fit`` only validates (the models are pre-trained), and ``transform`` may
    be called without it.
    """

    _parameter_constraints: ClassVar[dict] = {
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "cache_dir": [str, os.PathLike, None],
        "show_progress": ["boolean", StrOptions({"auto"})],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # a pre-trained model: nothing to learn
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def fit(self, X, y=None):
        """Check the parameters and the texts; nothing is learned.

        Parameters
        ----------
        X : list of str
            Texts.
        y : None
            Ignored.

        Returns
        -------
        self : object
        """
        self._validate_params()
        check_texts(X, type(self).__name__)
        return self

    def fit_transform(self, X, y=None):
        """Check the parameters, then embed the texts (``X`` is read once: a generator works).

        Parameters
        ----------
        X : list of str
            Texts.
        y : None
            Ignored.

        Returns
        -------
        ndarray of shape (n_texts, dim), float32
        """
        texts = check_texts(X, type(self).__name__)
        return self.fit(texts).transform(texts)

    def transform(self, X):
        """Embed texts.

        Parameters
        ----------
        X : list of str
            Texts. Repeated texts are encoded once; cached ones not at all.

        Returns
        -------
        ndarray of shape (n_texts, dim), float32
        """
        self._validate_params()
        texts = check_texts(X, type(self).__name__)
        position = {}
        inverse = np.fromiter((position.setdefault(t, len(position)) for t in texts), np.intp, len(texts))
        unique = list(position)
        cache = self._open_cache()
        keys = [text_key(t) for t in unique] if cache is not None else None
        found = cache.get_many(keys) if cache is not None else {}
        out = _RowCollector(len(unique))
        for i, key in enumerate(keys or ()):
            if key in found:
                out.set([i], found[key][None, :], "the cache")
        todo = [i for i in range(len(unique)) if not out.done[i]]
        # closing(): a failed check below stops the batches still running at once.
        with closing(self._encode_rows(unique, todo)) as batches:
            for rows, vectors in batches:
                vectors = self._check_batch(vectors, len(rows))
                out.set(rows, vectors, "the model")
                if cache is not None:
                    cache.put_many([keys[i] for i in rows], vectors)
        result = out.matrix[inverse]
        _warn_zero_rows(result, type(self).__name__)
        return result

    # -- hooks for subclasses ------------------------------------------------
    def _identity(self):
        """JSON-able or bytes parts that identify the model and its output settings."""
        raise NotImplementedError

    def _encode_batch(self, texts):
        """Embed one batch of texts; return an array of shape (len(texts), dim)."""
        raise NotImplementedError

    def _encode_rows(self, texts, rows):
        """Yield ``(rows, vectors)`` for the ``rows`` of ``texts`` to encode, batch by batch."""
        batches = [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        with self._progress(len(rows), len(batches)) as bar:
            for batch in batches:
                yield batch, self._encode_batch([texts[i] for i in batch])
                bar.update(len(batch))

    # -- shared pieces -------------------------------------------------------
    def _progress(self, n_texts, n_batches):
        from tqdm.auto import tqdm

        show = self.show_progress
        if show == "auto":
            show = n_batches > AUTO_PROGRESS_BATCHES
        return tqdm(total=n_texts, unit="text", desc=type(self).__name__, disable=not show)

    def _open_cache(self):
        if self.cache_dir is None:
            return None
        namespace = digest(type(self).__name__, *self._identity())
        return EmbeddingCache(self.cache_dir, namespace)

    def _check_batch(self, vectors, n_rows):
        name = type(self).__name__
        try:
            vectors = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: the model returned non-numeric embeddings ({exc}).") from exc
        if vectors.ndim != 2 or vectors.shape[0] != n_rows:
            raise ValueError(
                f"{name}: the model returned an array of shape {vectors.shape} for {n_rows} texts."
            )
        if not np.isfinite(vectors).all():
            raise ValueError(f"{name}: the model returned NaN or infinite values; nothing was cached.")
        return vectors


class _RowCollector:
    """Rows of the output matrix, allocated once the first vector shows the dimension."""

    def __init__(self, n_rows):
        self.matrix = None
        self.done = np.zeros(n_rows, dtype=bool)

    def set(self, rows, vectors, source):
        if self.matrix is None:
            self.matrix = np.empty((len(self.done), vectors.shape[1]), dtype=np.float32)
        if vectors.shape[1] != self.matrix.shape[1]:
            raise ValueError(
                f"{source} gave {vectors.shape[1]}-d vectors where earlier ones were "
                f"{self.matrix.shape[1]}-d; the model or the cache is inconsistent "
                "(delete the cache folder if the model changed in place)."
            )
        self.matrix[rows] = vectors
        self.done[rows] = True


def _warn_zero_rows(result, name):
    """One warning per call with the count of all-zero rows (kept: they are data)."""
    n_zero = int((~result.any(axis=1)).sum())
    if n_zero:
        warnings.warn(
            f"{name}: {n_zero} of {len(result)} texts have an all-zero embedding (no token known "
            "to the model, or an empty text). They are kept as zero rows; a cosine index "
            "cannot rank them.",
            UserWarning,
            stacklevel=4,  # the caller of transform (behind sklearn's set_output wrapper)
        )
