"""Stage 1 and transform at the GEMM floor: ``fit_align`` and ``transform`` against bare numpy GEMMs.

float32, X of shape (n, 768), Y of shape (n, 384), L2-normalised inputs (the
default). Each round runs every contender once on the same arrays, in
alternating order; a contender's ratio to its floor is taken within each
round (side by side, so a machine loaded by other work slows both alike) and
the median over the rounds is reported, with the median times. A contender
that allocates an n x d_d output is called once untimed right before its
timed call (``WARM_UP``), and the process keeps the memory it frees
(:func:`keep_freed_memory`; ``--release-memory`` turns that off), so that
neither contender pays for pages the VM's host must back again. Contenders
per size ``n``:

* ``floor lstsq``: ``X.T @ X`` plus ``X.T @ Y`` (numpy): the O(n) work any
  least-squares stage 1 needs, on raw (unnormalised) inputs;
* ``floor procrustes``: ``X.T @ Y`` alone (Procrustes needs no Gram matrix);
* ``lstsq`` and ``procrustes``: ``ERAAdapter(align=...).fit_align(X, Y)``
  (:func:`fit_align` below), which checks and normalises every row, builds
  the statistics, solves and keeps the document sample. Targets: within
  1.1x of their floor.
* ``floor transform``: ``X @ W`` (numpy) with the adapter's own map ``W``;
* ``transform``: ``ERAAdapter().transform(X)`` in the default configuration
  (Procrustes stage 1, no intercept, normalised input and output), which
  checks X (NaN, inf, all-zero and extreme rows) and normalises. Target:
  within 1.1x of its floor. Its latency for one query (one row, the median
  of many calls) is reported beside that of ``x @ W``.

The parts (``part_*``) time pieces alone, so that a missed target can be
attributed: the statistics pass, the solve, the document sample, X's row
norms alone (``part_x_norms``: the pass's blocks and threads, squares only),
and ``transform`` of an adapter with an intercept (its input norms are
needed). ``part_x_norms`` is the one read of X that any fit on normalised
rows adds to its floor: BLAS hides its own reads of X under its arithmetic,
but a row's norm must be known before the row enters the product, so this
read cannot overlap a numpy/BLAS GEMM. Its share of each floor (median over
the rounds) is printed as a lower bound on the excess of ``fit_align``.

Memory: each case runs once more in a fresh subprocess, which creates the
inputs, resets the kernel's high-water mark (``/proc/self/clear_refs``) and
reports peak RSS minus the RSS just after the inputs exist. Budget: one
block of rows plus the statistics (``_statistics.working_bytes``), the
document sample, plus 100 MB; for ``transform``, its output plus 100 MB.

Usage::

    PYTHONPATH=. python -m benchmarks.speed [--sizes 2e5 1e6] [--repeats 5] [--release-memory]

Writes ``benchmarks/results/speed.json`` and ``benchmarks/results/speed.md``.
"""

import argparse
import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy
from threadpoolctl import threadpool_info

from era_sklearn import ERAAdapter
from era_sklearn._stage1.closed_form import procrustes, ridge
from era_sklearn._stage1.reservoir import CAPACITY, Reservoir
from era_sklearn._stage1.statistics import PairStatistics, working_bytes
from era_sklearn._utils.blocks import (
    block_rows_for,
    n_threads_for,
    run_blocks,
    threads_used,
)
from era_sklearn._utils.validation import _square_sums
from era_sklearn.align import AlignProblem, LeastSquares, Procrustes

RESULTS = Path(__file__).resolve().parent / "results"
D_Q, D_D = 768, 384
ALPHA = 0.1  # least-squares ridge (LeastSquares' default alpha)
DTYPE = np.float32
TARGET_RATIO = 1.1
MEMORY_SLACK_MB = 100
#: Rows the adapter of ``transform`` is aligned on (its speed does not depend on them).
TRANSFORM_FIT_ROWS = 20_000
#: Single-row ``transform`` calls whose median is the one-query latency.
N_QUERIES = 1000


