"""Test-wide settings."""

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "torch: needs torch (the era-sklearn[torch] extra); skipped where it is absent"
    )


def pytest_runtest_setup(item):
    # The default path's tests run without torch (.ci/run checks it in a fresh venv);
    # those that train or read with torch say so with @pytest.mark.torch.
    if item.get_closest_marker("torch"):
        pytest.importorskip("torch")


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
