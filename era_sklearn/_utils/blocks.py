"""Row-blocked passes over large arrays: each thread takes every ``n_threads``-th block.

The statistics pass of stage 1 and the linear pass of ``transform`` mix a BLAS
product with row-wise work (norms, scaling) on each block. The row-wise work
is memory-bound and numpy runs it on one core, so rather than one BLAS call
on all cores followed by numpy passes on one, every thread runs both kinds of
work on its own blocks with BLAS single-threaded: all cores stay busy, and a
block's rows are still in cache when the second kind of work reads them.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .blas import blas_controller, single_threaded_blas

#: Bytes of the input's blocks over all threads together. Every BLAS call on a
#: block pays a fixed cost that longer blocks spread over more rows: packing
#: ``transform``'s map, or writing the block's d_q x d_d (and, with a Gram
#: matrix, d_q x d_q) products and adding them to the partial sums. Measured
#: side by side (200,000 x 768 float32, 2 threads, AMD EPYC, 15 rounds), per
#: thread 1,024 / 2,048 / 4,096 rows: ``transform`` 1.090x / 1.042x / 1.029x of
#: ``X @ W``, the Procrustes statistics pass 1.171x / 1.093x / 1.091x of
#: ``X.T @ Y`` (a Gram pass on an earlier EPYC: 1,024 rows 11% above one
#: product, 2,048 to 8,192 within 2%).
BLOCK_BYTES = 24 * 2**20


def n_threads_for(n_threads):
    """Threads of a pass: ``n_threads`` checked, or by default as many as BLAS has."""
    if n_threads is None:
        blas_threads = [lib.num_threads for lib in blas_controller().lib_controllers]
        return max(blas_threads, default=1)
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) \
            or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer; got {n_threads!r}.")
    return int(n_threads)


def block_rows_for(block_rows, width, dtype, n_threads=1):
    """Rows per block: ``block_rows`` checked, or by default ``BLOCK_BYTES`` of the input."""
    if block_rows is None:
        return max(256, BLOCK_BYTES // (n_threads * width * np.dtype(dtype).itemsize))
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) \
            or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer; got {block_rows!r}.")
    return int(block_rows)


def threads_used(n_rows, block_rows, n_threads):
    """No more threads than blocks (a one-block call runs in the caller's thread)."""
    return max(1, min(n_threads, -(-n_rows // block_rows)))


def run_blocks(n_rows, block_rows, n_threads, work):
    """Call ``work(t, start, stop)`` for every block of ``block_rows`` rows.

    Thread ``t`` takes blocks ``t, t + n_threads, ...`` (fixed, so a result
    summed per thread does not depend on timing), with BLAS single-threaded
    meanwhile; one thread's error stops the others at their next block and is
    raised here. With one thread, ``work`` runs in the caller's thread and
    BLAS keeps its threads.
    """
    if n_threads == 1:
        for start in range(0, n_rows, block_rows):
            work(0, start, min(start + block_rows, n_rows))
        return
    failed = threading.Event()

    def run(t):
        try:
            for start in range(t * block_rows, n_rows, n_threads * block_rows):
                if failed.is_set():
                    return
                work(t, start, min(start + block_rows, n_rows))
        except BaseException:
            failed.set()
            raise

    with single_threaded_blas(), ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(run, range(n_threads)))