def fit_align(align, X, Y):
    """``ERAAdapter(align=align).fit_align(X, Y)``: its stage-1 map and ``align_docs_``."""
    solver = LeastSquares(alpha=ALPHA) if align == "lstsq" else Procrustes()
    adapter = ERAAdapter(align=solver).fit_align(X, Y)
    return adapter.align_coef_, adapter.align_docs_


def make_arrays(n, seed=0):
    """Paired embeddings, generated in float32 chunks (no float64 temporary)."""
    rng = np.random.default_rng(seed)
    R = np.linalg.qr(rng.standard_normal((D_Q, D_Q)))[0][:, :D_D].astype(DTYPE)
    X = np.empty((n, D_Q), dtype=DTYPE)
    Y = np.empty((n, D_D), dtype=DTYPE)
    for start in range(0, n, 65_536):
        stop = min(n, start + 65_536)
        X[start:stop] = rng.standard_normal((stop - start, D_Q), dtype=DTYPE)
        np.matmul(X[start:stop], R, out=Y[start:stop])
        Y[start:stop] += 0.1 * rng.standard_normal((stop - start, D_D), dtype=DTYPE)
    return X, Y


def aligned_adapter(X, Y, **params):
    """An ``ERAAdapter(**params)`` aligned on the first rows: the map ``transform`` applies."""
    fit_rows = slice(0, TRANSFORM_FIT_ROWS)
    return ERAAdapter(**params).fit_align(X[fit_rows], Y[fit_rows])


def contenders(X, Y, *, parts=False):
    """name -> zero-argument callable; results are dropped at once.

    ``parts`` adds the pieces of ``fit_align`` timed alone (the statistics
    pass, the solve, the document sample) and ``transform`` with an
    intercept, so that a missed target can be attributed.
    """
    adapter = aligned_adapter(X, Y)
    W = adapter.coef_
    funcs = {
        "floor_lstsq": lambda: (X.T @ X, X.T @ Y),
        "floor_procrustes": lambda: X.T @ Y,
        "lstsq": lambda: fit_align("lstsq", X, Y),
        "procrustes": lambda: fit_align("procrustes", X, Y),
        "floor_transform": lambda: X @ W,
        "transform": lambda: adapter.transform(X),
    }
    if parts:
        stats = {align: PairStatistics.from_arrays(X[:2000], Y[:2000], gram=align == "lstsq")
                 for align in ("lstsq", "procrustes")}  # the solve's cost does not depend on n
        centered = aligned_adapter(X, Y, align=Procrustes(center=True))
        funcs.update({
            "part_pass_lstsq": lambda: PairStatistics.from_arrays(X, Y, normalize=True),
            "part_pass_procrustes": lambda: PairStatistics.from_arrays(X, Y, gram=False,
                                                                       normalize=True),
            # The solve as fit_align runs it (BLAS on one thread), and the same
            # LAPACK calls on every BLAS thread: on a busy machine the latter
            # can take seconds on a 768 x 384 problem.
            "part_solve_lstsq": lambda: LeastSquares(alpha=ALPHA).solve(
                AlignProblem(stats["lstsq"])),
            "part_solve_procrustes": lambda: Procrustes().solve(AlignProblem(stats["procrustes"])),
            "part_solve_lstsq_all_threads": lambda: ridge(stats["lstsq"], ALPHA),
            "part_solve_procrustes_all_threads": lambda: procrustes(stats["procrustes"]),
            "part_docs_sample": lambda: Reservoir(random_state=0, normalize=True).add(Y),
            "part_x_norms": lambda: x_norms(X),
            "part_transform_with_intercept": lambda: centered.transform(X),
        })
    return funcs


def x_norms(X):
    """X's squared row norms, in the blocks and threads of the statistics pass."""
    n_threads = n_threads_for(None)
    block_rows = block_rows_for(None, X.shape[1], X.dtype, n_threads)
    n_threads = threads_used(len(X), block_rows, n_threads)
    run_blocks(len(X), block_rows, n_threads,
               lambda t, start, stop: _square_sums(X[start:stop]))


