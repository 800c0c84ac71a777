"""Run benchmark cells in worker processes (or in this one), in a chosen order.

Workers are spawned, so each imports the benchmark module afresh and picks up
its thread settings (one BLAS thread per worker) before numpy loads.
"""

from __future__ import annotations


def run_tasks(func, tasks, order, jobs, on_done=None):
    """``[func(task) for task in tasks]``, computed in ``order`` by ``jobs`` processes.

    ``on_done(task, result)`` is called as each one finishes (for a progress log).
    Returns the results in the order of ``tasks``.
    """
    out = [None] * len(tasks)

    def done(i, result):
        out[i] = result
        if on_done is not None:
            on_done(tasks[i], result)

    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(func, tasks[i]): i for i in order}
            for f in as_completed(futures):
                done(futures[f], f.result())
    else:
        for i in order:
            done(i, func(tasks[i]))
    return out
