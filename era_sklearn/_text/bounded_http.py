"""HTTP requests with a deadline for the whole request and a cap on the body's size.

httpx's ``timeout`` bounds each network operation on its own, so a server that sends
one byte before each read times out keeps a request alive for ever; and httpx reads
and decompresses a body of any size into memory. :class:`BoundedSession` bounds
both, on httpcore's public interfaces:

- every step of a request (name resolution, connect, TLS handshake, each write and
  each read) gets only the time left until the request's deadline, and fails with an
  ``httpcore.TimeoutException`` once it has passed;
- the body is read as it streams and refused (:class:`BodyTooLarge`) as soon as the
  bytes received, or the bytes they decompress to, pass the cap; a declared
  ``Content-Length`` above the cap is refused before any of the body is read.

Only gzip and deflate are asked for and decoded (with a bounded output per step).
Proxies named by the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
``NO_PROXY``) are used, as httpx uses them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
import urllib.parse
import urllib.request
import zlib

import httpcore

WRITE_CHUNK = 16 * 1024  # a write of this size gets a fresh share of the time left


class ResponseError(Exception):
    """The response cannot be read: an unsupported or corrupt encoding, or one too large."""


class BodyTooLarge(ResponseError):
    """The response body is larger than the cap."""


class _Deadlines(httpcore.NetworkBackend):
    """A network backend whose every step ends by the calling thread's deadline.

    Each request runs on one thread (httpcore's sync API), so the deadline is
    thread-local and the backend can be shared by the pool's connections.
    """

    def __init__(self):
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()

    @contextlib.contextmanager
    def deadline(self, seconds):
        self._local.deadline = time.monotonic() + seconds
        try:
            yield
        finally:
            self._local.deadline = None

    def time_left(self, timeout, error):
        """``timeout`` shortened to the time left; ``error`` once none is left."""
        deadline = getattr(self._local, "deadline", None)
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise error("the request's deadline has passed")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        error = None
        for address in self._resolve(host, port, timeout):
            try:
                stream = self._inner.connect_tcp(
                    address, port, timeout=self.time_left(timeout, httpcore.ConnectTimeout),
                    local_address=local_address, socket_options=socket_options)
            except httpcore.ConnectError as exc:  # try the next address, as the OS resolver's order says
                error = exc
                continue
            return _DeadlineStream(stream, self)
        raise error or httpcore.ConnectError(f"{host} has no address")

    def _resolve(self, host, port, timeout):
        """Addresses of ``host``, looked up on a helper thread so that a hung resolver cannot
        outlast the deadline (the thread ends when the resolver gives up)."""
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        found = {}

        def lookup():
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                found["addresses"] = list(dict.fromkeys(info[4][0] for info in infos))
            except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
                found["error"] = exc

        thread = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
        thread.start()
        thread.join(self.time_left(timeout, httpcore.ConnectTimeout))
        if thread.is_alive():
            raise httpcore.ConnectTimeout(f"resolving {host} outlasted the request's deadline")
        if "error" in found:
            raise httpcore.ConnectError(f"cannot resolve {host}: {found['error']}")
        return found["addresses"]

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        stream = self._inner.connect_unix_socket(
            path, timeout=self.time_left(timeout, httpcore.ConnectTimeout), socket_options=socket_options)
        return _DeadlineStream(stream, self)

    def sleep(self, seconds):
        self._inner.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner, deadlines):
        self._inner = inner
        self._deadlines = deadlines

    def read(self, max_bytes, timeout=None):
        return self._inner.read(max_bytes, self._deadlines.time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer, timeout=None):
        view = memoryview(buffer)
        for start in range(0, len(view), WRITE_CHUNK):
            self._inner.write(bytes(view[start:start + WRITE_CHUNK]),
                              self._deadlines.time_left(timeout, httpcore.WriteTimeout))

    def close(self):
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        # Python's handshake timeout is a total for the handshake, not per read.
        left = self._deadlines.time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, left), self._deadlines)

    def get_extra_info(self, info):
        return self._inner.get_extra_info(info)


def environment_proxy(url):
    """The proxy URL that the environment names for ``url``, or None (no proxy, or bypassed)."""
    proxies = urllib.request.getproxies_environment()
    parts = urllib.parse.urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxy if "://" in proxy else "http://" + proxy


def _pool(url, ssl_context, max_connections, backend):
    common = {"ssl_context": ssl_context, "max_connections": max_connections,
              "keepalive_expiry": 5.0, "network_backend": backend}  # httpx's keep-alive
    proxy = environment_proxy(url)
    if proxy is None:
        return httpcore.ConnectionPool(**common)
    parts = urllib.parse.urlsplit(proxy)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"the proxy that the environment names for {url} ({parts.scheme}://{parts.hostname}) "
            "is not an http:// or https:// proxy, the only kinds supported; change it, or "
            "exclude the host with NO_PROXY."
        )
    auth = None
    if parts.username is not None:
        auth = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    port = f":{parts.port}" if parts.port else ""
    return httpcore.HTTPProxy(proxy_url=f"{parts.scheme}://{parts.hostname}{port}", proxy_auth=auth,
                              **common)


class BoundedSession:
    """A connection pool for one base URL whose requests have deadlines and size caps.

    Parameters
    ----------
    url : str
        The URL requests will go to (it selects the proxy).
    max_connections : int
        Connections kept open at once.
    """

    def __init__(self, url, *, max_connections):
        import httpx  # its TLS defaults: certifi's roots, SSL_CERT_FILE / SSL_CERT_DIR

        self._deadlines = _Deadlines()
        self._pool = _pool(url, httpx.create_ssl_context(), max_connections, self._deadlines)

    def close(self):
        self._pool.close()

    @contextlib.contextmanager
    def post(self, url, *, headers, content, timeout):
        """Send one POST; yield the :class:`Response` once its headers are in.

        The whole exchange, from name resolution to the last byte of the body read in
        the ``with`` block, must end within ``timeout`` seconds. httpcore's exceptions
        (``TimeoutException``, ``NetworkError``, ``ProtocolError``, ``ProxyError``) pass
        through.
        """
        headers = [*headers, ("Accept-Encoding", "gzip, deflate")]
        limits = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        with self._deadlines.deadline(timeout), self._pool.stream(
            "POST", url, headers=headers, content=content, extensions={"timeout": limits}
        ) as raw:
            yield Response(raw)


class Response:
    """Status, headers (lower-case names) and a bounded reader of the body."""

    def __init__(self, raw):
        self.status = raw.status
        self.headers = {}
        for name, value in raw.headers:
            name, value = name.decode("latin-1").lower(), value.decode("latin-1")
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value
        self._raw = raw

    def read(self, limit, *, truncate=False):
        """The decoded body, at most ``limit`` bytes received and decoded.

        Returns ``(body, truncated)``. Past the limit, reading stops; with ``truncate``
        the first ``limit`` bytes are returned, otherwise :class:`BodyTooLarge` is raised.
        """
        declared = self.headers.get("content-length", "")
        if not truncate and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"it declares Content-Length {declared}")
        decoders = _decoders(self.headers.get("content-encoding", ""))
        body, received = bytearray(), 0
        for chunk in self._raw.iter_stream():
            received += len(chunk)
            cut = received > limit
            if cut:
                if not truncate:
                    raise BodyTooLarge(f"it sent more than {limit} bytes")
                chunk = chunk[:limit - (received - len(chunk))]
            if _keep(body, _decode(decoders, chunk, limit - len(body)), limit, truncate) or cut:
                return bytes(body), True
        if _keep(body, _decode(decoders, b"", limit - len(body), end=True), limit, truncate):
            return bytes(body), True
        return bytes(body), False


def _decode(decoders, data, room, end=False):
    """``data`` through the decoders in turn (flushing them at the ``end``); past ``room``
    bytes out of any of them, what comes out overflows and the rest is not decoded."""
    for decoder in decoders:
        data = decoder.decode(data, room) + (decoder.flush() if end else b"")
        if len(data) > room:
            break
    return data


def _keep(body, data, limit, truncate):
    """Append ``data`` to ``body`` up to ``limit``; True when the limit cut it."""
    if len(body) + len(data) <= limit:
        body += data
        return False
    if not truncate:
        raise BodyTooLarge(f"it decompresses to more than {limit} bytes")
    body += data[:limit - len(body)]
    return True


class _Inflate:
    """A zlib decoder (gzip or deflate) that never produces more than asked for."""

    def __init__(self, wbits):
        self._wbits = wbits
        self._inflater = zlib.decompressobj(wbits)
        self._started = False

    def decode(self, data, room):
        """At most ``room + 1`` decoded bytes of ``data`` (one more says that it overflows)."""
        try:
            out = self._inflater.decompress(data, room + 1)
        except zlib.error as exc:
            if self._wbits == zlib.MAX_WBITS and not self._started:
                # "deflate" sent without its zlib header, as some servers do
                self._wbits = -zlib.MAX_WBITS
                self._inflater = zlib.decompressobj(self._wbits)
                return self.decode(data, room)
            raise ResponseError(f"its {self._name()} body is corrupt ({exc})") from None
        self._started = True
        return out

    def flush(self):
        try:
            return self._inflater.flush()
        except zlib.error as exc:
            raise ResponseError(f"its {self._name()} body is corrupt ({exc})") from None

    def _name(self):
        return "gzip" if self._wbits > zlib.MAX_WBITS else "deflate"


def _decoders(content_encoding):
    """Decoders for a Content-Encoding header, in the order they apply."""
    decoders = []
    for name in reversed([part.strip().lower() for part in content_encoding.split(",")]):
        if name in ("gzip", "x-gzip"):
            decoders.append(_Inflate(16 + zlib.MAX_WBITS))
        elif name == "deflate":
            decoders.append(_Inflate(zlib.MAX_WBITS))
        elif name not in ("", "identity"):
            raise ResponseError(f"its Content-Encoding {content_encoding!r} is not gzip or deflate")
    return decoders
