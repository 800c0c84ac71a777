"""Vector indexes: ``base`` (layer 2: the surface both indexes share and ``stored_vectors``,
which stage 2 reads) and ``hnsw_format`` (layer 2: the HNSW file check); ``exact``, ``hnsw``
and ``search`` (layer 3). Imports layers 1-2.
"""
