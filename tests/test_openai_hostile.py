"""OpenAIEncoder against a hostile or broken server: deadlines, size caps, key masking.

A raw-socket server on 127.0.0.1 picks its behaviour from the first segment of the
request path (``base_url = http://127.0.0.1:PORT/<behaviour>/v1``): it drips bytes,
sends endless or huge bodies, a gzip bomb, deeply nested JSON, or echoes the API key
in the body and the headers. Every behaviour stops by itself within ``SERVE_SECONDS``
and ``SERVE_BYTES``, and when the fixture ends.
"""

import datetime
import ipaddress
import json
import logging
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("httpx")

import era_sklearn
from era_sklearn._text.openai_client import EmbeddingAPIError, parse_embeddings
from era_sklearn.encoders import OpenAIEncoder

CAP_2_BY_4 = 2**20 + 2 * (1024 + 48 * 4)  # the documented cap for 2 texts of width 4
KEY = "sk-h0stile/Kq9+Zr4Tx7Wm2Vb8Nc5Lp3Jd6Fg1Hs0AyQe7Ru2Io5Pw"  # '/' and '+': escaped forms differ
SERVE_SECONDS = 10.0  # no behaviour outlives this, even if the client never gives up
SERVE_BYTES = 2**31  # nor sends more than 2 GiB
DRIP = 0.05  # seconds between dripped bytes: far below any timeout used here


def ok_json(n, dim=4):
    return {"data": [{"index": i, "embedding": [0.5] * dim} for i in range(n)]}


