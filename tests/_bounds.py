"""Rounding-error bounds for the tests' float comparisons.

A tolerance copied from one machine's output passes there and fails on a CPU
whose kernels round otherwise (Intel and AMD builds of OpenBLAS pick different
float32 kernels; so do different BLAS thread counts). The tolerances here are
worst-case bounds instead, valid for any summation order, blocking or kernel:

- Higham, *Accuracy and Stability of Numerical Algorithms*, eq. (3.5): a dot
  product of ``k`` terms computed in floating point is off by at most
  ``gamma_k * sum |terms|``, ``gamma_k = k u / (1 - k u)``, ``u`` the unit
  roundoff of the dtype (2**-24 for float32);
- relative errors compose: ``(1 + gamma_a)(1 + gamma_b) <= 1 + gamma_(a+b)``.

Each bound is tight enough to fail on a one-row error (see
``test_statistics.py::test_the_bound_catches_a_one_row_error``).
"""

import numpy as np


def unit_roundoff(dtype):
    return np.finfo(dtype).eps / 2


def gamma(k, dtype):
    ku = k * unit_roundoff(dtype)
    assert ku < 0.5, "the bound is meaningless this far"
    return ku / (1 - ku)


def unit_rows(A):
    """Exact unit rows, in float64, of any finite rows (zero rows stay zero)."""
    A = np.asarray(A, dtype=np.float64)
    peak = np.max(np.abs(A), axis=1, keepdims=True, initial=0.0)
    scaled = np.divide(A, peak, out=np.zeros_like(A), where=peak > 0)  # no over/underflow
    norms = np.linalg.norm(scaled, axis=1, keepdims=True)
    return np.divide(scaled, norms, out=np.zeros_like(A), where=norms > 0)


def statistics_reference(X, Y, w=None, normalize=False):
    """``PairStatistics`` by their definition in float64, and a bound on each entry's error.

    The pass (era_sklearn/_stage1/statistics.py) forms each term from rows scaled in
    the input dtype and sums at most ``n`` rows in that dtype before the
    float64 totals take over. A term's factors carry the rounding of the row
    scaling: the row's sum of ``d`` squares (``gamma_d``, at most that on the
    norm), the reciprocal, the weight and their casts and products (a few
    ``u``), on each side; ``+ 8`` covers those few. The float64 reference and
    totals add ``gamma_(n+d)`` in float64.
    """
    dtype = X.dtype
    n, d_q = X.shape
    d_d = Y.shape[1]
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    if normalize:
        Xr, Yr = unit_rows(X), unit_rows(Y)
        keep = Xr.any(axis=1) & Yr.any(axis=1)
        Xr, Yr, w = Xr[keep], Yr[keep], w[keep]
    else:
        Xr, Yr = X.astype(np.float64), Y.astype(np.float64)
    reference = {
        "weight_sum": w.sum(), "x_sum": w @ Xr, "y_sum": w @ Yr,
        "xty": Xr.T @ (w[:, None] * Yr), "xtx": Xr.T @ (w[:, None] * Xr),
        "x_sqnorm": w @ np.einsum("ij,ij->i", Xr, Xr),
    }
    Xa, Ya = np.abs(Xr), np.abs(Yr)
    magnitudes = {
        "weight_sum": w.sum(), "x_sum": w @ Xa, "y_sum": w @ Ya,
        "xty": Xa.T @ (w[:, None] * Ya), "xtx": Xa.T @ (w[:, None] * Xa),
        "x_sqnorm": reference["x_sqnorm"],
    }
    g = gamma(n + d_q + d_d + 8, dtype) + gamma(n + d_q + d_d, np.float64)
    bounds = {name: g * m for name, m in magnitudes.items()}
    bounds["weight_sum"] = gamma(n, np.float64) * w.sum()  # float64 all the way
    return reference, bounds


