"""The estimator (layer 5) and its presets (layer 6): ERAAdapter's validation,
orchestration and fitted state.

``adapter`` holds the class; each job it orchestrates is a small module of functions that
return values: ``params`` (solver parameters), ``stage1`` (the align problem in memory or
on Dask), ``stream`` (partial_fit_align's pinned settings and sums), ``hybrid`` (the layout
of hybrid input), ``rows`` (shared row rules), ``stage2_problem`` (the stage-2 problem and
prior), ``mapping`` (transform and score).
"""