def head(status=200, headers=(), length=None):
    lines = [f"HTTP/1.1 {status} X", "Connection: close", *headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(conn, body, status=200, headers=("Content-Type: application/json",)):
    body = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.sendall(head(status, headers, len(body)) + body)


def until(stop):
    """True while a behaviour may go on sending."""
    deadline = time.monotonic() + SERVE_SECONDS
    return lambda: not stop.is_set() and time.monotonic() < deadline


def drip_body(conn, stop, request):
    conn.sendall(head(length=10**6))
    going = until(stop)
    while going():
        conn.sendall(b" ")
        time.sleep(DRIP)


def drip_headers(conn, stop, request):
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    going = until(stop)
    while going():
        conn.sendall(b"a")
        time.sleep(DRIP)


def stream(conn, stop, chunks, headers=(), length=None):
    """Send ``chunks`` (chunked encoding unless ``length``) until told to stop."""
    framing = () if length is not None else ("Transfer-Encoding: chunked",)
    conn.sendall(head(200, (*headers, *framing), length))
    going, sent = until(stop), 0
    for chunk in chunks:
        if not going() or sent >= SERVE_BYTES:
            return
        conn.sendall(chunk if length is not None else b"%x\r\n%b\r\n" % (len(chunk), chunk))
        sent += len(chunk)


def zeros(total=SERVE_BYTES, size=2**20):
    block = b"0" * size
    for _ in range(total // size):
        yield block


def gzip_bomb(total=SERVE_BYTES):
    """A gzip stream of ``total`` zero bytes (about 2 MB for 2 GiB), compressed as it is sent."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for block in zeros(total):
        out = packer.compress(block)
        if out:
            yield out
    yield packer.flush()


def packed(data, wbits):
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


def packed_answer(encoding, wbits):
    def behaviour(conn, stop, request):
        body = json.dumps(ok_json(len(request["input"]))).encode()
        answer(conn, packed(body, wbits), headers=(f"Content-Encoding: {encoding}",))
    return behaviour


def nested(depth):
    return b"[" * depth + b"]" * depth


BEHAVIOURS = {
    "ok": lambda conn, stop, request: answer(conn, ok_json(len(request["input"]))),
    "drip-body": drip_body,
    "drip-headers": drip_headers,
    "endless": lambda conn, stop, request: stream(conn, stop, zeros()),
    "huge-length": lambda conn, stop, request: stream(conn, stop, zeros(), length=SERVE_BYTES),
    "gzip-bomb": lambda conn, stop, request: stream(conn, stop, gzip_bomb(), ("Content-Encoding: gzip",)),
    # a legal answer padded to 2 MB: over a cap sized from 2 texts of width 4
    "padded": lambda conn, stop, request: answer(
        conn, json.dumps(ok_json(len(request["input"]))).encode() + b" " * 2_000_000),
    "gzip": packed_answer("gzip", 16 + zlib.MAX_WBITS),
    "deflate": packed_answer("deflate", zlib.MAX_WBITS),
    "deflate-raw": packed_answer("deflate", -zlib.MAX_WBITS),  # as some servers send it
    "corrupt-gzip": lambda conn, stop, request: answer(
        conn, b"\x1f\x8b\x08\x00" + b"not gzip at all" * 10, headers=("Content-Encoding: gzip",)),
    "brotli": lambda conn, stop, request: answer(conn, ok_json(1), headers=("Content-Encoding: br",)),
    "nested-json": lambda conn, stop, request: answer(conn, nested(100_000)),
    "nested-data": lambda conn, stop, request: answer(conn, b'{"data": ' + nested(50_000) + b"}"),
    # the key echoed where an error message would quote it
    "echo-not-json": lambda conn, stop, request: answer(conn, b"x" * 100 + b" key " + KEY.encode()),
    "echo-no-data": lambda conn, stop, request: answer(conn, {"note": "a" * 80, "error": KEY}),
    "echo-escaped": lambda conn, stop, request: answer(
        conn, json.dumps({"note": "a" * 80, "error": KEY}).replace("/", "\\/").encode()),
    "echo-401-cut": lambda conn, stop, request: answer(conn, b"e" * 280 + KEY.encode(), status=401),
    "echo-500-after-blanks": lambda conn, stop, request: answer(
        conn, b" " * (64 * 1024 - 20) + KEY.encode(), status=500),
    "echo-encoding-header": lambda conn, stop, request: answer(
        conn, ok_json(1), headers=(f"Content-Encoding: {KEY}",)),
    "echo-bad-header": lambda conn, stop, request: conn.sendall(
        b"HTTP/1.1 200 OK\r\n" + KEY.encode() + b"\r\n\r\n"),
    "echo-header-500": lambda conn, stop, request: answer(
        conn, b"busy", status=500, headers=(f"X-Echo: Bearer {KEY}", f"Retry-After: {KEY}")),
}


def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, None
        data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    length = int(fields.get("Content-Length", 0))
    while len(body) < length:
        body += conn.recv(65536)
    return lines[0].split(" ")[1], json.loads(body)


class HostileServer:
    """Raw-socket server on 127.0.0.1: one thread per connection, one request each."""

    def __init__(self):
        self.tls = None  # an ssl.SSLContext makes it an HTTPS server
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.targets = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def url(self, behaviour):
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}/{behaviour}/v1"

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn):
        with conn:
            conn.settimeout(5.0)  # a client that stops reading cannot hold us
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                target, request = read_request(conn)
                if target is None:
                    return
                self.targets.append(target)
                behaviour = target.split("://", 1)[-1].split("/")[-3]  # .../<behaviour>/v1/embeddings
                BEHAVIOURS[behaviour](conn, self.stop, request)
            except OSError:
                pass  # the client went away, as it should

    def close(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=SERVE_SECONDS)
        self.listener.close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("ERA_HOSTILE_KEY", KEY)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    srv = HostileServer()
    yield srv
    srv.close()


def encoder(server, behaviour, **params):
    params = {"base_url": server.url(behaviour), "api_key_env": "ERA_HOSTILE_KEY", "max_retries": 0,
              "backoff": 0.01, "timeout": 5.0, "show_progress": False, **params}
    return OpenAIEncoder("m", **params)


def timed_failure(enc, texts=("a",)):
    """(the EmbeddingAPIError that ``enc.transform`` raised, seconds it took)."""
    start = time.monotonic()
    with pytest.raises(EmbeddingAPIError) as info:
        enc.transform(list(texts))
    return info.value, time.monotonic() - start


# -- deadlines ---------------------------------------------------------------------------------

@pytest.mark.parametrize("behaviour", ["drip-body", "drip-headers"])
def test_a_dripping_server_is_cut_at_the_deadline(server, behaviour):
    # Each read gets a byte long before `timeout`; only a deadline for the whole request ends it.
    error, seconds = timed_failure(encoder(server, behaviour, timeout=0.5))
    assert "timed out" in str(error) and "timeout=0.5" in str(error)
    assert 0.5 <= seconds < 0.5 + 1.0


def test_each_retry_has_its_own_deadline(server):
    error, seconds = timed_failure(encoder(server, "drip-body", timeout=0.3, max_retries=1))
    assert "failed after 2 attempts; last: timed out" in str(error)
    assert 0.6 <= seconds < 0.6 + 1.0
    assert len(server.targets) == 2


def test_slow_name_resolution_counts_against_the_deadline(server, monkeypatch):
    release = threading.Event()
    real = socket.getaddrinfo

    def slow_getaddrinfo(host, *args, **kwargs):
        if host == "slow-dns.test":
            release.wait(SERVE_SECONDS)  # a resolver that hangs (released at teardown)
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    enc = encoder(server, "ok", base_url=f"http://slow-dns.test:{server.port}/ok/v1", timeout=0.5)
    try:
        error, seconds = timed_failure(enc)
    finally:
        release.set()
    assert "timed out" in str(error)
    assert 0.5 <= seconds < 0.5 + 1.0
    assert server.targets == []


# -- size caps ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "behaviour, what",
    [("endless", "sent more than"), ("huge-length", "declares Content-Length 2147483648"),
     ("gzip-bomb", "decompresses to more than")],
)
def test_a_huge_body_is_refused_at_the_cap(server, behaviour, what):
    error, seconds = timed_failure(encoder(server, behaviour, timeout=3.0, max_retries=2))
    assert what in str(error) and "max_response_bytes" in str(error)
    assert "size cap of 33554432 bytes" in str(error)  # the documented default: width unknown
    assert seconds < 3.0 + 1.0
    assert len(server.targets) == 1  # an oversized answer is not retried


def test_the_cap_follows_the_batch_and_width(server):
    texts = ["a", "b"]
    np.testing.assert_array_equal(encoder(server, "ok", dimensions=4).transform(texts),
                                  np.full((2, 4), 0.5, np.float32))
    # 2 MB of padding passes under the default cap, not under one sized for 2 texts x 4 values
    assert encoder(server, "padded").transform(texts).shape == (2, 4)
    error, _ = timed_failure(encoder(server, "padded", dimensions=4), texts)
    assert f"size cap of {CAP_2_BY_4} bytes: it declares Content-Length" in str(error)
    error, _ = timed_failure(encoder(server, "ok", max_response_bytes=50), texts)
    assert "size cap of 50 bytes" in str(error)


def test_the_width_learned_from_a_first_answer_sizes_the_next_caps(server):
    enc = encoder(server, "padded", batch_size=2, max_concurrency=1)
    error, _ = timed_failure(enc, ["a", "b", "c", "d"])  # the first batch teaches width 4
    assert f"size cap of {CAP_2_BY_4} bytes" in str(error)
    assert len(server.targets) == 2


RSS_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # never eat the machine
    from era_sklearn.encoders import OpenAIEncoder
    url = sys.argv[1]

    def status(field):  # kB in /proc/self/status: VmRSS now, VmHWM the peak of this process
        with open("/proc/self/status") as f:
            return 1024 * int(next(line for line in f if line.startswith(field)).split()[1])

    def run(behaviour):
        enc = OpenAIEncoder("m", base_url=url.format(behaviour), api_key_env=None,
                            max_retries=0, timeout=5.0, show_progress=False)
        try:
            enc.transform(["a"])
            return "no error"
        except BaseException as exc:
            return type(exc).__name__

    run("ok")  # imports and first-use allocations happen before the baseline
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak restarts from here (else it holds the imports' peak)
    except OSError:
        pass
    before = status("VmRSS:")
    errors, steps = [], []
    for behaviour in ("endless", "huge-length", "gzip-bomb"):
        start = time.monotonic()
        errors.append(run(behaviour))
        steps.append([behaviour, round(time.monotonic() - start, 2), (status("VmHWM:") - before) >> 20])
    print(json.dumps({"errors": errors, "growth": status("VmHWM:") - before, "steps (s, MiB)": steps}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memory_stays_small_reading_hostile_2gb_bodies(server):
    # In a child process, whose peak RSS (VmHWM: not ru_maxrss, which a child inherits from
    # the process that forked it) measures only this; capped at 1 GiB of address space.
    url = server.url("{}")
    root = Path(era_sklearn.__file__).parents[1]  # the era_sklearn under test, not an installed one
    done = subprocess.run([sys.executable, "-c", RSS_CHILD, url], capture_output=True, text=True,
                          timeout=60, cwd=root, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["errors"] == ["EmbeddingAPIError"] * 3, result
    assert result["growth"] < 100 * 2**20, result


# -- the key never leaks -----------------------------------------------------------------------

def assert_no_key(text):
    """No 8-character piece of the key (raw or JSON-escaped) is in ``text``."""
    for form in (KEY, KEY.replace("/", "\\/")):
        pieces = {form[i:i + 8] for i in range(len(form) - 7)}
        leaked = sorted(p for p in pieces if p in text)
        assert not leaked, f"pieces of the key leaked: {leaked}"


@pytest.mark.parametrize(
    "behaviour, message",
    [("echo-not-json", "not valid JSON"), ("echo-no-data", "no 'data' list"),
     ("echo-escaped", "no 'data' list"), ("echo-401-cut", "refused, HTTP 401"),
     ("echo-500-after-blanks", "last: HTTP 500"), ("echo-encoding-header", "Content-Encoding"),
     ("echo-bad-header", "connection failed"), ("echo-header-500", "last: HTTP 500")],
)
def test_an_echoed_key_is_masked(server, caplog, behaviour, message):
    caplog.set_level(logging.DEBUG)  # httpcore's debug lines print every response header
    error, seconds = timed_failure(encoder(server, behaviour))
    assert message in str(error) and seconds < 5.0 + 1.0
    assert "***" in str(error) or behaviour in ("echo-500-after-blanks", "echo-header-500")
    assert_no_key(str(error))
    assert_no_key(caplog.text)


@pytest.mark.parametrize("bad", ["sk-abc\n", " sk-abc", "sk-\x01abc", "sk-ключ"])
def test_a_key_that_cannot_be_sent_is_refused_without_quoting_it(server, monkeypatch, bad):
    monkeypatch.setenv("ERA_HOSTILE_KEY", bad)
    with pytest.raises(ValueError, match="ERA_HOSTILE_KEY holds") as info:
        encoder(server, "ok").transform(["a"])
    assert "abc" not in str(info.value) and "ключ" not in str(info.value)
    assert server.targets == []


# -- malformed answers -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "behaviour, message",
    [("nested-json", "nested too deeply"), ("nested-data", "nested too deeply"),
     ("corrupt-gzip", "gzip body is corrupt"), ("brotli", "'br' is not gzip or deflate")],
)
def test_a_broken_answer_is_an_api_error(server, behaviour, message):
    error, seconds = timed_failure(encoder(server, behaviour))
    assert message in str(error)
    assert seconds < 5.0 + 1.0


@pytest.mark.parametrize(
    "body, message",
    [(b'{"data": [{"index": 0, "embedding": [[1, 2], [3]]}]}', "index 0 is not a non-empty list"),
     (b'{"data": [{"index": 0, "embedding": [1]}, {"index": "1", "embedding": [1]}]}',
      "indices .* are not 0..1"),
     (b'{"data": [{"index": [0], "embedding": [1]}, {"index": 1, "embedding": [1]}]}',
      "indices .* are not 0..1"),
     (b'{"data": ["a", "b"]}', "item 0 of the embeddings response is not an object")],
    ids=["ragged-rows", "string-index", "list-index", "string-items"],
)
def test_odd_json_is_an_api_error(body, message):
    with pytest.raises(EmbeddingAPIError, match=message):
        parse_embeddings(body, n_inputs=len(json.loads(body)["data"]))


# -- what must keep working ----------------------------------------------------------------------

@pytest.mark.parametrize("behaviour", ["gzip", "deflate", "deflate-raw"])
def test_compressed_answers_are_decoded(server, behaviour):
    np.testing.assert_array_equal(encoder(server, behaviour).transform(["a", "b"]),
                                  np.full((2, 4), 0.5, np.float32))


def test_proxies_from_the_environment_are_used(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
    enc = encoder(server, "ok", base_url="http://upstream.test/ok/v1")
    assert enc.transform(["a"]).shape == (1, 4)
    assert server.targets == ["http://upstream.test/ok/v1/embeddings"]  # the proxy's absolute form
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a dead proxy, bypassed for this host
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert encoder(server, "ok").transform(["a"]).shape == (1, 4)


def self_signed_certificate(folder):
    """Files of a certificate for 127.0.0.1 that signs itself, and of its key."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


# The test server's own TLS sockets, left when the client gives up at its deadline.
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
def test_https_is_verified_and_bounded_by_the_deadline(server, tmp_path, monkeypatch):
    cert_file, key_file = self_signed_certificate(tmp_path)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.tls.load_cert_chain(cert_file, key_file)
    error, _ = timed_failure(encoder(server, "ok"))
    assert "connection failed" in str(error) and "CERTIFICATE_VERIFY_FAILED" in str(error)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # trusted as httpx trusts it
    assert encoder(server, "ok").transform(["a"]).shape == (1, 4)
    error, seconds = timed_failure(encoder(server, "drip-body", timeout=0.5))
    assert "timed out" in str(error) and 0.5 <= seconds < 0.5 + 1.0


@pytest.mark.parametrize("base_url", ["ftp://127.0.0.1/v1", "http:///v1", "http://127.0.0.1:99999/v1"])
def test_a_base_url_that_is_not_http_is_a_clear_error(base_url):
    with pytest.raises(ValueError, match="base_url must be an http:// or https:// URL"):
        OpenAIEncoder("m", base_url=base_url, api_key_env=None).transform(["a"])