def assert_within(got, expected, bound, err_msg=""):
    """``|got - expected| <= bound`` entry-wise, reporting the worst ratio."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    excess = np.abs(got - expected) - bound
    if np.any(excess > 0):
        i = np.unravel_index(np.argmax(excess), np.shape(excess)) if np.ndim(excess) else ()
        raise AssertionError(
            f"{err_msg}: error {abs(got[i] - expected[i]):.3g} exceeds its bound "
            f"{np.broadcast_to(bound, np.shape(excess))[i]:.3g} at {i}"
        )


def assert_statistics_within(stats, X, Y, w=None, normalize=False, names=None):
    """Each statistic of ``stats`` within its error bound of the definition."""
    reference, bounds = statistics_reference(X, Y, w, normalize)
    if normalize:
        reference["x_sqnorm"] = reference["weight_sum"]  # unit rows: exact by construction
        bounds["x_sqnorm"] = bounds["weight_sum"]
    for name in names or reference:
        value = getattr(stats, name)
        if value is not None:
            assert_within(value, reference[name], bounds[name], err_msg=name)


def polar_bound(M, dM_fro):
    """Bound on ``||Q - Q~||_F`` for the orthogonal polar factor of ``M`` moved by ``dM``.

    For a real full-rank ``m x n`` matrix (Li, "New perturbation bounds for the
    unitary polar factor", SIAM J. Matrix Anal. Appl. 16, 1995): at most
    ``(2 / (s_n + s_(n-1)) + 1 / s_n) ||dM||_F <= 3 ||dM||_F / s_n``, with the
    perturbed matrix's smallest singular value at least ``s_n - ||dM||``.
    """
    s = np.linalg.svd(np.asarray(M, dtype=np.float64), compute_uv=False)
    s_min = s[-1] - dM_fro
    assert s_min > 0, "rank-deficient: the polar factor is not unique"
    return 3 * dM_fro / s_min


def solve_bound(G, B, dG_fro, dB_fro):
    """Bound on ``||X - X~||_F`` for ``G X = B`` (``G`` symmetric positive definite)
    when ``G`` and ``B`` move by at most ``dG``, ``dB`` (Frobenius), by the
    standard perturbation bound ``||G^-1|| (||dB|| + ||dG|| ||X||) / (1 - ||G^-1|| ||dG||)``.
    """
    G, B = np.asarray(G, dtype=np.float64), np.asarray(B, dtype=np.float64)
    inv_norm = 1 / np.linalg.eigvalsh(G)[0]
    assert inv_norm * dG_fro < 1, "G is too close to singular for this bound"
    X = np.linalg.solve(G, B)
    return inv_norm * (dB_fro + dG_fro * np.linalg.norm(X)) / (1 - inv_norm * dG_fro)


def closed_form_map(X, Y, w=None, *, kind="procrustes", center=False, scale=False,
                    alpha=0.1, normalize=True):
    """A closed-form stage-1 map from exact statistics, and bounds on a float computation.

    Returns ``(W, b, W_bound, b_bound)``: the exact map and intercept (0 without
    centering), and bounds on ``||W~ - W||_F`` and ``|b~ - b|`` (entry-wise) for
    a map solved from the rounded statistics of ``statistics_reference``:
    centring moves the errors of the sums into the centred products, then the
    polar-factor (Procrustes) or linear-solve (ridge least squares) perturbation
    bound (with ``scale``, the least-squares scale ``trace(W^T M) / <W, G W>``:
    Mirsky's bound on the singular values' sum, and the quotient's), then the
    casts of the map to the input dtype.
    """
    reference, bounds = statistics_reference(X, Y, w, normalize)
    n = reference["weight_sum"]
    mx, my = reference["x_sum"] / n, reference["y_sum"] / n
    dmx, dmy = bounds["x_sum"] / n, bounds["y_sum"] / n
    M, dM = reference["xty"], bounds["xty"]
    G, dG = reference["xtx"], bounds["xtx"]
    if center:
        M = M - n * np.outer(mx, my)
        dM = dM + n * (np.outer(dmx, np.abs(my)) + np.outer(np.abs(mx), dmy) + np.outer(dmx, dmy))
        G = G - n * np.outer(mx, mx)
        dG = dG + n * (2 * np.outer(dmx, np.abs(mx)) + np.outer(dmx, dmx))
    if kind == "procrustes":
        U, _, Vt = np.linalg.svd(M, full_matrices=False)
        W, dW = U @ Vt, polar_bound(M, np.linalg.norm(dM))
        if scale:
            W, dW = _scaled(W, dW, M, np.linalg.norm(dM), G, np.linalg.norm(dG))
    else:
        G = G + alpha * np.eye(len(G))
        W, dW = np.linalg.solve(G, M), solve_bound(G, M, np.linalg.norm(dG), np.linalg.norm(dM))
    u = unit_roundoff(X.dtype)
    dW += u * np.linalg.norm(W)
    if not center:
        return W, np.zeros(W.shape[1]), dW, np.zeros(W.shape[1])
    b = my - mx @ W
    db = dmy + dmx @ np.abs(W) + np.linalg.norm(mx) * dW + u * np.abs(b)
    return W, b, dW, db


def _scaled(W, dW, M, dM, G, dG):
    t, q = np.linalg.svd(M, compute_uv=False).sum(), np.einsum("ij,ij->", W, G @ W)
    w_norm = np.linalg.norm(W)
    dt = np.sqrt(min(M.shape)) * dM
    dq = dG * w_norm**2 + 2 * np.linalg.norm(G, 2) * w_norm * dW + np.linalg.norm(G, 2) * dW**2
    assert dq < q
    c = t / q
    dc = (dt + c * dq) / (q - dq)
    return c * W, dc * w_norm + (c + dc) * dW


def transform_reference(coef, intercept, X, normalize_input=True, normalize_output=True):
    """Exact ``transform`` of a linear map with unit outputs, and an entry-wise bound on
    a float computation of it: the input's normalisation (``gamma_(d+3)`` per entry, also
    when its scale is applied to the product's rows instead), the product
    (``gamma_(d_q+2)`` of ``|x| @ |W| + |b|``, the casts included), then the output's
    normalisation, which at most doubles the relative error and adds its own.
    ``normalize_output=False``: the map and the bound before that last step.
    """
    W, b = np.asarray(coef, dtype=np.float64), np.asarray(intercept, dtype=np.float64)
    U = unit_rows(X) if normalize_input else X.astype(np.float64)
    Z = U @ W + b
    d_q, d_d = W.shape
    g = gamma(d_q + 2, X.dtype) + (gamma(d_q + 3, X.dtype) if normalize_input else 0)
    err = g * (np.abs(U) @ np.abs(W) + np.abs(b))
    if not normalize_output:
        return Z, err
    z = np.linalg.norm(Z, axis=1, keepdims=True)
    return Z / z, 2 * np.linalg.norm(err, axis=1, keepdims=True) / z + gamma(d_d + 3, X.dtype)


def assert_map_within(est, X, Y, w=None, *, kind, center=False, scale=False, alpha=0.1):
    """``est``'s closed-form stage-1 map, and its transform of X, within their bounds."""
    W, b, dW, db = closed_form_map(X, Y, w, kind=kind, center=center, scale=scale,
                                   alpha=alpha, normalize=est.normalize_input)
    assert_within(np.linalg.norm(est.coef_ - W), 0, dW, err_msg="coef_ (Frobenius)")
    assert_within(est.intercept_, b, db, err_msg="intercept_")
    expected, bound = transform_reference(est.coef_, est.intercept_, X, est.normalize_input)
    assert_within(est.transform(X), expected, bound, err_msg="transform")
