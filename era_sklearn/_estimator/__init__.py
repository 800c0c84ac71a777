"""The estimator (layer 5) and, above it (layer 6), the presets and the 0.1 file converter,
which build an ERAAdapter.

``adapter`` holds the class: validation, orchestration and fitted state. Each job it
orchestrates is a small module of functions that return values: ``params`` (solver
parameters), ``stage1`` (the align problem in memory or on Dask), ``stream``
(partial_fit_align's pinned settings and sums), ``hybrid`` (the layout of hybrid input),
``rows`` (shared row rules), ``stage2_problem`` (the stage-2 problem and prior), ``mapping``
(transform and score), ``persistence`` (save, load, checkpoint import, export) and
``state_schema`` (the fitted state it declares, and the solver registry).
"""
