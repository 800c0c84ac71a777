"""File formats (layer 2): the safetensors state format and the 0.1 legacy format. They take
the estimator class or instance as an argument and never import it.
"""
