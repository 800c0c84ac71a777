"""File formats (layer 2). They take the estimator class or instance as an argument and
never import it (nor the package): what a fitted state holds is the class's declaration.

- ``safetensors_file``: the container (bounded reader, digest, atomic write);
- ``state_codec``: the fitted state as tagged JSON and tensors, and back;
- ``schema``: the vocabulary an estimator declares its state in, and the check;
- ``registry``: the classes a file may name, by stable names;
- ``persistence``: the format's fields, ``save_adapter`` / ``load_adapter``;
- ``legacy``: the bounded reader of era-sklearn 0.1 ``.npz`` files.
"""
