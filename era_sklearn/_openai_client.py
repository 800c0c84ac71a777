"""HTTP side of :class:`era_sklearn.encoders.OpenAIEncoder`: requests, retries, parsing.

Speaks the OpenAI ``POST {base_url}/embeddings`` protocol, which most hosted and
self-hosted embedding servers copy. Retries follow the usual contract: 408, 409,
429 and 5xx answers and transport errors (timeouts, refused or dropped
connections) are retried with exponential backoff and jitter, honouring a
``Retry-After`` or ``retry-after-ms`` header; other 4xx answers fail at once.
A 200 answer is checked strictly: a body that is not JSON, a wrong number of
vectors, a wrong index set, ragged or non-numeric vectors are errors, never
silently reordered or padded.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time

import numpy as np

logger = logging.getLogger("era_sklearn.encoders")

RETRY_STATUS = frozenset({408, 409, 429})
MAX_DELAY = 60.0  # seconds; caps both the backoff and a server's Retry-After


class EmbeddingAPIError(RuntimeError):
    """An embeddings endpoint failed, or answered something that is not a valid response.

    Raised by :class:`~era_sklearn.encoders.OpenAIEncoder` once retries are
    exhausted, on a non-retryable HTTP error, and on a malformed answer.

    Examples
    --------
    >>> from era_sklearn._openai_client import parse_embeddings
    >>> parse_embeddings(b'{"data": [{"index": 0, "embedding": [0.5, 1]}]}', n_inputs=1)
    array([[0.5, 1. ]], dtype=float32)
    >>> parse_embeddings(b'{"data": []}', n_inputs=2)
    Traceback (most recent call last):
    ...
    era_sklearn._openai_client.EmbeddingAPIError: the embeddings response holds 0 vectors for 2 inputs.
    """


def retry_delay(attempt, backoff, headers, rng):
    """Seconds to wait before retry number ``attempt`` (0-based).

    The server's ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date)
    wins when present; otherwise ``backoff * 2**attempt`` with +-25 % jitter, so
    that concurrent clients do not retry in lockstep.
    """
    wait = _retry_after(headers)
    if wait is None:
        wait = backoff * 2.0**attempt * rng.uniform(0.75, 1.25)
    return min(max(wait, 0.0), MAX_DELAY)


def _retry_after(headers):
    if headers is None:
        return None
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000.0
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError):
        return None  # an unreadable header: fall back to our own backoff


class EmbeddingsClient:
    """One ``httpx.Client`` for one ``transform`` call; shared by its worker threads.

    The API key lives only in this object's headers for the duration of the call
    and is masked in every error message.
    """

    def __init__(self, *, base_url, model, dimensions, api_key, timeout, max_retries, backoff):
        import httpx

        self._httpx = httpx
        headers = {"Content-Type": "application/json", "User-Agent": "era-sklearn"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._secret = api_key
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.dimensions = dimensions
        self.max_retries = max_retries
        self.backoff = backoff
        self.stop = threading.Event()  # set when another batch failed: stop retrying
        self._rng = random.Random()
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout))

    def close(self):
        self._client.close()

    def embed(self, texts):
        """Vectors of ``texts`` (one request, retried), float32 of shape (len(texts), dim)."""
        payload = {"model": self.model, "input": list(texts), "encoding_format": "float"}
        if self.dimensions is not None:
            payload["dimensions"] = self.dimensions
        last = None
        for attempt in range(self.max_retries + 1):
            if attempt and self.stop.wait(retry_delay(attempt - 1, self.backoff, last[1], self._rng)):
                raise EmbeddingAPIError("cancelled: another batch failed")
            last = self._post(payload)
            if last[0] is not None:
                return parse_embeddings(last[0], len(texts), self.dimensions)
            logger.warning("POST %s: %s (attempt %d of %d)", self.url, last[2],
                           attempt + 1, self.max_retries + 1)
        raise EmbeddingAPIError(
            f"POST {self.url} failed after {self.max_retries + 1} attempts; last: {last[2]}."
        )

    def _post(self, payload):
        """One request: ``(body, None, None)`` on success, ``(None, headers, reason)`` to retry."""
        httpx = self._httpx
        try:
            response = self._client.post(self.url, json=payload)
        except httpx.TimeoutException as exc:
            return None, None, f"timed out ({type(exc).__name__})"
        except httpx.TransportError as exc:
            return None, None, self._mask(f"connection failed ({type(exc).__name__}: {exc})")
        status = response.status_code
        if status == 200:
            return response.content, None, None
        reason = self._mask(f"HTTP {status}: {_short(response.text)}")
        if status in RETRY_STATUS or status >= 500:
            return None, response.headers, reason
        raise EmbeddingAPIError(f"POST {self.url} was refused, {reason}")

    def _mask(self, text):
        return text.replace(self._secret, "***") if self._secret else text


def _short(text, limit=300):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def parse_embeddings(body, n_inputs, dimensions=None):
    """Vectors of an OpenAI embeddings response, in input order, checked strictly.

    Parameters
    ----------
    body : bytes or str
        The response body.
    n_inputs : int
        Number of texts sent.
    dimensions : int or None
        Width requested, checked when given.

    Returns
    -------
    ndarray of shape (n_inputs, dim), float32

    Raises
    ------
    EmbeddingAPIError
        On anything but a complete, consistent set of finite numeric vectors.
    """
    import json

    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise EmbeddingAPIError(f"the embeddings response is not valid JSON ({exc}): {_short(str(body), 120)}") from None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise EmbeddingAPIError(f"the embeddings response has no 'data' list: {_short(str(payload), 120)}")
    if len(data) != n_inputs:
        raise EmbeddingAPIError(f"the embeddings response holds {len(data)} vectors for {n_inputs} inputs.")
    try:
        indices = [item["index"] for item in data]
        vectors = [item["embedding"] for item in data]
    except (TypeError, KeyError) as exc:
        raise EmbeddingAPIError(f"an item of the embeddings response lacks {exc}.") from None
    if sorted(indices) != list(range(n_inputs)) or not all(type(i) is int for i in indices):
        raise EmbeddingAPIError(
            f"the embeddings response's indices {sorted(indices, key=str)[:10]} are not 0..{n_inputs - 1}, each once."
        )
    out = None
    for index, vector in zip(indices, vectors):
        row = np.asarray(vector) if isinstance(vector, list) else np.asarray(None)
        if row.ndim != 1 or row.dtype.kind not in "iuf" or row.size == 0:
            raise EmbeddingAPIError(
                f"the embedding at index {index} is not a non-empty list of numbers: {_short(str(vector), 80)}"
            )
        if out is None:
            out = np.empty((n_inputs, row.size), dtype=np.float32)
        if row.size != out.shape[1]:
            raise EmbeddingAPIError(
                f"the embeddings response is ragged: index {index} has {row.size} values, others {out.shape[1]}."
            )
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
            out[index] = row
    if dimensions is not None and out.shape[1] != dimensions:
        raise EmbeddingAPIError(f"asked for {dimensions} dimensions, the response has {out.shape[1]}.")
    if not np.isfinite(out).all():
        raise EmbeddingAPIError("the embeddings response holds NaN or infinite values.")
    return out
