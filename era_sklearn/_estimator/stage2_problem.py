"""Stage 2 as the estimator prepares it: labelled pairs validated and normalised once, each
target found among the candidate documents, and the stage-1 prior, as one ``Stage2Problem``."""

import warnings

import numpy as np

from .._stage2.corpus import corpus_matrix, match_targets
from .._stage2.problem import Stage2Problem, blended_prior, prior_bases
from .._stage2.queries import query_ids, row_weights, unique_rows
from .._utils.validation import check_sample_weight_and_groups, check_squares_representable
from .hybrid import check_layout
from .rows import nonzero_rows, normalize_blocks, normalize_rows, warn_dropped

#: Blend weight of the query-encoder part used by ``hybrid=True`` when no
#: labels choose one. Chosen on the *training* queries of the shared SciFact
#: and NFCorpus sets: 0.3 was the largest blend not below the cheap encoder
#: alone with both the MiniLM and the m2v index.
DEFAULT_BLEND = 0.3
#: Blends ``blend="auto"`` tries with Ridge. 0.9 and 1.0 are left out to keep
#: selection cheap: with all labels the choice never went above 0.6 in the
#: shared-data benchmarks.
AUTO_BLENDS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]
#: fit warns when it has no stage-1 map and fewer labelled queries than this:
#: label-only maps need many labels (SciFact / MiniLM, `python -m benchmarks.quality`,
#: 3 seeds: 0.065 nDCG@10 at 32 queries against 0.569 from fit_align; with all 809,
#: 0.70 against 0.79).
FEW_LABELS_WITHOUT_ALIGN = 500


def stage1_blend(blend, hybrid):
    """``blend_`` of a stage-1 fit: no labels choose one, so ``"auto"`` is the default."""
    if not hybrid:
        return None
    return DEFAULT_BLEND if blend == "auto" else float(blend)


def stage1_prior(W_align, blend, hybrid):
    """``coef_`` after stage 1: the prior stage 2 would start from, in W's dtype."""
    d_d = W_align.shape[1]
    d_in = W_align.shape[0] + (d_d if hybrid else 0)
    bases = prior_bases(W_align, d_in, d_d, hybrid)
    return blended_prior(bases, blend, hybrid, d_in, d_d).astype(W_align.dtype)


def warn_if_few_labels(n_queries):
    if n_queries < FEW_LABELS_WITHOUT_ALIGN:
        warnings.warn(
            f"fit without a stage-1 map learns from the {n_queries} labelled queries "
            f"alone: call fit_align(X_docs, Y_docs) first (or pass align=) to start from an "
            f"aligned map. With fewer than {FEW_LABELS_WITHOUT_ALIGN} queries a label-only "
            f"map ranks far worse (SciFact, 32 queries: nDCG@10 0.065 label-only against "
            f"0.569 after fit_align).", UserWarning, stacklevel=4)


def build_problem(X, Y, sample_weight, groups, corpus, stage1, *, hybrid, blend,
                  normalize_input, query_weighting, random_state, verbose):
    """The ``Stage2Problem`` of validated X, Y; ``stage1`` is ``(W, b, docs)`` or Nones."""
    W_align, b_align, docs = stage1
    if W_align is not None and Y.shape[1] != W_align.shape[1]:
        raise ValueError(
            f"Y has {Y.shape[1]} features, but the stage-1 map of this ERAAdapter outputs "
            f"{W_align.shape[1]} (the document encoder's width)."
        )
    check_layout(X, Y, hybrid)
    sample_weight, groups = check_sample_weight_and_groups(sample_weight, groups, len(X),
                                                           X.dtype)
    keep = nonzero_rows(X, Y)
    warn_dropped(int(len(X) - keep.sum()), "labelled")
    keep &= sample_weight > 0  # zero weight: the row does not take part
    if len(np.unique(query_ids(X[keep], None if groups is None else groups[keep]))) < 2 \
            and keep.sum() < 2:
        raise ValueError(
            f"fit needs at least 2 labelled rows with non-zero embeddings and weight; "
            f"{int(keep.sum())} of {len(X)} are left."
        )
    X, Y, sample_weight = X[keep], Y[keep], sample_weight[keep]
    groups = None if groups is None else groups[keep]
    if not normalize_input:
        check_squares_representable(X, "X")
    X = normalize_blocks(X, Y.shape[1], normalize=normalize_input, hybrid=hybrid)
    Y = normalize_rows(Y, "Y", normalize_input)
    qids = query_ids(X, groups)
    candidates = _candidates(corpus, len(keep), X.dtype, Y, docs, normalize_input)
    d_in, d_d = X.shape[1], Y.shape[1]
    return Stage2Problem(
        X=X, Y=Y, weights=row_weights(sample_weight, qids, balanced=query_weighting == "balanced"),
        grades=sample_weight, qids=qids, candidates=candidates,
        targets=match_targets(Y, candidates),
        bases=prior_bases(W_align, d_in, d_d, hybrid),
        blends=_blend_candidates(blend, hybrid, W_align is not None),
        default_blend=DEFAULT_BLEND if hybrid else 1.0,
        intercept=np.zeros(d_d) if b_align is None else np.asarray(b_align, dtype=np.float64),
        hybrid=hybrid, random_state=random_state, verbose=verbose,
    )


def _candidates(corpus, n_rows, dtype, Y, docs, normalize_input):
    """The corpus, or (without one) the alignment documents and the distinct targets."""
    candidates = corpus_matrix(corpus, n_rows, dtype)
    if candidates is None:
        first, _ = unique_rows(Y)
        return Y[first] if docs is None else np.vstack([docs, Y[first]])
    candidates = normalize_rows(candidates, "corpus", normalize_input, warn=False)
    if candidates.shape[1] != Y.shape[1]:
        raise ValueError(
            f"corpus has {candidates.shape[1]} features but Y has {Y.shape[1]}: the "
            "corpus must be embedded by the document encoder."
        )
    return candidates


def _blend_candidates(blend, hybrid, has_prior):
    if not hybrid:
        return [1.0]
    if blend != "auto":
        return [float(blend)]
    return list(AUTO_BLENDS) if has_prior else [0.0]
