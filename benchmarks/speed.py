"""Stage 1 at the GEMM floor: closed-form ``fit_align`` against bare numpy GEMMs.

float32, X of shape (n, 768), Y of shape (n, 384), L2-normalised inputs (the
default). Each round runs every contender once on the same arrays, in
alternating order, and the fastest of the rounds counts, so a machine loaded
by other work slows all of them alike. Contenders per size ``n``:

* ``floor lstsq``: ``X.T @ X`` plus ``X.T @ Y`` (numpy): the O(n) work any
  least-squares stage 1 needs, on raw (unnormalised) inputs;
* ``floor procrustes``: ``X.T @ Y`` alone (Procrustes needs no Gram matrix);
* ``lstsq`` and ``procrustes``: ``ERAAdapter(align=...).fit_align(X, Y)``
  (:func:`fit_align` below), which checks and normalises every row, builds
  the statistics, solves and keeps the document sample. Targets: within
  1.1x of their floor.

Memory: each case runs once more in a fresh subprocess, which creates the
inputs, resets the kernel's high-water mark (``/proc/self/clear_refs``) and
reports peak RSS minus the RSS just after the inputs exist. Budget: one
block of rows plus the statistics (``_statistics.working_bytes``), the
document sample, plus 100 MB.

Usage::

    PYTHONPATH=. python -m benchmarks.speed [--sizes 1e5 1e6] [--repeats 3]

Writes ``benchmarks/results/speed.json`` and ``benchmarks/results/speed.md``.
"""

import argparse
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
from era_sklearn._closed_form import procrustes, ridge
from era_sklearn._reservoir import CAPACITY, Reservoir
from era_sklearn._statistics import PairStatistics, working_bytes
from era_sklearn.align import LeastSquares, Procrustes

RESULTS = Path(__file__).resolve().parent / "results"
D_Q, D_D = 768, 384
ALPHA = 0.1  # least-squares ridge (LeastSquares' default alpha)
DTYPE = np.float32
TARGET_RATIO = 1.1
MEMORY_SLACK_MB = 100


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


def contenders(X, Y, *, parts=False):
    """name -> zero-argument callable; results are dropped at once.

    ``parts`` adds the pieces of ``fit_align`` timed alone (the statistics
    pass, the solve, the document sample), so that a missed target can be
    attributed.
    """
    funcs = {
        "floor_lstsq": lambda: (X.T @ X, X.T @ Y),
        "floor_procrustes": lambda: X.T @ Y,
        "lstsq": lambda: fit_align("lstsq", X, Y),
        "procrustes": lambda: fit_align("procrustes", X, Y),
    }
    if parts:
        stats = {align: PairStatistics.from_arrays(X[:2000], Y[:2000], gram=align == "lstsq")
                 for align in ("lstsq", "procrustes")}  # the solve's cost does not depend on n
        funcs.update({
            "part_pass_lstsq": lambda: PairStatistics.from_arrays(X, Y, normalize=True),
            "part_pass_procrustes": lambda: PairStatistics.from_arrays(X, Y, gram=False,
                                                                       normalize=True),
            # The solve as fit_align runs it (BLAS on one thread), and the same
            # LAPACK calls on every BLAS thread: on a busy machine the latter
            # can take seconds on a 768 x 384 problem.
            "part_solve_lstsq": lambda: LeastSquares(alpha=ALPHA).solve_statistics(
                stats["lstsq"]),
            "part_solve_procrustes": lambda: Procrustes().solve_statistics(stats["procrustes"]),
            "part_solve_lstsq_all_threads": lambda: ridge(stats["lstsq"], ALPHA),
            "part_solve_procrustes_all_threads": lambda: procrustes(stats["procrustes"]),
            "part_docs_sample": lambda: Reservoir(random_state=0, normalize=True).add(Y),
        })
    return funcs


def best_times(funcs, repeats):
    """Fastest of ``repeats`` rounds; each round runs every contender once, in turn."""
    times = {name: [] for name in funcs}
    for r in range(repeats):
        order = list(funcs) if r % 2 == 0 else list(funcs)[::-1]  # alternate the order
        for name in order:
            gc.collect()
            t0 = time.perf_counter()
            out = funcs[name]()
            times[name].append(time.perf_counter() - t0)
            del out
    return {name: min(ts) for name, ts in times.items()}, times


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


def memory_budget_mb(name):
    if name.startswith("floor"):
        return None
    gram = name == "lstsq"
    sample = CAPACITY * D_D * np.dtype(DTYPE).itemsize
    return (working_bytes(D_Q, D_D, DTYPE, gram=gram) + sample) / 2**20 + MEMORY_SLACK_MB


def measure_memory(name, n):
    cmd = [sys.executable, "-m", "benchmarks.speed", "--memory-worker", name, "--sizes", str(n)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.splitlines()[-1])


