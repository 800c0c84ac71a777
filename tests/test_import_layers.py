"""The package's import graph: no cycles, and imports only go down the layers (issue 20).

The graph is read with ``ast`` from every module's source, function-level imports
included (an import inside a function that dodges a cycle is still an edge), so a
module that reaches up is caught whether or not the import runs at import time.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "era_sklearn"

#: Lowest first. A module belongs to the first entry whose prefix it matches; the
#: entries follow the layer order of DEVELOPERS.md / shared STYLE.md.
LAYERS = [
    ("shared utilities", ["era_sklearn._utils"]),
    ("foundations", ["era_sklearn._stage1", "era_sklearn._transform", "era_sklearn._metrics",
                     "era_sklearn._index.base", "era_sklearn._index.hnsw_format",
                     "era_sklearn._io", "era_sklearn._text.base", "era_sklearn._text.cache",
                     "era_sklearn._text.bounded_http", "era_sklearn._text.hub",
                     "era_sklearn.datasets"]),
    # metrics scores retrieval against a corpus, so it sits beside stage 2 (whose corpus
    # matcher it uses); the kernels below it are in _metrics.
    ("engines", ["era_sklearn._stage2", "era_sklearn._torch", "era_sklearn._index",
                 "era_sklearn._text", "era_sklearn.encoders", "era_sklearn.metrics"]),
    ("public solver modules", ["era_sklearn.align", "era_sklearn.adapt"]),
    ("the estimator", ["era_sklearn._estimator.presets", "era_sklearn._estimator.legacy_convert",
                       "era_sklearn._estimator"]),
    ("presets, legacy converter, __init__", []),
]
#: Modules of the top layer, matched exactly (their prefixes also name lower modules).
TOP = {"era_sklearn", "era_sklearn._estimator.presets", "era_sklearn._estimator.legacy_convert"}


def module_name(path, root=PACKAGE):
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name):
    if name in TOP:
        return len(LAYERS) - 1
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS")


def imports_of(path, root=PACKAGE):
    """``era_sklearn`` modules imported anywhere in ``path`` (function bodies included)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "era_sklearn")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "era_sklearn":
                continue
            for alias in node.names:  # `from pkg import module` names a module
                candidate = f"{source}.{alias.name}"
                found.add(candidate if _is_module(candidate, root) else source)
    found.discard(name)
    return found


def _is_module(name, root):
    relative = Path(*name.split(".")[1:])
    return (root / relative).with_suffix(".py").is_file() or (root / relative).is_dir()


def graph():
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    for name in graph():
        layer_of(name)


def test_imports_only_go_down():
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in graph().items() for b in sorted(targets)
              if layer_of(b) > layer_of(a)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    edges = graph()
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("source, expected", [
    ("from ..align import Procrustes\n", {"era_sklearn.align"}),
    ("def f():\n    from .. import adapt\n", {"era_sklearn.adapt"}),
    ("import era_sklearn\n", {"era_sklearn"}),
    ("from .statistics import PairStatistics\n", {"era_sklearn._stage1.statistics"}),
])
def test_the_reader_sees_relative_late_and_absolute_imports(source, expected, tmp_path):
    # The checks above can only fail if the reader finds the edges: shown on a module
    # placed in a copy's era_sklearn/_stage1/, so ``..`` is the package.
    root = tmp_path / "era_sklearn"
    (root / "_stage1").mkdir(parents=True)
    for name in ("align.py", "adapt.py", "_stage1/statistics.py"):
        (root / name).write_text("")
    probe = root / "_stage1" / "probe.py"
    probe.write_text(source)
    assert imports_of(probe, root) == expected
    upward = {b for b in expected if layer_of(b) > layer_of("era_sklearn._stage1.probe")}
    assert upward == expected - {"era_sklearn._stage1.statistics"}


def test_the_one_version_string_is_pyprojects():
    import tomllib

    from era_sklearn._utils.version import __version__

    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == __version__


def test_the_code_map_names_every_subpackage():
    """docs/architecture.md lists each private subpackage, and no other."""
    import re

    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"`era_sklearn/(_[a-z0-9_]+)/`", page))
    present = {p.parent.name for p in PACKAGE.glob("_*/__init__.py")}
    assert listed == present
