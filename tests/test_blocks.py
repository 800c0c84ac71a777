"""Row-blocked passes (era_sklearn/_utils/blocks.py): fixed blocks per thread, errors raised."""

import threading

import numpy as np
import pytest

from era_sklearn._utils.blocks import block_rows_for, n_threads_for, run_blocks, threads_used


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_every_row_once_in_fixed_blocks(n_threads):
    seen = np.zeros(1000, dtype=int)
    owner = np.full(1000, -1)
    lock = threading.Lock()

    def work(t, start, stop):
        with lock:
            seen[start:stop] += 1
            owner[start:stop] = t

    run_blocks(1000, 97, n_threads, work)
    np.testing.assert_array_equal(seen, 1)
    # Thread t takes blocks t, t + n_threads, ...: a fixed assignment, whatever the timing.
    np.testing.assert_array_equal(owner, (np.arange(1000) // 97) % n_threads)


def test_one_threads_error_is_raised_and_stops_the_others():
    calls = []
    failing = threading.Event()

    def work(t, start, stop):
        calls.append(t)
        if t == 1:
            failing.set()
            raise ValueError(f"bad block at {start}")
        failing.wait(timeout=10)  # thread 0's first block ends once thread 1 is failing

    with pytest.raises(ValueError, match="bad block at 97"):
        run_blocks(97 * 200, 97, 2, work)
    assert calls.count(1) == 1
    assert calls.count(0) < 100  # stopped at one of its next blocks, not after all 100


def test_defaults_and_bad_settings():
    assert block_rows_for(None, 768, np.float32, n_threads=2) == 24 * 2**20 // (2 * 768 * 4)
    assert block_rows_for(None, 10**6, np.float64) == 256  # at least 256 rows
    assert threads_used(10, 97, 4) == 1 and threads_used(500, 97, 4) == 4
    assert n_threads_for(3) == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_threads must be a positive integer"):
            n_threads_for(bad)
        with pytest.raises(ValueError, match="block_rows must be a positive integer"):
            block_rows_for(bad, 8, np.float32)
