"""A bounded, deterministic uniform sample of rows seen in chunks.

Stage 1 sees the alignment documents once, possibly chunk by chunk
(``partial_fit_align``) or spread over Dask blocks; stage 2 later needs a
set of candidate documents when no corpus is given. :class:`Reservoir`
keeps at most ``capacity`` of those rows, chosen uniformly at random.

Each row gets a pseudo-random 64-bit key computed from the seed and the
row's position in the stream (a SplitMix64 hash, which is a bijection, so
keys never tie); the sample is the ``capacity`` rows with the smallest keys
("bottom-k" sampling). A row's key does not depend on how the stream was
cut, so feeding the rows in any chunks, or merging reservoirs of disjoint
row ranges (Dask blocks), gives exactly the same sample.
"""

import numpy as np
from sklearn.utils import check_random_state

from .._utils.validation import l2_normalize, row_norms

#: Default number of rows kept (``align_docs_``).
CAPACITY = 4096

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class Reservoir:
    """Uniform sample of at most ``capacity`` rows from a stream of row chunks.

    Parameters
    ----------
    capacity : int, default=4096
        Most rows kept.
    random_state : int, RandomState instance or None, default=None
        Seeds the row keys; ``None`` draws a seed once, here.
    start : int, default=0
        Stream position of the first row this reservoir will see (a Dask
        block's first row), so that blocks reproduce the stream's keys.
    normalize : bool, default=False
        Keep the rows L2-normalised (only the kept rows are normalised).

    Attributes
    ----------
    n_seen : int
        Stream position after the last row seen.

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn._stage1.reservoir import Reservoir
    >>> rows = np.arange(20.0).reshape(10, 2)
    >>> whole = Reservoir(capacity=3, random_state=0).add(rows)
    >>> chunked = Reservoir(capacity=3, random_state=0).add(rows[:4]).add(rows[4:])
    >>> bool(np.array_equal(whole.sample(), chunked.sample()))
    True
    >>> whole.sample().shape
    (3, 2)
    """

    def __init__(self, capacity=CAPACITY, random_state=None, *, start=0, normalize=False):
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) \
                or capacity < 1:
            raise ValueError(f"capacity must be a positive integer; got {capacity!r}.")
        self.capacity = int(capacity)
        self.seed = _seed(random_state)
        self.n_seen = int(start)
        self.normalize = normalize
        # One entry per slot of the (capacity, d) row buffer; index -1 = free.
        self._keys = np.zeros(self.capacity, dtype=np.uint64)
        self._index = np.full(self.capacity, -1, dtype=np.int64)
        self._rows = None

    def __len__(self):
        return int(np.count_nonzero(self._index >= 0))

    def add(self, rows, sample_weight=None):
        """Offer the next ``len(rows)`` rows of the stream; returns ``self``.

        All-zero rows (no direction) and rows of zero weight are never kept,
        but still take their place in the stream. Only rows that enter the
        sample are copied.
        """
        rows = np.asarray(rows)
        if rows.ndim != 2:
            raise ValueError(f"rows must be 2-D; got shape {rows.shape}.")
        n, start = len(rows), self.n_seen
        self.n_seen += n
        if n == 0:
            return self
        keys = _keys(self.seed, start, n)
        eligible = None if sample_weight is None else np.asarray(sample_weight) > 0
        chosen = self._smallest_eligible(rows, keys, eligible)
        self._insert(keys[chosen], start + chosen, rows, chosen)
        return self

    def merge(self, other):
        """The reservoir of both streams' rows (disjoint ranges, same seed)."""
        if (other.seed, other.capacity) != (self.seed, self.capacity):
            raise ValueError("Only reservoirs with the same capacity and seed can be merged.")
        # The parts' rows are normalised already: insert them as they are.
        out = Reservoir(self.capacity, self.seed, start=max(self.n_seen, other.n_seen))
        for part in (self, other):
            used = np.flatnonzero(part._index >= 0)
            out._insert(part._keys[used], part._index[used], part._rows, used)
        out.normalize = self.normalize
        return out

    __add__ = merge

    def sample(self):
        """The kept rows in stream order, shape (k, d), or None before any row was kept."""
        used = np.flatnonzero(self._index >= 0)
        if not used.size:
            return None
        return self._rows[used[np.argsort(self._index[used])]]

    def _smallest_eligible(self, rows, keys, eligible):
        """Positions (in ``rows``) of the at most ``capacity`` eligible rows with smallest keys."""
        if len(self) == self.capacity:  # only keys below the largest kept one can enter
            tiers = [lambda: np.flatnonzero(keys < self._keys[self._index >= 0].max())]
        else:
            # Keys are uniform: those below about twice the expected
            # capacity-th smallest almost surely hold the winners, and
            # selecting among them avoids partitioning all n keys.
            cut = np.uint64(min(2**64 - 1, 2 * self.capacity / len(keys) * 2**64))
            tiers = [lambda: np.flatnonzero(keys < cut), lambda: np.flatnonzero(keys >= cut)]
        chosen, need = [], self.capacity
        for tier in tiers:
            if not need:
                break
            cand = tier()
            # Eligibility needs the rows' norms: check the best candidates
            # first, and more only when some of them turn out ineligible.
            while need and cand.size:
                if cand.size > need:
                    part = np.argpartition(keys[cand], need - 1)
                    take, cand = cand[part[:need]], cand[part[need:]]
                else:
                    take, cand = cand, cand[:0]
                ok = row_norms(rows[take]) > 0
                if eligible is not None:
                    ok &= eligible[take]
                chosen.append(take[ok])
                need -= int(ok.sum())
        return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)

    def _insert(self, keys, index, source, positions):
        """Keep the ``capacity`` smallest keys among the kept rows and ``source[positions]``."""
        if not len(keys):
            return
        if self._rows is None:
            dtype = source.dtype if source.dtype in (np.float32, np.float64) else np.float64
            self._rows = np.empty((self.capacity, source.shape[1]), dtype=dtype)
        elif source.shape[1] != self._rows.shape[1]:
            raise ValueError(f"rows have {source.shape[1]} columns; earlier rows had "
                             f"{self._rows.shape[1]}.")
        used = np.flatnonzero(self._index >= 0)
        all_keys = np.concatenate([self._keys[used], keys])
        keep = np.arange(len(all_keys))
        if len(all_keys) > self.capacity:
            keep = np.argpartition(all_keys, self.capacity - 1)[: self.capacity]
        new = keep[keep >= len(used)] - len(used)
        self._index[used[~np.isin(np.arange(len(used)), keep)]] = -1  # evicted: slot freed
        # New rows go into free slots: never more than ``capacity`` rows held.
        free = np.flatnonzero(self._index < 0)[: len(new)]
        fresh = source[positions[new]]  # fancy indexing: a copy of its own
        if self.normalize:
            # Normalised in place: the copy is ours (a second n x d copy cost about a
            # quarter of add() on 200,000 x 384 float32).
            fresh = l2_normalize(np.asarray(fresh, dtype=self._rows.dtype), name="rows",
                                 copy=False)
        self._rows[free] = fresh
        self._keys[free], self._index[free] = keys[new], index[new]


def _seed(random_state):
    """A 64-bit seed: an int maps to itself, anything else is drawn from once."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state) % 2**64
    return int(check_random_state(random_state).randint(0, 2**63, dtype=np.int64))


def _keys(seed, start, n):
    """One uint64 key per stream position: the SplitMix64 sequence started at a
    hash of the seed (so nearby seeds give unrelated keys), read at ``start``."""
    salt = np.random.SeedSequence(seed).generate_state(1, np.uint64)[0]
    z = np.arange(start, start + n, dtype=np.uint64)
    z *= _GOLDEN
    z += salt
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z
