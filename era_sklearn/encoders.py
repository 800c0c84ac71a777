"""Text encoders as scikit-learn transformers: a list of texts in, a float32 matrix out.

- :class:`SentenceTransformerEncoder`: a sentence-transformers model (name, folder or object).
- :class:`Model2VecEncoder`: a model2vec static model (table look-up and mean; very cheap).
- :class:`OpenAIEncoder`: any OpenAI-compatible ``/v1/embeddings`` endpoint.
- :class:`AdaptedEncoder`: a query encoder and a fitted :class:`~era_sklearn.ERAAdapter`
  (plus the document encoder) behind LangChain's ``Embeddings`` interface and Chroma's
  embedding-function protocol.

Every encoder batches (``batch_size``), encodes a repeated text once, can keep an
on-disk cache (``cache_dir``: one SQLite file of raw float32 vectors keyed by the
model's identity and the text; safe to share between processes, never pickled)
and shows a progress bar on long runs (``show_progress``). ``fit`` only checks
its input, so an encoder can open a :class:`~sklearn.pipeline.Pipeline`::

    make_pipeline(SentenceTransformerEncoder("all-mpnet-base-v2"), adapter)

The model libraries (``sentence-transformers``, ``model2vec``, ``httpx``) are
imported only when an encoder of theirs runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from numbers import Integral, Real
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from sklearn.preprocessing import normalize as _normalize_rows
from sklearn.utils._param_validation import HasMethods, Interval

from era_sklearn._text.base import TextEncoder
from era_sklearn._text.hub import load_named_model
from era_sklearn._text.openai_client import EmbeddingAPIError, EmbeddingsClient

if TYPE_CHECKING:  # imported on first use: see __getattr__ below
    from era_sklearn._text.adapted_encoder import AdaptedEncoder

def __getattr__(name):
    # AdaptedEncoder subclasses LangChain's Embeddings when langchain-core is installed,
    # an import that costs most of a second: done on first use, not with era_sklearn.
    if name == "AdaptedEncoder":
        from era_sklearn._text.adapted_encoder import AdaptedEncoder

        return AdaptedEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AdaptedEncoder",
    "EmbeddingAPIError",
    "Model2VecEncoder",
    "OpenAIEncoder",
    "SentenceTransformerEncoder",
]


class _LocalModelEncoder(TextEncoder):
    """An encoder whose model is loaded in this process (once per encoder, lazily)."""

    def _model(self):
        source = self.model
        memo = self.__dict__.get("_loaded")
        if memo is None or memo[0] is not source:
            loaded = self._load(source) if isinstance(source, (str, os.PathLike)) else source
            memo = self._loaded = (source, loaded, None)
        return memo[1]

    def _weights_digest(self):
        """Digest of the loaded model's weights and tokenizer, computed once per model."""
        model = self._model()
        source, loaded, known = self._loaded
        if known is None:
            known = self._digest_model(model)
            self._loaded = (source, loaded, known)
        return known

    def __getstate__(self):
        # A pickled encoder carries its parameters, never a loaded copy of a model
        # named by path (it is reloaded where the pickle is opened).
        state = super().__getstate__()
        state.pop("_loaded", None)
        return state


def _tokenizer_json(tokenizer):
    for obj in (tokenizer, getattr(tokenizer, "backend_tokenizer", None)):
        if hasattr(obj, "to_str"):
            return obj.to_str()
    return repr(tokenizer)


