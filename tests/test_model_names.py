"""Encoders given a model *name* where the hub cannot be reached fail at once, saying how to
pass a local folder (``era_sklearn._text.hub``), instead of ~80 s of retries and a bare OSError.

The "network" here is sockets on 127.0.0.1 only: a port nothing listens on, and a server
that accepts connections and never answers (each bounded: it stops with the test).
"""

import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from era_sklearn._text import hub as _hub
from era_sklearn.encoders import Model2VecEncoder, SentenceTransformerEncoder

#: A name no cache can hold, so every run has to resolve it from scratch.
NAME = f"era-sklearn-tests/no-such-model-{uuid.uuid4().hex[:8]}"
#: The prompt failure must come well inside the ~80 s of retries it replaces, on a loaded
#: machine: the probe's timeout plus slack for importing the model library.
FAST = _hub.PROBE_TIMEOUT + 25


def _encoders():
    return [
        pytest.param(SentenceTransformerEncoder, "sentence_transformers", id="sentence-transformers"),
        pytest.param(Model2VecEncoder, "model2vec", id="model2vec"),
    ]


@pytest.fixture
def silent_server():
    """An address on 127.0.0.1 that accepts TCP connections and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.fixture
def closed_port():
    """An address on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def answering_server():
    """A local HTTP server that answers every request 404, as a hub does for unknown paths."""

    class NotFound(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _load_fails_fast(encoder_cls, library, match):
    pytest.importorskip(library)
    start = time.perf_counter()
    with pytest.raises(OSError, match=match) as info:
        encoder_cls(NAME, show_progress=False).transform(["a query"])
    elapsed = time.perf_counter() - start
    assert elapsed < FAST, f"took {elapsed:.1f} s"
    message = str(info.value)
    assert "not a local folder" in message and "Pass the model's folder" in message
    assert f"{encoder_cls.__name__}('/models/" in message
    return message


@pytest.mark.parametrize("encoder_cls, library", _encoders())
def test_offline_name_fails_at_once_with_a_folder_hint(encoder_cls, library, monkeypatch,
                                                       closed_port):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Were anything to go online regardless, it would meet a refused local port, not the internet.
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", closed_port)
    _load_fails_fast(encoder_cls, library, "HF_HUB_OFFLINE is set")


@pytest.mark.parametrize("encoder_cls, library", _encoders())
@pytest.mark.parametrize("hub", ["silent_server", "closed_port"])
def test_unreachable_hub_fails_at_once_with_a_folder_hint(encoder_cls, library, hub, request,
                                                          monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    address = request.getfixturevalue(hub)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", address)
    message = _load_fails_fast(encoder_cls, library, "did not answer")
    assert address in message


def test_probe_counts_any_http_answer(answering_server, silent_server, closed_port):
    assert _hub.hub_answers(answering_server, timeout=5)
    start = time.perf_counter()
    assert not _hub.hub_answers(silent_server, timeout=0.5)
    assert time.perf_counter() - start < 3  # the join's timeout bounds it
    assert not _hub.hub_answers(closed_port, timeout=5)


def test_a_cached_model_loads_without_any_network(monkeypatch):
    """The cache is tried first with no network at all: offline, a cached name still loads."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []

    def load(local_only):
        calls.append(local_only)
        return "model"

    monkeypatch.setattr(_hub, "hub_answers", lambda *a, **k: pytest.fail("probed the network"))
    assert _hub.load_named_model("org/cached", "Encoder", load) == "model"
    assert calls == [True]


def test_a_missing_folder_is_named(tmp_path):
    pytest.importorskip("model2vec")
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError, match="the model folder .*no-such-folder.* does not exist"):
        Model2VecEncoder(missing).transform(["a query"])


def test_a_folder_loads_without_the_cache_or_the_network(tmp_path, monkeypatch):
    pytest.importorskip("model2vec")
    import _text_models

    _text_models.static_model().save_pretrained(tmp_path / "m2v")
    monkeypatch.setattr(_hub, "hub_answers", lambda *a, **k: pytest.fail("probed the network"))
    out = Model2VecEncoder(tmp_path / "m2v").transform(["cats purr"])
    assert out.shape == (1, 8)
