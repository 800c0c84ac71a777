"""Text encoders (layers 2-3): the encoder base, the embedding cache, the bounded HTTP client,
the OpenAI client, model-name resolution, the adapted encoder and Chroma glue.
"""