class SentenceTransformerEncoder(_LocalModelEncoder):
    """Encode texts with a sentence-transformers model.

    Parameters
    ----------
    model : str, path-like or SentenceTransformer
        A folder saved with ``SentenceTransformer.save`` (or unpacked from a
        model package), a model name (from the local Hugging Face cache, else
        downloaded), or a loaded model. A name that is not cached fails at
        once, with a hint to pass a folder, when ``HF_HUB_OFFLINE`` is set or
        the hub does not answer within 5 s.
    device : str or None, default=None
        Torch device (``"cpu"``, ``"cuda"``); None lets sentence-transformers choose.
    normalize : bool, default=False
        L2-normalise the output rows.
    prompt_name : str or None, default=None
        Name of one of the model's prompts (e.g. ``"query"``) to prepend.
    batch_size : int, default=32
        Texts per forward pass.
    cache_dir : str, path-like or None, default=None
        Folder of the on-disk cache; None disables it. Entries are keyed by a
        digest of the model's weights, tokenizer, architecture and the
        settings above, so a different model never reads them.
    show_progress : bool or "auto", default="auto"
        Progress bar; ``"auto"`` shows it when more than 10 batches are left.

    See Also
    --------
    Model2VecEncoder : A static model, hundreds of times cheaper per text.
    OpenAIEncoder : An embeddings API.

    Examples
    --------
    >>> import numpy as np
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from sentence_transformers import SentenceTransformer
    >>> from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    >>> words = ["[UNK]", "cats", "purr", "dogs", "bark"]
    >>> tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, "[UNK]"))
    >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> vectors = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    >>> model = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=vectors)])
    >>> from era_sklearn.encoders import SentenceTransformerEncoder
    >>> SentenceTransformerEncoder(model, normalize=True).transform(["cats purr", "dogs"]).shape
    (2, 4)
    """

    _parameter_constraints: ClassVar[dict] = {
        **TextEncoder._parameter_constraints,
        "model": [str, os.PathLike, HasMethods(["encode"])],
        "device": [str, None],
        "normalize": ["boolean"],
        "prompt_name": [str, None],
    }

    def __init__(self, model, *, device=None, normalize=False, prompt_name=None, batch_size=32,
                 cache_dir=None, show_progress="auto"):
        self.model = model
        self.device = device
        self.normalize = normalize
        self.prompt_name = prompt_name
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.show_progress = show_progress

    def _load(self, source):
        from sentence_transformers import SentenceTransformer

        name = os.fspath(source)
        return load_named_model(name, type(self).__name__, lambda local_only: SentenceTransformer(
            name, device=self.device, local_files_only=local_only))

    @staticmethod
    def _digest_model(model):
        import torch

        h = hashlib.sha256(repr(model).encode())  # modules, max_seq_length, pooling
        for name, tensor in model.state_dict().items():
            data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            h.update(data.numpy().tobytes())
        h.update(_tokenizer_json(getattr(model, "tokenizer", None)).encode())
        prompts = {"prompts": getattr(model, "prompts", None),
                   "default": getattr(model, "default_prompt_name", None)}
        h.update(json.dumps(prompts, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def _identity(self):
        return [self._weights_digest(), self.normalize, self.prompt_name]

    def _encode_batch(self, texts):
        return self._model().encode(
            texts, batch_size=len(texts), normalize_embeddings=self.normalize,
            prompt_name=self.prompt_name, device=self.device, convert_to_numpy=True,
            show_progress_bar=False,
        )


class Model2VecEncoder(_LocalModelEncoder):
    """Encode texts with a model2vec static model (token vectors, averaged).

    A text none of whose tokens the model knows (or an empty text) gets an
    all-zero vector. Such rows are kept (they are what the model says), and
    each ``transform`` warns once with their count.

    Parameters
    ----------
    model : str, path-like or StaticModel
        A folder saved with ``StaticModel.save_pretrained``, a hub name (as
        for :class:`SentenceTransformerEncoder`: cached, else downloaded, else
        a prompt error), or a loaded ``model2vec.StaticModel``.
    normalize : bool, default=False
        L2-normalise the output rows (zero rows stay zero). The model's own
        ``normalize`` setting applies in any case.
    batch_size : int, default=1024
        Texts per call of the model.
    cache_dir : str, path-like or None, default=None
        On-disk cache folder (see :class:`SentenceTransformerEncoder`). A static
        model is so cheap that the cache rarely pays for itself.
    show_progress : bool or "auto", default="auto"
        Progress bar; ``"auto"`` shows it when more than 10 batches are left.

    Examples
    --------
    >>> import numpy as np
    >>> from model2vec import StaticModel
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> words = ["[UNK]", "cats", "purr", "dogs", "bark"]
    >>> tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, "[UNK]"))
    >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> model = StaticModel(np.eye(5, dtype=np.float32), tok)
    >>> from era_sklearn.encoders import Model2VecEncoder
    >>> Model2VecEncoder(model).transform(["cats purr", "dogs bark"])
    array([[0. , 0.5, 0.5, 0. , 0. ],
           [0. , 0. , 0. , 0.5, 0.5]], dtype=float32)
    """

    _parameter_constraints: ClassVar[dict] = {
        **TextEncoder._parameter_constraints,
        "model": [str, os.PathLike, HasMethods(["encode"])],
        "normalize": ["boolean"],
    }

    def __init__(self, model, *, normalize=False, batch_size=1024, cache_dir=None,
                 show_progress="auto"):
        self.model = model
        self.normalize = normalize
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.show_progress = show_progress

    def _load(self, source):
        from model2vec import StaticModel

        def load(local_only):
            if not local_only:
                return StaticModel.from_pretrained(name)
            from huggingface_hub import snapshot_download  # model2vec has no offline switch

            return StaticModel.from_pretrained(snapshot_download(name, local_files_only=True))

        name = os.fspath(source)
        return load_named_model(name, type(self).__name__, load)

    @staticmethod
    def _digest_model(model):
        h = hashlib.sha256()
        for part in (model.embedding, getattr(model, "weights", None),
                     getattr(model, "token_mapping", None)):
            if part is not None:
                part = np.ascontiguousarray(part)
                h.update(f"{part.dtype}:{part.shape}".encode())
                h.update(part.tobytes())
        h.update(_tokenizer_json(model.tokenizer).encode())
        settings = {"normalize": getattr(model, "normalize", None),
                    "max_length": getattr(model, "max_length", None)}
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def _identity(self):
        return [self._weights_digest(), self.normalize]

    def _encode_batch(self, texts):
        out = self._model().encode(texts, batch_size=len(texts), use_multiprocessing=False,
                                   show_progress_bar=False)
        out = np.asarray(out, dtype=np.float32)
        return _normalize_rows(out) if self.normalize else out


class OpenAIEncoder(TextEncoder):
    """Encode texts with an OpenAI-compatible ``/v1/embeddings`` endpoint.

    Works with OpenAI and with servers that copy its protocol (vLLM, Ollama,
    llama.cpp, text-embeddings-inference, LiteLLM, Azure and other proxies).
    Texts go out in requests of ``batch_size``, at most ``max_concurrency`` at
    a time. Each request must end within ``timeout`` seconds in all (name
    resolution, connecting, sending and every read together), and its body must
    fit a size cap (see ``max_response_bytes``). A request that times out,
    cannot connect, or is answered 408, 409, 429 or 5xx is retried up to
    ``max_retries`` times with exponential backoff (``backoff``, doubled each
    time, with jitter; a ``Retry-After`` header wins; waits are capped at 60 s).
    Any other error, an answer over the size cap, and any malformed answer (not
    JSON, a wrong count or index set of vectors, non-numeric, ragged or
    non-finite values, a width other than ``dimensions``), raises
    :class:`EmbeddingAPIError`. Finished batches stay in the cache when a
    later one fails, so a rerun resumes.

    The API key is read from the environment variable ``api_key_env`` at each
    ``transform`` and kept nowhere else: not in the parameters, the repr, a
    pickle, the cache or a log or error message (a key that a server echoes in
    its body or headers is masked before anything is quoted).

    Parameters
    ----------
    model : str
        Model name sent to the endpoint (e.g. ``"text-embedding-3-small"``).
    base_url : str, default="https://api.openai.com/v1"
        The API root; requests go to ``{base_url}/embeddings``.
    dimensions : int or None, default=None
        Output width for models that can shorten their vectors; None sends
        nothing and keeps the model's width.
    api_key_env : str or None, default="OPENAI_API_KEY"
        Environment variable that holds the key (sent as a Bearer token). None
        sends no key (a local server without authentication).
    batch_size : int, default=128
        Texts per request.
    max_concurrency : int, default=4
        Requests in flight at once.
    timeout : float, default=60.0
        Seconds allowed for each request in all, from name resolution to the last
        byte of the answer (not per read: a server that drips bytes is cut off at
        the deadline). Each retry has its own.
    max_response_bytes : int or None, default=None
        Size cap of an answer's body, applied while it streams both to the bytes
        received and to the bytes they decompress to (a declared ``Content-Length``
        above it is refused before reading). None sizes it from the batch:
        ``1 MiB + n_texts * (1 KiB + 48 * width)`` when the width is known (from
        ``dimensions``, or from the first answer of the call), else 32 MiB. At
        most ``max_concurrency`` answers are held at once.
    max_retries : int, default=5
        Retries of a failed request before giving up (0: no retry).
    backoff : float, default=1.0
        Wait before the first retry, in seconds; doubled for each further one.
    cache_dir : str, path-like or None, default=None
        On-disk cache folder, keyed by ``base_url``, ``model``, ``dimensions``
        and the text. The weights behind a model name are invisible from here:
        clear the folder if the provider changes them.
    show_progress : bool or "auto", default="auto"
        Progress bar; ``"auto"`` shows it when more than 10 requests are left.

    See Also
    --------
    EmbeddingAPIError : The error raised when the endpoint fails.

    Examples
    --------
    >>> from era_sklearn.encoders import OpenAIEncoder
    >>> OpenAIEncoder("text-embedding-3-small", dimensions=512, max_concurrency=8)
    OpenAIEncoder(dimensions=512, max_concurrency=8, model='text-embedding-3-small')
    """

    _parameter_constraints: ClassVar[dict] = {
        **TextEncoder._parameter_constraints,
        "model": [str],
        "base_url": [str],
        "dimensions": [Interval(Integral, 1, None, closed="left"), None],
        "api_key_env": [str, None],
        "max_concurrency": [Interval(Integral, 1, None, closed="left")],
        "timeout": [Interval(Real, 0, None, closed="neither")],
        "max_response_bytes": [Interval(Integral, 1, None, closed="left"), None],
        "max_retries": [Interval(Integral, 0, None, closed="left")],
        "backoff": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, model, *, base_url="https://api.openai.com/v1", dimensions=None,
                 api_key_env="OPENAI_API_KEY", batch_size=128, max_concurrency=4, timeout=60.0,
                 max_response_bytes=None, max_retries=5, backoff=1.0, cache_dir=None,
                 show_progress="auto"):
        self.model = model
        self.base_url = base_url
        self.dimensions = dimensions
        self.api_key_env = api_key_env
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.max_retries = max_retries
        self.backoff = backoff
        self.cache_dir = cache_dir
        self.show_progress = show_progress

    def _identity(self):
        return [self.base_url.rstrip("/"), self.model, self.dimensions]

    def _api_key(self):
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(
                f"OpenAIEncoder: the environment variable {self.api_key_env} is not set; set it "
                "to the API key, or pass api_key_env=None for a server without authentication."
            )
        if not (key.isascii() and key.isprintable()) or key != key.strip():
            # Never quoted: a header error would print it, and it may be a real key.
            raise ValueError(
                f"OpenAIEncoder: the environment variable {self.api_key_env} holds whitespace "
                "around the key, or control or non-ASCII characters; set it to the key alone "
                "(a trailing newline from a file is the usual cause)."
            )
        return key

    def _encode_rows(self, texts, rows):
        """Send the batches concurrently; yield each as it arrives (any order)."""
        if not rows:
            return
        batches = [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        workers = min(self.max_concurrency, len(batches))
        client = EmbeddingsClient(
            base_url=self.base_url, model=self.model, dimensions=self.dimensions,
            api_key=self._api_key(), timeout=self.timeout, max_retries=self.max_retries,
            backoff=self.backoff, max_response_bytes=self.max_response_bytes,
            max_connections=workers,
        )
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            with self._progress(len(rows), len(batches)) as bar:
                pending = {pool.submit(client.embed, [texts[i] for i in b]): b for b in batches}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    # Successes first, so that they reach the cache before an error stops all.
                    for future in sorted(done, key=lambda f: f.exception() is not None):
                        batch = pending.pop(future)
                        yield batch, future.result()  # raises the batch's error
                        bar.update(len(batch))
        finally:
            client.stop.set()  # workers still waiting to retry give up at once
            pool.shutdown(wait=True, cancel_futures=True)
            client.close()
