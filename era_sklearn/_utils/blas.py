"""BLAS thread control shared by the statistics pass and the closed-form solves.

threadpoolctl limits are process-wide, so the single-thread section is
counted: overlapping sections (from threads of the caller) restore the
original setting only when the last one ends.
"""

import functools
import threading
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController


@functools.cache
def blas_controller():
    """The BLAS libraries loaded in this process (numpy's and scipy's OpenBLAS).

    Found once: scanning the loaded libraries costs about 5 ms, paid per
    ``partial_fit_align`` chunk otherwise. Both are loaded when
    ``era_sklearn`` is imported; a BLAS loaded later (torch's) is not used by
    the passes and stays as it is.
    """
    return ThreadpoolController().select(user_api="blas")


_lock = threading.Lock()
_users = 0
_limit = None


@contextmanager
def single_threaded_blas():
    """BLAS (and LAPACK) on one thread for the duration of the block."""
    global _users, _limit
    with _lock:
        if _users == 0:
            _limit = blas_controller().limit(limits=1)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _limit.restore_original_limits()
                _limit = None
