"""HTTP side of :class:`era_sklearn.encoders.OpenAIEncoder`: requests, retries, parsing.

Speaks the OpenAI ``POST {base_url}/embeddings`` protocol, which most hosted and
self-hosted embedding servers copy. Retries follow the usual contract: 408, 409,
429 and 5xx answers and transport errors (timeouts, refused or dropped
connections) are retried with exponential backoff and jitter, honouring a
``Retry-After`` or ``retry-after-ms`` header; other 4xx answers fail at once.
A 200 answer is checked strictly: a body that is not JSON, a wrong number of
vectors, a wrong index set, ragged or non-numeric vectors are errors, never
silently reordered or padded.

The server is not trusted: each request must end within ``timeout`` (all of it,
not each read), its body must fit a size cap (received and decompressed bytes
alike; see :func:`response_cap`), and the API key is masked in the body and in
every message before anything is quoted or cut. Any failure of the server is an
:class:`EmbeddingAPIError`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import reprlib
import threading
import time

import numpy as np

logger = logging.getLogger("era_sklearn.encoders")

RETRY_STATUS = frozenset({408, 409, 429})
MAX_DELAY = 60.0  # seconds; caps both the backoff and a server's Retry-After
ERROR_BODY_BYTES = 64 * 1024  # read of a failed answer's body, for its message
DEFAULT_MAX_RESPONSE_BYTES = 32 * 2**20  # the size cap while the vectors' width is unknown
# The cap sized from a batch: a JSON float takes at most 24 characters, and a separator
# and indentation in a pretty-printed answer; each item has its index and other fields,
# the envelope the model's name, the usage and the like. Generous, yet linear.
VALUE_BYTES, ITEM_BYTES, ENVELOPE_BYTES = 48, 1024, 2**20


class EmbeddingAPIError(RuntimeError):
    """An embeddings endpoint failed, or answered something that is not a valid response.

    Raised by :class:`~era_sklearn.encoders.OpenAIEncoder` once retries are
    exhausted, on a non-retryable HTTP error, and on a malformed answer.

    Examples
    --------
    >>> from era_sklearn._text.openai_client import parse_embeddings
    >>> parse_embeddings(b'{"data": [{"index": 0, "embedding": [0.5, 1]}]}', n_inputs=1)
    array([[0.5, 1. ]], dtype=float32)
    >>> parse_embeddings(b'{"data": []}', n_inputs=2)
    Traceback (most recent call last):
    ...
    era_sklearn._text.openai_client.EmbeddingAPIError: the embeddings response holds 0 vectors for 2 inputs.
    """


def response_cap(n_texts, width, max_response_bytes=None):
    """Largest response body accepted for ``n_texts`` vectors of ``width`` values.

    ``max_response_bytes`` wins when given; an unknown ``width`` (None) gives
    :data:`DEFAULT_MAX_RESPONSE_BYTES`. The cap applies to the bytes received and,
    separately, to the bytes they decompress to.

    Examples
    --------
    >>> from era_sklearn._text.openai_client import response_cap
    >>> response_cap(128, 3072)  # 1 MiB + 128 * (1 KiB + 48 * 3072)
    20054016
    >>> response_cap(128, None)
    33554432
    """
    if max_response_bytes is not None:
        return max_response_bytes
    if width is None:
        return DEFAULT_MAX_RESPONSE_BYTES
    return ENVELOPE_BYTES + n_texts * (ITEM_BYTES + VALUE_BYTES * width)


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


class _KeyFilter(logging.Filter):
    """Masks the keys of the open clients in httpcore's debug lines, which print every
    response header (a server may echo the key in one)."""

    LOGGERS = ("httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
               "httpcore.socks")

    def __init__(self):
        super().__init__()
        self._forms = {}  # id(client) -> the forms of its key
        self._lock = threading.Lock()

    def add(self, owner, forms):
        if forms:
            with self._lock:
                self._forms[id(owner)] = forms
            for name in self.LOGGERS:
                logging.getLogger(name).addFilter(self)  # once: addFilter skips a filter it has

    def discard(self, owner):
        with self._lock:
            self._forms.pop(id(owner), None)

    def filter(self, record):
        with self._lock:
            forms = [form for owned in self._forms.values() for form in owned]
        if forms:
            message = record.getMessage()
            masked = mask(message, forms)
            if masked != message:
                record.msg, record.args = masked, None
        return True


_KEY_FILTER = _KeyFilter()


def key_forms(secret):
    """The ways ``secret`` can appear in a body or a message, longest first: as it is,
    JSON-escaped (with '/' escaped or not) and inside the repr of bytes."""
    if not secret:
        return []
    escaped = json.dumps(secret)[1:-1]
    forms = {secret, escaped, escaped.replace("/", "\\/"), repr(secret.encode())[2:-1]}
    return sorted(forms, key=len, reverse=True)


def mask(text, forms):
    """``text`` (str or bytes) with every form of the key replaced by ``***``."""
    stars = "***" if isinstance(text, str) else b"***"
    for form in forms:
        text = text.replace(form if isinstance(text, str) else form.encode(), stars)
    return text


class EmbeddingsClient:
    """One connection pool for one ``transform`` call; shared by its worker threads.

    The API key lives only in this object's headers for the duration of the call
    and is masked in the bodies it receives and in every error and log message.
    Each request must end within ``timeout`` seconds and its body fit
    :func:`response_cap`; the width the cap is sized from is ``dimensions``, or
    that of the first answer.
    """

    def __init__(self, *, base_url, model, dimensions, api_key, timeout, max_retries, backoff,
                 max_response_bytes=None, max_connections=4):
        import httpx

        from era_sklearn._text.bounded_http import BoundedSession

        try:
            url = httpx.URL(base_url.rstrip("/") + "/embeddings")  # IDNA-encodes the host
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ValueError(f"OpenAIEncoder: base_url {base_url!r} is not a valid URL ({exc}).") from None
        if url.scheme not in ("http", "https") or not url.host or not 0 < (url.port or 1) < 65536:
            raise ValueError(
                f"OpenAIEncoder: base_url must be an http:// or https:// URL with a host (and a port "
                f"below 65536), got {base_url!r}."
            )
        self.url = str(url)
        self._headers = [("Content-Type", "application/json"), ("User-Agent", "era-sklearn")]
        if api_key:
            self._headers.append(("Authorization", f"Bearer {api_key}"))
        self._forms = key_forms(api_key)
        self.model = model
        self.dimensions = dimensions
        self.width = dimensions  # or learned from the first answer; sizes the cap
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_response_bytes = max_response_bytes
        self.stop = threading.Event()  # set when another batch failed: stop retrying
        self._rng = random.Random()
        self._session = BoundedSession(self.url, max_connections=max_connections)
        _KEY_FILTER.add(self, self._forms)

    def close(self):
        self._session.close()
        _KEY_FILTER.discard(self)

    def embed(self, texts):
        """Vectors of ``texts`` (one request, retried), float32 of shape (len(texts), dim)."""
        payload = {"model": self.model, "input": list(texts), "encoding_format": "float"}
        if self.dimensions is not None:
            payload["dimensions"] = self.dimensions
        content = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        cap = response_cap(len(texts), self.width, self.max_response_bytes)
        last = None
        for attempt in range(self.max_retries + 1):
            if attempt and self.stop.wait(retry_delay(attempt - 1, self.backoff, last[1], self._rng)):
                raise EmbeddingAPIError("cancelled: another batch failed")
            last = self._post(content, cap)
            if last[0] is not None:
                vectors = parse_embeddings(last[0], len(texts), self.dimensions)
                self.width = vectors.shape[1]
                return vectors
            logger.warning("POST %s: %s (attempt %d of %d)", self.url, last[2],
                           attempt + 1, self.max_retries + 1)
        raise EmbeddingAPIError(
            f"POST {self.url} failed after {self.max_retries + 1} attempts; last: {last[2]}."
        )

    def _post(self, content, cap):
        """One request: ``(body, None, None)`` on success, ``(None, headers, reason)`` to retry."""
        import httpcore

        from era_sklearn._text.bounded_http import BodyTooLarge, ResponseError

        try:
            with self._session.post(self.url, headers=self._headers, content=content,
                                    timeout=self.timeout) as response:
                if response.status == 200:
                    return mask(response.read(cap)[0], self._forms), None, None
                body, truncated = response.read(ERROR_BODY_BYTES, truncate=True)
        except httpcore.TimeoutException:
            return None, None, f"timed out: the request took longer than timeout={self.timeout} s"
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError) as exc:
            return None, None, f"connection failed ({self._quote(f'{type(exc).__name__}: {exc}')})"
        except BodyTooLarge as exc:
            raise EmbeddingAPIError(self._quote(
                f"POST {self.url}: the response is over the size cap of {cap} bytes: {exc}. Set "
                "max_response_bytes to accept more (by default the cap is sized from the batch "
                f"and the vector width when known, else {DEFAULT_MAX_RESPONSE_BYTES} bytes).", 600
            )) from None
        except ResponseError as exc:
            raise EmbeddingAPIError(self._quote(f"POST {self.url}: unreadable response: {exc}.")) from None
        status = response.status
        reason = f"HTTP {status}: {self._quote(body.decode('utf-8', 'replace'), cut_key=truncated)}"
        if status in RETRY_STATUS or status >= 500:
            return None, response.headers, reason
        raise EmbeddingAPIError(f"POST {self.url} was refused, {reason}")

    def _quote(self, text, limit=300, cut_key=False):
        """``text`` masked, then on one line and cut; ``cut_key``: ``text`` was cut where a
        piece of the key may end it, so its last characters go too."""
        text = mask(text, self._forms)
        if cut_key and self._forms:
            text = text[:max(len(text) - len(self._forms[0]) + 1, 0)]
        return _short(text, limit)


def _short(text, limit=300):
    # Only the start is ever shown: collapsing the whitespace of a whole 32 MB body is waste.
    text = " ".join(text[:limit * 50].split())
    return text if len(text) <= limit else text[:limit] + "..."


# Bounded reprs of parsed JSON: short, and no recursion into deep nesting.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 200, 200


def _brief(value, limit):
    return _short(_REPR.repr(value), limit)


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
    try:
        return _parse(body, n_inputs, dimensions)
    except RecursionError:  # from json.loads, or numpy on deeply nested lists
        raise EmbeddingAPIError("the embeddings response is JSON nested too deeply to be one.") from None


def _parse(body, n_inputs, dimensions):
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise EmbeddingAPIError(
            f"the embeddings response is not valid JSON ({exc}): {_short(str(body[:6000]), 120)}"
        ) from None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise EmbeddingAPIError(f"the embeddings response has no 'data' list: {_brief(payload, 120)}")
    if len(data) != n_inputs:
        raise EmbeddingAPIError(f"the embeddings response holds {len(data)} vectors for {n_inputs} inputs.")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise EmbeddingAPIError(f"item {i} of the embeddings response is not an object: {_brief(item, 80)}")
    try:
        indices = [item["index"] for item in data]
        vectors = [item["embedding"] for item in data]
    except KeyError as exc:
        raise EmbeddingAPIError(f"an item of the embeddings response lacks {exc}.") from None
    if not all(type(i) is int for i in indices) or sorted(indices) != list(range(n_inputs)):
        raise EmbeddingAPIError(
            f"the embeddings response's indices {_brief(sorted(indices, key=str)[:10], 120)} are not "
            f"0..{n_inputs - 1}, each once."
        )
    out = None
    for index, vector in zip(indices, vectors):
        try:
            row = np.asarray(vector) if isinstance(vector, list) else np.asarray(None)
        except (ValueError, TypeError):  # nested lists of unequal lengths
            row = np.asarray(None)
        if row.ndim != 1 or row.dtype.kind not in "iuf" or row.size == 0:
            raise EmbeddingAPIError(
                f"the embedding at index {index} is not a non-empty list of numbers: {_brief(vector, 80)}"
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