def query_latency(X, Y, n_queries=N_QUERIES):
    """Median seconds of ``transform`` on one row, and of ``x @ W`` on the same rows."""
    adapter = aligned_adapter(X, Y)
    W = adapter.coef_
    rows = [X[i:i + 1] for i in range(min(n_queries, len(X)))]
    adapter.transform(rows[0])  # warm-up
    latency = {}
    for name, call in (("transform", adapter.transform), ("floor", lambda x: x @ W)):
        times = []
        for x in rows:
            t0 = time.perf_counter()
            call(x)
            times.append(time.perf_counter() - t0)
        latency[name] = float(np.median(times))
    return latency


#: contender -> its floor: each ratio is taken within a round.
FLOORS = {"lstsq": "floor_lstsq", "procrustes": "floor_procrustes",
          "transform": "floor_transform"}


#: Contenders that allocate an n x d_d output run once untimed right before their timed
#: call: on a VM the first touch of memory the guest has not used for a while can cost
#: more than the product (0.98 s against 0.04 s for 200,000 x 384 float32, measured), and
#: it fell on whichever of ``X @ W`` and ``transform`` ran first in a round.
WARM_UP = {"floor_transform", "transform", "part_transform_with_intercept"}


def keep_freed_memory():
    """Have glibc keep freed memory in the process; True if it applied (glibc only).

    Freed large blocks go back to the kernel (``munmap``, or a trimmed heap), and on a
    VM the kernel may hand them back to the host; the next allocation's first touch
    then waits for the host to back each page again. On the 2-CPU AMD EPYC VM that
    cost 0.3-0.4 s per 200,000 x 384 float32 output, in some rounds and not others:
    ``transform`` took 0.63-0.78 s or 0.96-1.18 s and its floor 0.61-0.88 s or
    1.00 s in one 15-round run, ratios from 0.85 to 1.79 (median 1.089). Both
    contenders allocate the same output, so that noise tells nothing about either;
    in a second 15-round run with the memory kept (no ``mmap`` for large blocks, no
    trimming), the rounds stayed within 0.61-0.65 s and 0.66-0.78 s (median ratio 1.121).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def round_times(funcs, repeats):
    """Seconds of every contender in each of ``repeats`` rounds, each run once per round, in turn."""
    times = {name: [] for name in funcs}
    for r in range(repeats):
        order = list(funcs) if r % 2 == 0 else list(funcs)[::-1]  # alternate the order
        for name in order:
            if name in WARM_UP:
                funcs[name]()
            gc.collect()
            t0 = time.perf_counter()
            out = funcs[name]()
            times[name].append(time.perf_counter() - t0)
            del out
    return times


def median_ratios(times):
    """Median over the rounds of each contender's time over its floor's in the same round."""
    return {name: float(np.median(np.divide(times[name], times[floor])))
            for name, floor in FLOORS.items()}


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_worker(name, n):
    """In a fresh process: peak RSS of one call above the RSS once the inputs exist."""
    X, Y = make_arrays(n)
    func = contenders(X, Y)[name]
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    func()
    return {"rss_inputs_mb": before / 1024, "peak_over_inputs_mb": (_status_kb("VmHWM") -
                                                                   before) / 1024}


def memory_budget_mb(name, n):
    if name.startswith("floor"):
        return None
    if name == "transform":
        return n * D_D * np.dtype(DTYPE).itemsize / 2**20 + MEMORY_SLACK_MB
    gram = name == "lstsq"
    sample = CAPACITY * D_D * np.dtype(DTYPE).itemsize
    return (working_bytes(D_Q, D_D, DTYPE, gram=gram) + sample) / 2**20 + MEMORY_SLACK_MB


def measure_memory(name, n):
    cmd = [sys.executable, "-m", "benchmarks.speed", "--memory-worker", name, "--sizes", str(n)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.splitlines()[-1])


#: The cases whose peak memory is measured, each in a fresh process.
MEMORY_CASES = ("floor_lstsq", "floor_procrustes", "lstsq", "procrustes", "floor_transform",
                "transform")


def run_size(n, repeats):
    X, Y = make_arrays(n)
    funcs = contenders(X, Y, parts=True)
    fit_align("procrustes", X[:1000], Y[:1000])  # warm-up (imports, BLAS threads)
    all_times = round_times(funcs, repeats)
    latency = query_latency(X, Y)
    del X, Y, funcs
    gc.collect()
    memory = {name: measure_memory(name, n) for name in MEMORY_CASES}
    for name, m in memory.items():
        m["budget_mb"] = memory_budget_mb(name, n)
    return {
        "n": n,
        "input_mb": {"X": n * D_Q * 4 / 2**20, "Y": n * D_D * 4 / 2**20},
        "seconds": {name: float(np.median(ts)) for name, ts in all_times.items()},
        "all_seconds": all_times,
        "ratios": median_ratios(all_times),
        "x_norms_share": {floor: float(np.median(np.divide(all_times["part_x_norms"],
                                                           all_times[floor])))
                          for floor in ("floor_lstsq", "floor_procrustes")},
        "query_seconds": latency,
        "memory": memory,
    }


def fmt_s(s):
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def fmt_us(s):
    return f"{s * 1e6:.0f} us"


def table(columns, rows):
    """Markdown lines of a table: ``columns`` is ``[(title, row -> cell text), ...]``."""
    return ["| " + " | ".join(title for title, _ in columns) + " |",
            "|" + "---:|" * len(columns),
            *("| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows)]


def _seconds(name):
    return lambda r: fmt_s(r["seconds"][name])


def _ratio(name):
    return lambda r: f"{r['ratios'][name]:.3f}x"


def _peak(name, budget=True):
    def cell(r):
        m = r["memory"][name]
        peak = f"{m['peak_over_inputs_mb']:.0f}"
        return f"{peak} / {m['budget_mb']:.0f}" if budget else peak
    return cell


#: The fit_align table: each closed-form stage 1 beside its floor.
FIT_ALIGN_COLUMNS = [
    ("n", lambda r: f"{r['n']:.0e}"),
    ("floor lstsq", _seconds("floor_lstsq")), ("lstsq", _seconds("lstsq")),
    ("ratio", _ratio("lstsq")),
    ("floor procrustes", _seconds("floor_procrustes")), ("procrustes", _seconds("procrustes")),
    ("ratio", _ratio("procrustes")),
    ("peak MB over inputs: lstsq / budget", _peak("lstsq")),
    ("procrustes / budget", _peak("procrustes")),
    ("floors", lambda r: f"{_peak('floor_lstsq', False)(r)} / "
                         f"{_peak('floor_procrustes', False)(r)}"),
]
#: The transform table, with the one-query latencies.
TRANSFORM_COLUMNS = [
    ("n", lambda r: f"{r['n']:.0e}"),
    ("X @ W", _seconds("floor_transform")), ("transform", _seconds("transform")),
    ("ratio", _ratio("transform")),
    ("one query: transform", lambda r: fmt_us(r["query_seconds"]["transform"])),
    ("one query: x @ W", lambda r: fmt_us(r["query_seconds"]["floor"])),
    ("peak MB over inputs: transform / budget", _peak("transform")),
    ("X @ W", _peak("floor_transform", False)),
]


def markdown(rows, meta):
    threads = ", ".join(f"{b['internal_api']} {b['version']} ({b['filepath'].split('/')[-1]}): "
                        f"{b['num_threads']} threads" for b in meta["blas"])
    parts = [k for k in rows[0]["seconds"] if k.startswith("part_")]
    lines = [
        (f"float32, d_q={D_Q}, d_d={D_D}, L2-normalised inputs; median times of "
         f"{meta['repeats']} alternating rounds, ratios: median over the rounds of each round's "
         f"ratio; {meta['cpu']} ({meta['cpu_count']} CPUs), numpy {meta['numpy']}, scipy "
         f"{meta['scipy']}; BLAS: {threads}. Load average (1 min) {meta['load_before']:.2f} "
         f"before, {meta.get('load_after', float('nan')):.2f} after. Freed memory "
         + ("kept in the process (glibc `mallopt`: no `mmap`, no trim), so no round pays "
            "for pages the host must back again." if meta.get("freed_memory_kept") else
            "returned to the system (the allocator's default).")),
        "",
        (f"Targets: `fit_align` within {TARGET_RATIO}x of its floor (lstsq: `X.T @ X` + "
         f"`X.T @ Y`; procrustes: `X.T @ Y`); peak RSS above the inputs within one block + the "
         f"statistics + the document sample + {MEMORY_SLACK_MB} MB (budget)."),
        "",
        *table(FIT_ALIGN_COLUMNS, rows),
        "",
        (f"Target: `transform` (default `ERAAdapter()` after `fit_align`) within {TARGET_RATIO}x "
         f"of `X @ W` with its own map `W`; peak RSS above the inputs within its output + "
         f"{MEMORY_SLACK_MB} MB. One query: the median of {N_QUERIES} calls on one row."),
        "",
        *table(TRANSFORM_COLUMNS, rows),
        "",
        ("The pieces of `fit_align`, each timed alone in the same rounds (the solve on "
         "statistics of 2,000 rows: its cost does not depend on n), and `transform` of an "
         "adapter with an intercept (`Procrustes(center=True)`):"),
        "",
        *table([("n", lambda r: f"{r['n']:.0e}")]
               + [(k.removeprefix("part_"), _seconds(k)) for k in parts], rows),
        "",
        ("X's row norms alone (`x_norms`: the one read of X a fit on normalised rows adds, "
         "which cannot overlap the GEMM) as a share of each floor, median over the rounds: "
         "a lower bound on `fit_align`'s excess over its floor, before the solve and the "
         "document sample:"),
        "",
        *table([("n", lambda r: f"{r['n']:.0e}"),
                ("x_norms / floor lstsq", lambda r: f"{r['x_norms_share']['floor_lstsq']:.3f}"),
                ("x_norms / floor procrustes",
                 lambda r: f"{r['x_norms_share']['floor_procrustes']:.3f}")], rows),
    ]
    lines += ["", "All rounds (seconds):", ""]
    for r in rows:
        rounds = "; ".join(f"{k} " + ", ".join(f"{t:.3f}" for t in v)
                           for k, v in r["all_seconds"].items())
        lines.append(f"- n={r['n']:.0e}: {rounds}")
    return "\n".join(lines) + "\n"


def cpu_model():
    """The processor's name (Linux: /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[2e5, 1e6])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--release-memory", action="store_true",
                        help="time with the allocator's default of returning freed memory")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:  # inside a measurement subprocess
        print(json.dumps(memory_worker(args.memory_worker, int(args.sizes[0]))))
        return
    kept = False if args.release_memory else keep_freed_memory()
    meta = {
        "repeats": args.repeats,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": [{k: b[k] for k in ("internal_api", "version", "num_threads", "filepath")}
                 for b in threadpool_info() if b["user_api"] == "blas"],
        "dtype": "float32", "d_q": D_Q, "d_d": D_D, "alpha": ALPHA,
        "fit_align": "ERAAdapter(align=LeastSquares(alpha=0.1) or Procrustes()).fit_align(X, Y)",
        "transform": f"ERAAdapter().fit_align(X[:{TRANSFORM_FIT_ROWS}], Y[:{TRANSFORM_FIT_ROWS}])"
                     ".transform(X)",
        "load_before": os.getloadavg()[0],
        "freed_memory_kept": kept,
    }
    command = "PYTHONPATH=. python -m benchmarks.speed " + " ".join(
        ["--sizes", *[f"{s:.0e}" for s in args.sizes], "--repeats", str(args.repeats)]
        + (["--release-memory"] if args.release_memory else [])
    )
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        t0 = time.perf_counter()
        rows.append(run_size(int(n), args.repeats))
        meta["load_after"] = os.getloadavg()[0]
        print(f"n={n:.0e} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        write(args.out, command, meta, rows, complete=len(rows) == len(args.sizes))
    print(markdown(rows, meta))


def write(out, command, meta, rows, complete):
    """Write the results so far (after every size: a long run still leaves a record)."""
    table = markdown(rows, meta)
    status = "" if complete else "(partial: the run has not finished every size yet)\n\n"
    (out / "speed.json").write_text(
        json.dumps({"command": command, "complete": complete, "meta": meta, "rows": rows},
                   indent=2) + "\n"
    )
    (out / "speed.md").write_text(f"Command: `{command}`\n\n{status}" + table)


if __name__ == "__main__":
    main()
