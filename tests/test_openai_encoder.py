"""OpenAIEncoder against a real HTTP server on 127.0.0.1 that speaks the embeddings API.

The server answers ``POST /v1/embeddings`` with deterministic vectors derived from
each text, records every request, counts requests in flight, and plays a script
of faults (429 with Retry-After, 5xx, wrong counts, bad JSON, slow answers) for
the first requests it gets.
"""

import hashlib
import json
import logging
import pickle
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from sklearn.base import clone

pytest.importorskip("httpx")

from era_sklearn.encoders import EmbeddingAPIError, OpenAIEncoder

DIM = 6
SECRET = "sk-test-5b1c0ffee-do-not-leak"


def text_vector(text, dim=DIM):
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def ok_body(texts, dim=DIM):
    data = [{"object": "embedding", "index": i, "embedding": text_vector(t, dim).tolist()}
            for i, t in enumerate(texts)]
    return {"object": "list", "data": data, "model": "fake", "usage": {"prompt_tokens": 1}}


class FakeAPI:
    """State of the fake server: the fault script, the request log, the concurrency gauge."""

    def __init__(self):
        self.script = []  # functions (texts) -> (status, headers, body bytes); popped per request
        self.requests = []
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def next_action(self):
        with self.lock:
            return self.script.pop(0) if self.script else None


def reply(status, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda texts, dim: (status, headers or {}, data)


def slow(seconds):
    def action(texts, dim):
        time.sleep(seconds)
        return 200, {}, json.dumps(ok_body(texts, dim)).encode()
    return action


def make_handler(api):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with api.lock:
                api.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                api.in_flight += 1
                api.max_in_flight = max(api.max_in_flight, api.in_flight)
            try:
                time.sleep(api.delay)
                action = api.next_action() or (
                    lambda texts, dim: (200, {}, json.dumps(ok_body(texts, dim)).encode()))
                status, headers, data = action(body["input"], body.get("dimensions", DIM))
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)
            finally:
                with api.lock:
                    api.in_flight -= 1

    return Handler


@pytest.fixture
def api():
    state = FakeAPI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ERA_TEST_KEY", SECRET)


def encoder(api, **params):
    params = {"base_url": api.url, "api_key_env": "ERA_TEST_KEY", "backoff": 0.01,
              "timeout": 5.0, "show_progress": False, **params}
    return OpenAIEncoder("fake-embed", **params)


TEXTS = [f"text number {i}" for i in range(10)]


def expected(texts, dim=DIM):
    return np.stack([text_vector(t, dim) for t in texts])


def test_batches_in_order_with_auth_and_payload(api):
    out = encoder(api, batch_size=4, max_concurrency=1).transform(TEXTS)
    assert out.dtype == np.float32 and out.shape == (10, DIM)
    np.testing.assert_array_equal(out, expected(TEXTS))
    assert [len(r["json"]["input"]) for r in api.requests] == [4, 4, 2]
    first = api.requests[0]
    assert first["path"] == "/v1/embeddings"
    assert first["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert first["json"]["model"] == "fake-embed" and first["json"]["encoding_format"] == "float"
    assert "dimensions" not in first["json"]


def test_dimensions_sent_and_checked(api):
    out = encoder(api, dimensions=3).transform(["a", "b"])
    assert out.shape == (2, 3) and api.requests[0]["json"]["dimensions"] == 3
    api.script.append(reply(200, ok_body(["a"], dim=5)))  # server ignores the request
    with pytest.raises(EmbeddingAPIError, match="asked for 3 dimensions, the response has 5"):
        encoder(api, dimensions=3).transform(["a"])


def test_shuffled_indices_are_put_back_in_order(api):
    body = ok_body(["x", "y", "z"])
    body["data"].reverse()
    api.script.append(reply(200, body))
    np.testing.assert_array_equal(encoder(api).transform(["x", "y", "z"]), expected(["x", "y", "z"]))


def test_repeated_texts_are_sent_once(api):
    out = encoder(api).transform(["a", "b", "a", "a"])
    assert api.requests[0]["json"]["input"] == ["a", "b"]
    np.testing.assert_array_equal(out, expected(["a", "b", "a", "a"]))


def test_concurrency_is_bounded(api):
    api.delay = 0.1
    out = encoder(api, batch_size=1, max_concurrency=3).transform(TEXTS)
    np.testing.assert_array_equal(out, expected(TEXTS))
    assert len(api.requests) == 10
    assert api.max_in_flight == 3  # used, and never exceeded


def test_429_then_success_honours_retry_after(api):
    api.script.append(reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"}))
    start = time.monotonic()
    out = encoder(api, backoff=0.001).transform(["a", "b"])
    assert time.monotonic() - start >= 1.0  # the header's second, not the 1 ms backoff
    np.testing.assert_array_equal(out, expected(["a", "b"]))
    assert len(api.requests) == 2


def test_500_storm_exhausts_retries(api, caplog):
    api.script.extend(reply(500, b"upstream exploded") for _ in range(10))
    with pytest.raises(EmbeddingAPIError, match=r"failed after 4 attempts; last: HTTP 500: upstream exploded"):
        encoder(api, max_retries=3).transform(["a"])
    assert len(api.requests) == 4
    assert len([r for r in caplog.records if "HTTP 500" in r.getMessage()]) == 4


def test_backoff_grows_exponentially(api):
    api.script.extend(reply(503, b"busy") for _ in range(3))
    start = time.monotonic()
    encoder(api, backoff=0.1, max_retries=3).transform(["a"])
    # waits of about 0.1, 0.2, 0.4 s (+-25 % jitter): at least 0.525 s in all
    assert time.monotonic() - start >= 0.52


def test_client_error_is_not_retried(api):
    api.script.append(reply(400, {"error": {"message": "input too long"}}))
    with pytest.raises(EmbeddingAPIError, match="refused, HTTP 400: .*input too long"):
        encoder(api).transform(["a"])
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    "body, message",
    [
        (ok_body(["a"]), "holds 1 vectors for 2 inputs"),
        ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]},
         "indices .* are not 0..1, each once"),
        ({"data": [{"index": 0, "embedding": [1.0, "x"]}, {"index": 1, "embedding": [1.0, 2.0]}]},
         "index 0 is not a non-empty list of numbers"),
        ({"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}]},
         "ragged"),
        ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1e39]}]},
         "NaN or infinite"),
        ({"error": "nope"}, "no 'data' list"),
        (b'{"data": [', "not valid JSON"),
    ],
    ids=["wrong-count", "wrong-indices", "non-numeric", "ragged", "overflow", "no-data", "bad-json"],
)
def test_malformed_responses_are_clear_errors(api, body, message):
    api.script.append(reply(200, body))
    with pytest.raises(EmbeddingAPIError, match=message):
        encoder(api).transform(["a", "b"])
    assert len(api.requests) == 1  # a malformed 200 is not retried


