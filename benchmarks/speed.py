"""Speed and memory of the closed-form ERAAdapter against bare-numpy floors.

Everything is float32 and measured side by side in one run: every round runs
each contender once on the same arrays (rounds alternate, the fastest round
counts), so a machine loaded by other work slows all of them alike.

Contenders per size ``n`` (synthetic ``X`` of shape (n, 768), ``Y`` (n, 384)):

* ``gemm floor``: ``X.T @ X`` plus ``X.T @ Y`` in numpy: the O(n) work any
  least-squares stage 1 needs. ``X.T @ Y`` alone is the floor of Procrustes
  (which needs no Gram matrix) and is reported too.
* ``ERAAdapter(align="procrustes").fit_align`` and ``align="lstsq"``.
* ``sklearn.linear_model.Ridge(fit_intercept=False)`` (same alpha as lstsq)
  and ``scipy.linalg.orthogonal_procrustes`` (which needs equal widths: run
  on ``Y`` zero-padded to 768 columns, padding not timed).
* ``ERAAdapter.transform`` against a bare ``X @ W`` with the same ``W`` and
  dtype.
* A breakdown of the O(n) passes inside ``fit_align``/``transform`` besides
  the GEMMs (finiteness scan, L2 normalisation, the weighted copy, ...), so a
  missed target can be attributed.

Peak memory is traced with ``tracemalloc`` (numpy reports its buffers to it)
in a separate, untimed call of each contender.

Usage::

    PYTHONPATH=. python -m benchmarks.speed [--sizes 1e3 1e4 1e5 1e6] [--repeats 3]

Writes ``benchmarks/results/speed.json`` and ``benchmarks/results/speed.md``.
"""

import argparse
import gc
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy
import sklearn
from scipy.linalg import orthogonal_procrustes
from sklearn.linear_model import Ridge
from sklearn.utils import check_array

from era_sklearn import ERAAdapter
from era_sklearn._validation import l2_normalize

RESULTS = Path(__file__).resolve().parent / "results"
D_Q, D_D = 768, 384
ALPHA = 0.1  # ERAAdapter's default align_alpha; the same for sklearn's Ridge
DTYPE = np.float32
TARGET_FIT = 1.3
TARGET_TRANSFORM = 1.1


