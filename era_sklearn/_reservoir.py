"""A bounded uniform sample of rows seen chunk by chunk (temporary; helper 'stats' replaces it)."""

import numpy as np


class Reservoir:
    """Keep the ``capacity`` rows with the smallest random keys: a uniform sample."""

    def __init__(self, capacity, random_state=None):
        self.capacity = capacity
        self._rng = np.random.default_rng(random_state if isinstance(random_state, int) else None)
        self._rows = None
        self._keys = np.empty(0)

    def add(self, rows):
        if len(rows) == 0:
            return self
        keys = self._rng.random(len(rows))
        rows = rows if self._rows is None else np.vstack([self._rows, rows])
        keys = np.concatenate([self._keys, keys])
        order = np.argsort(keys, kind="stable")[: self.capacity]
        self._rows, self._keys = rows[order], keys[order]
        return self

    def sample(self):
        return self._rows