def run_size(n, repeats):
    X, Y = make_arrays(n)
    funcs = contenders(X, Y, parts=True)
    fit_align("procrustes", X[:1000], Y[:1000])  # warm-up (imports, BLAS threads)
    best, all_times = best_times(funcs, repeats)
    del X, Y, funcs
    gc.collect()
    memory = {name: measure_memory(name, n) for name in
              ("floor_lstsq", "floor_procrustes", "lstsq", "procrustes")}
    for name, m in memory.items():
        m["budget_mb"] = memory_budget_mb(name)
    return {
        "n": n,
        "input_mb": {"X": n * D_Q * 4 / 2**20, "Y": n * D_D * 4 / 2**20},
        "seconds": best,
        "all_seconds": all_times,
        "ratios": {
            "lstsq": best["lstsq"] / best["floor_lstsq"],
            "procrustes": best["procrustes"] / best["floor_procrustes"],
        },
        "memory": memory,
    }


def fmt_s(s):
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def markdown(rows, meta):
    threads = ", ".join(f"{b['internal_api']} {b['version']} ({b['filepath'].split('/')[-1]}): "
                        f"{b['num_threads']} threads" for b in meta["blas"])
    lines = [
        (f"float32, d_q={D_Q}, d_d={D_D}, L2-normalised inputs; fastest of {meta['repeats']} "
         f"alternating rounds; {meta['cpu_count']} CPUs, numpy {meta['numpy']}, scipy "
         f"{meta['scipy']}; BLAS: {threads}. Load average (1 min) {meta['load_before']:.2f} "
         f"before, {meta.get('load_after', float('nan')):.2f} after."),
        "",
        (f"Targets: `fit_align` within {TARGET_RATIO}x of its floor (lstsq: `X.T @ X` + "
         f"`X.T @ Y`; procrustes: `X.T @ Y`); peak RSS above the inputs within one block + the "
         f"statistics + the document sample + {MEMORY_SLACK_MB} MB (budget)."),
        "",
        ("| n | floor lstsq | lstsq | ratio | floor procrustes | procrustes | ratio "
         "| peak MB over inputs: lstsq / budget | procrustes / budget | floors |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s, q, m = r["seconds"], r["ratios"], r["memory"]
        lines.append(
            f"| {r['n']:.0e} | {fmt_s(s['floor_lstsq'])} | {fmt_s(s['lstsq'])} "
            f"| {q['lstsq']:.3f}x | {fmt_s(s['floor_procrustes'])} | {fmt_s(s['procrustes'])} "
            f"| {q['procrustes']:.3f}x "
            f"| {m['lstsq']['peak_over_inputs_mb']:.0f} / {m['lstsq']['budget_mb']:.0f} "
            f"| {m['procrustes']['peak_over_inputs_mb']:.0f} / "
            f"{m['procrustes']['budget_mb']:.0f} "
            f"| {m['floor_lstsq']['peak_over_inputs_mb']:.0f} / "
            f"{m['floor_procrustes']['peak_over_inputs_mb']:.0f} |"
        )
    parts = [k for k in rows[0]["seconds"] if k.startswith("part_")]
    lines += [
        "",
        ("The pieces of `fit_align`, each timed alone in the same rounds (the solve on "
         "statistics of 2,000 rows: its cost does not depend on n):"),
        "",
        "| n | " + " | ".join(k.removeprefix("part_") for k in parts) + " |",
        "|---:|" + "---:|" * len(parts),
    ]
    for r in rows:
        lines.append(f"| {r['n']:.0e} | " + " | ".join(fmt_s(r["seconds"][k]) for k in parts)
                     + " |")
    lines += ["", "All rounds (seconds):", ""]
    for r in rows:
        rounds = "; ".join(f"{k} " + ", ".join(f"{t:.3f}" for t in v)
                           for k, v in r["all_seconds"].items())
        lines.append(f"- n={r['n']:.0e}: {rounds}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:  # inside a measurement subprocess
        print(json.dumps(memory_worker(args.memory_worker, int(args.sizes[0]))))
        return
    meta = {
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": [{k: b[k] for k in ("internal_api", "version", "num_threads", "filepath")}
                 for b in threadpool_info() if b["user_api"] == "blas"],
        "dtype": "float32", "d_q": D_Q, "d_d": D_D, "alpha": ALPHA,
        "fit_align": "ERAAdapter(align=LeastSquares(alpha=0.1) or Procrustes()).fit_align(X, Y)",
        "load_before": os.getloadavg()[0],
    }
    command = "PYTHONPATH=. python -m benchmarks.speed " + " ".join(
        ["--sizes", *[f"{s:.0e}" for s in args.sizes], "--repeats", str(args.repeats)]
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
