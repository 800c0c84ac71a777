"""Vector indexes (layer 3): exact and HNSW indexes, the HNSW file format, search over
adapted queries. Imports layers 1-2.
"""
