"""The documents a softmax stage 2 ranks each labelled query against.

A corpus up to ``max_candidates`` documents (default :data:`MAX_CANDIDATES`)
is used whole. Above that, :func:`bounded_candidates` keeps a bounded,
deterministic set: every positive, the best-ranked documents under the prior
(``top_k`` per query, taken rank by rank across queries) and a fixed random
sample. Memory: the candidate matrix holds at most
``max(max_candidates, n_positives + 1)`` rows; building it takes, beyond the
corpus itself, score blocks of at most 2**22 cells (16 MB) and
``n_queries * top_k`` indices. Measured with SciFact plus 200,000 distractors
(384-d, 301 MiB): 20,000 candidates in about 9 s (one thread), traced peak
319 MiB (target matching included).

The targets arrive matched to corpus rows by
:func:`era_sklearn._stage2.corpus.match_targets`, the package's one matcher.
All-zero corpus rows stay zero candidates: they score 0 against every query,
never NaN.
"""

from __future__ import annotations

import numpy as np

from .._utils.validation import row_norms

#: Corpora up to this many documents are used whole.
MAX_CANDIDATES = 20_000

#: Per-query depth of the prior's ranking mined for large corpora.
TOP_K = 100

#: Share of the non-positive budget given to a uniform random sample (the
#: rest goes to documents the prior ranks high): the final ranking is over the
#: whole corpus, so the objective must also see documents the prior ranks low.
RANDOM_SHARE = 0.25

_SCORE_CELLS = 1 << 22


def bounded_candidates(corpus, doc_idx, *, queries=None, max_candidates=MAX_CANDIDATES,
                       top_k=TOP_K, random_state=None):
    """The candidate set of a large corpus; a small one (``max_candidates`` or fewer) whole.

    ``doc_idx`` holds each target's corpus row (-1: none), as
    :func:`era_sklearn._stage2.corpus.match_targets` found it. Returns
    ``(candidates, doc_idx, chosen)``: the candidate rows, each target's
    candidate row (-1 kept) and each candidate's corpus row.
    """
    n_docs = len(corpus)
    if n_docs <= max_candidates:
        return corpus, doc_idx, np.arange(n_docs)
    positives = np.unique(doc_idx[doc_idx >= 0])
    budget = max(max_candidates - len(positives), 1)
    n_random = round(RANDOM_SHARE * budget) if queries is not None else budget
    taken = np.zeros(n_docs, dtype=bool)
    taken[positives] = True
    hard = _top_ranked(queries, corpus, top_k, taken, budget - n_random)
    taken[hard] = True
    pool = np.flatnonzero(~taken)
    rng = np.random.default_rng(random_state)
    # The random share also fills what the top ranks left (few queries, small top_k).
    random = rng.choice(pool, size=min(budget - len(hard), len(pool)), replace=False)
    chosen = np.sort(np.concatenate([positives, hard, random]))
    position = np.full(n_docs, -1, dtype=np.int64)
    position[chosen] = np.arange(len(chosen))
    return corpus[chosen], np.where(doc_idx >= 0, position[doc_idx], -1), chosen


def _top_ranked(queries, corpus, top_k, taken, n_wanted):
    """Up to ``n_wanted`` documents not ``taken``, best ranks first across queries."""
    if queries is None or n_wanted <= 0:
        return np.empty(0, dtype=np.int64)
    k = min(top_k, len(corpus))
    step = max(1, _SCORE_CELLS // len(corpus))
    norms = row_norms(corpus)
    scale = np.where(norms > 0, 1 / np.where(norms > 0, norms, 1), 0).astype(np.float32)
    docs = corpus.astype(np.float32, copy=False)
    ranks = []
    for start in range(0, len(queries), step):
        S = np.asarray(queries[start:start + step], np.float32) @ docs.T
        S *= scale
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(S, top, axis=1), axis=1, kind="stable")
        ranks.append(np.take_along_axis(top, order, axis=1))
    # Column-major ravel: every query's best document, then every second best, ...
    by_rank = np.concatenate(ranks).ravel(order="F")
    by_rank = by_rank[~taken[by_rank]]
    _, first = np.unique(by_rank, return_index=True)
    return by_rank[np.sort(first)][:n_wanted]