def test_timeout_then_success(api):
    api.script.append(slow(1.0))
    out = encoder(api, timeout=0.2, max_retries=2).transform(["a"])
    np.testing.assert_array_equal(out, expected(["a"]))
    assert len(api.requests) == 2


def test_timeouts_exhaust_retries(api):
    api.script.extend(slow(0.6) for _ in range(3))
    with pytest.raises(EmbeddingAPIError, match="failed after 2 attempts; last: timed out"):
        encoder(api, timeout=0.1, max_retries=1).transform(["a"])


def test_connection_refused_is_retried_then_clear():
    with pytest.raises(EmbeddingAPIError, match="failed after 2 attempts; last: connection failed"):
        OpenAIEncoder("m", base_url="http://127.0.0.1:9/v1", api_key_env=None, max_retries=1,
                      backoff=0.01).transform(["a"])


def test_failed_batch_keeps_finished_ones_in_the_cache(api, tmp_path):
    enc = encoder(api, batch_size=2, max_concurrency=1, max_retries=0, cache_dir=tmp_path)
    api.script.extend([reply(200, ok_body(["t0", "t1"])), reply(500, b"down")])
    with pytest.raises(EmbeddingAPIError):
        enc.transform(["t0", "t1", "t2", "t3"])
    api.requests.clear()
    np.testing.assert_array_equal(enc.transform(["t0", "t1", "t2", "t3"]), expected(["t0", "t1", "t2", "t3"]))
    assert [r["json"]["input"] for r in api.requests] == [["t2", "t3"]]  # resumed


def test_cache_is_keyed_by_model_and_dimensions(api, tmp_path):
    encoder(api, cache_dir=tmp_path).transform(["a"])
    encoder(api, cache_dir=tmp_path).transform(["a"])
    assert len(api.requests) == 1
    encoder(api, cache_dir=tmp_path, dimensions=3).transform(["a"])
    OpenAIEncoder("other-model", base_url=api.url, api_key_env="ERA_TEST_KEY",
                  cache_dir=tmp_path).transform(["a"])
    assert len(api.requests) == 3


def test_api_key_never_leaks(api, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)  # httpx, httpcore and our own logger, at their chattiest
    enc = encoder(api, cache_dir=tmp_path, max_retries=1)
    api.script.append(reply(503, b"echo: Bearer " + SECRET.encode()))  # a server that echoes it
    enc.transform(["a"])
    api.script.extend(reply(401, {"error": f"bad key {SECRET}"}) for _ in range(2))
    with pytest.raises(EmbeddingAPIError) as info:
        enc.transform(["b"])
    assert api.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"  # it was sent
    assert SECRET not in str(info.value) and "***" in str(info.value)
    assert SECRET not in caplog.text and "***" in caplog.text
    assert SECRET not in repr(enc) and SECRET not in str(enc.get_params())
    assert SECRET.encode() not in pickle.dumps(enc)
    assert SECRET.encode() not in pickle.dumps(clone(enc))
    for path in tmp_path.rglob("*"):
        assert SECRET.encode() not in path.read_bytes()


def test_missing_key_is_a_clear_error(api, monkeypatch):
    monkeypatch.delenv("ERA_TEST_KEY")
    with pytest.raises(ValueError, match="ERA_TEST_KEY is not set"):
        encoder(api).transform(["a"])
    assert api.requests == []
    encoder(api, api_key_env=None).transform(["a"])  # a server without authentication
    assert "Authorization" not in api.requests[0]["headers"]


def test_progress_bar(api, capsys):
    encoder(api, batch_size=1, show_progress=True).transform(["a", "b"])
    assert "2/2" in capsys.readouterr().err


def test_pickled_encoder_still_works(api):
    enc = pickle.loads(pickle.dumps(encoder(api)))
    np.testing.assert_array_equal(enc.transform(["a"]), expected(["a"]))
