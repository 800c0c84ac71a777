"""A model named by a string: a local folder, the local Hugging Face cache, or a download.

Loading a hub name where the hub cannot be reached used to cost about 80 s of
retries inside ``huggingface_hub`` before an ``OSError`` that said nothing about
era-sklearn's options. :func:`load_named_model` tries the local copies first
(the folder, then the cache, with no network at all), and only goes online when
``HF_HUB_OFFLINE`` is not set and the hub answers one short request; otherwise it
fails at once with an error that says how to pass a local folder.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request

#: Seconds the hub gets to answer one HEAD request before it counts as unreachable.
PROBE_TIMEOUT = 5.0

_TRUE = {"1", "on", "yes", "true"}


def hub_is_offline():
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids downloads.

    Read now, as well as the value ``huggingface_hub`` read when it was imported,
    so that setting the variable after the import counts too.
    """
    if any(os.environ.get(var, "").strip().lower() in _TRUE
           for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - both model libraries depend on it
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hub_endpoint():
    """The hub's address as ``huggingface_hub`` will use it (``HF_ENDPOINT`` or huggingface.co)."""
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:  # pragma: no cover - both model libraries depend on it
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_answers(endpoint=None, timeout=None):
    """Whether ``endpoint`` answers one HEAD request (any HTTP status) within ``timeout`` s.

    The request runs in a daemon thread joined with the timeout, because the name
    lookup before it does not obey socket timeouts.
    """
    endpoint = hub_endpoint() if endpoint is None else endpoint
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    answered = threading.Event()

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"),
                                   timeout=timeout).close()
            answered.set()
        except urllib.error.HTTPError:
            answered.set()  # an error status is still an answer: the hub is reachable
        except (OSError, ValueError):
            pass  # no route, refused, timed out, name not found, malformed address

    thread = threading.Thread(target=probe, name="era-sklearn-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return answered.is_set()


def _looks_like_a_path(name):
    return os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name


def load_named_model(name, owner, load):
    """The model ``name`` names, loaded by ``load(local_only)``, without waiting on a dead hub.

    Parameters
    ----------
    name : str
        A folder or a hub name.
    owner : str
        The encoder class, for the error message.
    load : callable
        ``load(local_only: bool) -> model``; with ``local_only=True`` it must not
        touch the network (raising ``OSError`` when the model is not cached).

    Raises
    ------
    FileNotFoundError
        ``name`` is written as a path and there is no such folder.
    OSError
        ``name`` is neither a folder nor cached and it cannot be downloaded:
        ``HF_HUB_OFFLINE`` is set, or the hub did not answer within
        :data:`PROBE_TIMEOUT` seconds. The message says how to pass a folder.
    """
    if os.path.isdir(name):
        return load(False)  # a folder: nothing to download
    if _looks_like_a_path(name):
        raise FileNotFoundError(
            f"{owner}: the model folder {name!r} does not exist (checked from {os.getcwd()!r})."
        )
    try:
        return load(True)  # the local hub cache, if the model was downloaded before
    except OSError as exc:
        not_cached = exc
    if hub_is_offline():
        why = "HF_HUB_OFFLINE is set"
    elif not hub_answers():
        why = f"the hub ({hub_endpoint()}) did not answer within {PROBE_TIMEOUT:g} s"
    else:
        return load(False)
    raise OSError(
        f"{owner}: cannot load the model {name!r}: it is not a local folder, not in the local "
        f"Hugging Face cache, and it cannot be downloaded ({why}). Pass the model's folder "
        f"instead, e.g. {owner}('/models/{name.rsplit('/', 1)[-1]}'): a folder written by the "
        "model library's save method (SentenceTransformer.save, StaticModel.save_pretrained) or "
        "copied from a machine that can download it (`hf download "
        f"{name} --local-dir /models/{name.rsplit('/', 1)[-1]}`)."
    ) from not_cached
