"""Test-wide settings."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Torch tests run on one intra-op thread.

    Their tensors are tiny and gain nothing from threads, and on a loaded 2-core
    machine oversubscription made one test 30x slower (0.9 s -> 26 s).
    """
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
