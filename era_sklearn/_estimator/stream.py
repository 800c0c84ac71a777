"""The state of a ``partial_fit_align`` stream: the settings its first chunk pinned, and the
statistics and document sample of every chunk since.

A chunk fed with other settings than the first would mix two problems in one
sum, and a map solved with the current settings would be labelled with
settings it was not fed with; so the first chunk records them and later
chunks must match.
"""

from dataclasses import dataclass

from sklearn.base import clone

from .._stage1.problem import AlignProblem
from .._stage1.reservoir import Reservoir
from .._stage1.statistics import PairStatistics
from .stage1 import (
    align_fingerprint,
    alignment_pairs,
    new_reservoir,
    pair_statistics,
    solve,
    solver_settings,
)


@dataclass
class AlignStream:
    """Pinned settings (``solver`` is a clone) and what the chunks have accumulated."""

    solver: object
    normalize_input: bool
    hybrid: bool
    blend: object
    d_d: int
    docs: Reservoir
    stats: PairStatistics | None = None

    @classmethod
    def start(cls, solver, *, normalize_input, hybrid, blend, d_d, random_state):
        return cls(clone(solver, safe=False), normalize_input, hybrid, blend, d_d,
                   new_reservoir(normalize_input, random_state))

    @staticmethod
    def check_continues(stream, solver, align_coef, **settings):
        """A chunk continues ``stream`` with its settings, or starts one on an unaligned
        adapter: a map from fit_align or load has no statistics to add to."""
        if stream is not None:
            stream.check_settings(solver, **settings)
        elif align_coef is not None:
            raise ValueError(
                "This adapter already has a stage-1 map from fit_align or load, whose "
                "statistics are not kept: partial_fit_align cannot continue it. Stream into "
                "a new ERAAdapter (or call fit_align on all the data)."
            )

    @property
    def fingerprint(self):
        return align_fingerprint(self.solver, self.normalize_input, self.hybrid)

    def check_settings(self, solver, *, normalize_input, hybrid, blend):
        """Raise a ValueError naming the first setting that differs from the first chunk's."""
        pinned = {"align": solver_settings(self.solver), "normalize_input": self.normalize_input,
                  "hybrid": self.hybrid, "blend": self.blend}
        current = {"align": solver_settings(solver), "normalize_input": normalize_input,
                   "hybrid": hybrid, "blend": blend}
        for name, value in pinned.items():
            if current[name] != value:
                raise ValueError(
                    f"partial_fit_align: {name} is {current[name]} but this stream's first chunk "
                    f"was fed with {value}; a stream keeps the settings of its first chunk. Set "
                    f"{name} back, or call fit_align (or partial_fit_align on a new ERAAdapter) "
                    "to align with the new setting."
                )

    def check_width(self, d_d):
        if d_d != self.d_d:
            raise ValueError(
                f"Y has {d_d} features, but earlier chunks had {self.d_d} "
                "(the document encoder's width)."
            )

    def feed(self, X, Y, sample_weight, *, random_state, verbose, dtype):
        """Add one validated chunk and solve the map of every chunk so far, with the pinned
        solver: ``(coef, intercept, docs sample, history)``. One d x d solve per chunk keeps
        the fitted attributes plain values, never computed when read."""
        Xq, w = alignment_pairs(X, Y, sample_weight, self.hybrid)
        self.check_width(Y.shape[1])
        chunk = pair_statistics(self.solver, Xq, Y, w, self.normalize_input)
        self.stats = chunk if self.stats is None else self.stats + chunk
        self.docs.add(Y, w)
        problem = AlignProblem(stats=self.stats, random_state=random_state, verbose=verbose)
        W, b, history = solve(self.solver, problem, dtype)
        return W, b, self.docs.sample(), history
