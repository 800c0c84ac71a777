"""Stage 2, training from labels (layer 3): the problem, queries, corpus and candidates,
the held-out rules, the softmax objective and its penalty search. Imports layers 1-2.
"""