def make_arrays(n, seed=0):
    """Synthetic paired embeddings, generated directly in float32 (no float64 temporary)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, D_Q), dtype=DTYPE)
    R = np.linalg.qr(rng.standard_normal((D_Q, D_Q)))[0][:, :D_D].astype(DTYPE)
    Y = X @ R
    Y += 0.1 * rng.standard_normal((n, D_D), dtype=DTYPE)
    return X, Y


#: Largest n for the zero-padded scipy Procrustes (the padded Y alone is 3 GB at 1e6).
MAX_N_SCIPY = 200_000


def contenders(X, Y, Y_pad, adapter, W):
    """name -> zero-argument callable; results are dropped at once."""
    ones = np.ones(len(X), dtype=DTYPE)
    funcs = {
        # -- stage 1 --------------------------------------------------------
        "gemm_floor": lambda: (X.T @ X, X.T @ Y),
        "gemm_xty": lambda: X.T @ Y,
        "era_procrustes": lambda: ERAAdapter(align="procrustes").fit_align(X, Y),
        "era_lstsq": lambda: ERAAdapter(align="lstsq", align_alpha=ALPHA).fit_align(X, Y),
        "sklearn_ridge": lambda: Ridge(alpha=ALPHA, fit_intercept=False).fit(X, Y),
        "scipy_procrustes": lambda: orthogonal_procrustes(X, Y_pad),
        # -- transform ------------------------------------------------------
        "bare_matmul": lambda: X @ W,
        "era_transform": lambda: adapter.transform(X),
        # -- breakdown of the extra O(n) passes -----------------------------
        "part_check_finite_X": lambda: check_array(X, dtype=[np.float64, np.float32]),
        "part_check_finite_Y": lambda: check_array(Y, dtype=[np.float64, np.float32]),
        "part_l2_normalize_X": lambda: l2_normalize(X),
        "part_l2_normalize_Y": lambda: l2_normalize(Y),
        "part_norm_rows_X": lambda: np.linalg.norm(X, axis=1),
        "part_weighted_copy_X": lambda: X * ones[:, None],
        "part_sums": lambda: (X.sum(axis=0), Y.sum(axis=0)),
        "part_sqnorm_einsum_f64": lambda: np.einsum("ij,ij->", X, X, dtype=np.float64),
        "part_l2_normalize_out": lambda: l2_normalize(X[:, :D_D]),
    }
    if Y_pad is None:
        del funcs["scipy_procrustes"]
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


def peak_memory(funcs, names):
    """Peak bytes newly allocated during one call (``tracemalloc``), per contender."""
    peaks = {}
    for name in names:
        gc.collect()
        tracemalloc.start()
        tracemalloc.reset_peak()
        out = funcs[name]()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del out
        peaks[name] = peak
    return peaks


MEMORY_NAMES = [
    "gemm_floor", "gemm_xty", "era_procrustes", "era_lstsq", "sklearn_ridge",
    "scipy_procrustes", "bare_matmul", "era_transform",
]


def run_size(n, repeats):
    X, Y = make_arrays(n)
    Y_pad = None
    if n <= MAX_N_SCIPY:
        Y_pad = np.zeros((n, D_Q), dtype=DTYPE)
        Y_pad[:, :D_D] = Y
    adapter = ERAAdapter(align="procrustes").fit_align(X[: min(n, 20_000)], Y[: min(n, 20_000)])
    W = adapter.coef_
    assert W.dtype == DTYPE
    funcs = contenders(X, Y, Y_pad, adapter, W)
    funcs["era_transform"]()  # warm-up (imports, BLAS threads)
    best, all_times = best_times(funcs, repeats)
    peaks = peak_memory(funcs, [k for k in MEMORY_NAMES if k in funcs])
    out = {
        "n": n,
        "input_mb": {"X": X.nbytes / 2**20, "Y": Y.nbytes / 2**20},
        "seconds": best,
        "all_seconds": all_times,
        "peak_mb": {k: v / 2**20 for k, v in peaks.items()},
        "ratios": {
            "procrustes_vs_gemm_floor": best["era_procrustes"] / best["gemm_floor"],
            "procrustes_vs_xty_floor": best["era_procrustes"] / best["gemm_xty"],
            "lstsq_vs_gemm_floor": best["era_lstsq"] / best["gemm_floor"],
            "ridge_vs_gemm_floor": best["sklearn_ridge"] / best["gemm_floor"],
            "lstsq_vs_sklearn_ridge": best["era_lstsq"] / best["sklearn_ridge"],
            "procrustes_vs_scipy": (
                best["era_procrustes"] / best["scipy_procrustes"] if Y_pad is not None else None
            ),
            "transform_vs_matmul": best["era_transform"] / best["bare_matmul"],
        },
    }
    del X, Y, Y_pad, funcs, adapter, W
    gc.collect()
    return out


def fmt_s(s):
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def markdown(rows, meta):
    lines = [
        (f"float32, d_q={D_Q}, d_d={D_D}; fastest of {meta['repeats']} alternating rounds; "
        f"{meta['cpu_count']} CPUs, numpy {meta['numpy']}, scikit-learn {meta['sklearn']}, "
        f"scipy {meta['scipy']}."),
        "",
        ("Stage 1 (`fit_align`). Targets: closed form within "
        f"{TARGET_FIT}x of the GEMM floor (`X.T @ X` + `X.T @ Y`) at n >= 1e5."),
        "",
        ("| n | GEMM floor | X.T@Y only | procrustes | ratio | lstsq | ratio | sklearn Ridge | ratio "
        "| scipy procrustes | peak MB procrustes / lstsq / Ridge / floor |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s, q, p = r["seconds"], r["ratios"], r["peak_mb"]
        lines.append(
            f"| {r['n']:.0e} | {fmt_s(s['gemm_floor'])} | {fmt_s(s['gemm_xty'])} "
            f"| {fmt_s(s['era_procrustes'])} | {q['procrustes_vs_gemm_floor']:.2f}x "
            f"| {fmt_s(s['era_lstsq'])} | {q['lstsq_vs_gemm_floor']:.2f}x "
            f"| {fmt_s(s['sklearn_ridge'])} | {q['ridge_vs_gemm_floor']:.2f}x "
            f"| {fmt_s(s['scipy_procrustes']) if 'scipy_procrustes' in s else 'skipped'} "
            f"| {p['era_procrustes']:.0f} / {p['era_lstsq']:.0f} / {p['sklearn_ridge']:.0f} "
            f"/ {p['gemm_floor']:.0f} |"
        )
    lines += [
        "",
        (f"scipy's `orthogonal_procrustes` needs equal widths: it runs on Y zero-padded to {D_Q} "
        f"columns (padding not timed), and only up to n = {MAX_N_SCIPY:.0e} (memory)."),
        "",
        f"`transform` against a bare `X @ W` (same W, float32). Target: within {TARGET_TRANSFORM}x.",
        "",
        "| n | X @ W | transform | ratio | peak MB matmul / transform |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s, q, p = r["seconds"], r["ratios"], r["peak_mb"]
        lines.append(
            f"| {r['n']:.0e} | {fmt_s(s['bare_matmul'])} | {fmt_s(s['era_transform'])} "
            f"| {q['transform_vs_matmul']:.2f}x | {p['bare_matmul']:.0f} / {p['era_transform']:.0f} |"
        )
    parts = [k for k in rows[0]["seconds"] if k.startswith("part_")]
    lines += [
        "",
        "O(n) passes besides the GEMMs (each timed alone on the same arrays):",
        "",
        "| n | " + " | ".join(k.removeprefix("part_") for k in parts) + " |",
        "|---:|" + "---:|" * len(parts),
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:.0e} | " + " | ".join(fmt_s(r["seconds"][k]) for k in parts) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e3, 1e4, 1e5, 1e6])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    meta = {
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
        "dtype": "float32",
        "d_q": D_Q,
        "d_d": D_D,
        "alpha": ALPHA,
    }
    command = "PYTHONPATH=. python -m benchmarks.speed " + " ".join(
        ["--sizes", *[f"{s:.0e}" for s in args.sizes], "--repeats", str(args.repeats)]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        n = int(n)
        t0 = time.perf_counter()
        rows.append(run_size(n, args.repeats))
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
