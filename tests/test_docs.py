"""Execute the ```python blocks of the documentation pages.

Each page's blocks run in order in one namespace, as a reader would paste
them, so the examples in the docs cannot drift from the API. A block that opens
with :data:`NEEDS_TORCH` needs the torch extra: where torch is absent it is left
out, and the blocks after it must run without its names.
"""

import importlib.util
import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ["quickstart.md", "user_guide.md", "persistence.md", "api.md", "../README.md"]
#: First line of a block that needs ``pip install "era-sklearn[torch]"`` (shown to readers too).
NEEDS_TORCH = '# needs torch: pip install "era-sklearn[torch]"'
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", flags=re.DOTALL | re.MULTILINE)


def python_blocks(page):
    return _BLOCK.findall((DOCS / page).read_text())


# The user guide shows a label-only fit (the baseline), which warns as it should.
@pytest.mark.filterwarnings("ignore:fit without a stage-1 map")
@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page, monkeypatch, tmp_path):
    blocks = python_blocks(page)
    assert blocks, f"{page} has no python code block"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{Path(page).stem}"}
    import sklearn

    has_torch = importlib.util.find_spec("torch") is not None
    with sklearn.config_context():  # a page that changes the global config cannot leak it
        for i, block in enumerate(blocks):
            if block.startswith(NEEDS_TORCH) and not has_torch:
                continue
            code = compile(block, f"{DOCS / page}[python block {i}]", "exec")
            exec(code, namespace)  # noqa: S102 - the docs' own examples


def test_every_page_in_nav_exists():
    import yaml

    config = yaml.safe_load(
        (DOCS.parent / "mkdocs.yml").read_text().replace("!!python", "")
    )
    for entry in config["nav"]:
        (page,) = entry.values()
        assert (DOCS / page).exists(), page


#: ``a, b = <...>search(...)`` or ``<...>kneighbors(...)`` in code: what each name unpacks.
_UNPACK = re.compile(r"^\s*(?:>>> )?(\w+), (\w+) = .*\b(?:search|kneighbors)\(", re.MULTILINE)
_VALUES, _IDS = re.compile(r"score|dist|sim|^_$"), re.compile(r"ids|ind|rows|top|neigh")


def test_search_results_unpack_values_first():
    """Docs, docstrings and benchmarks unpack every search as (values, ids), as the API returns."""
    root = DOCS.parent
    files = [*DOCS.glob("*.md"), root / "README.md", *root.glob("era_sklearn/**/*.py"),
             *root.glob("benchmarks/*.py")]
    unpacked = [(f.name, *m.groups()) for f in files for m in _UNPACK.finditer(f.read_text())]
    assert len(unpacked) >= 8  # the pattern finds the examples it is meant to check
    wrong = [u for u in unpacked if not (_VALUES.search(u[1]) and _IDS.search(u[2]))]
    assert not wrong, f"(file, first, second) unpacked ids first: {wrong}"


def test_api_page_lists_every_public_name():
    """api.md's tables (read as plain markdown on GitHub) name each public name exactly once,
    and a ``:::`` directive renders each one on the site."""
    import inspect

    import era_sklearn

    page = (DOCS / "api.md").read_text()
    listed = re.findall(r"^\| `(\w+)` \|", page, flags=re.MULTILINE)
    directives = set(re.findall(r"^::: ([\w.]+)", page, flags=re.MULTILINE))
    modules = [era_sklearn, *(getattr(era_sklearn, m) for m in
                              ("align", "adapt", "encoders", "metrics", "datasets"))]
    public = {
        name: module.__name__
        for module in modules
        for name in module.__all__
        if not name.startswith("__") and not inspect.ismodule(getattr(module, name))
    }
    assert sorted(listed) == sorted(public)  # every name, none twice, none stale
    # A name is rendered by its own directive, or by its submodule's (never by all of era_sklearn).
    unrendered = [n for n, m in public.items()
                  if f"{m}.{n}" not in directives and (m == "era_sklearn" or m not in directives)]
    assert not unrendered


#: What only the torch extra runs, as the docs' examples would write it.
_TORCH_ONLY = re.compile(r"TorchAlign\(|Contrastive\(|paper_recipe\(|from_era_checkpoint\(|"
                         r"^import torch|[\"'](torch|contrastive)[\"']", flags=re.MULTILINE)


@pytest.mark.parametrize("page", PAGES)
def test_torch_blocks_say_so(page):
    """A block that runs a torch-only feature opens with NEEDS_TORCH, for readers and for
    the torch-free CI run (which leaves such blocks out)."""
    for i, block in enumerate(python_blocks(page)):
        if _TORCH_ONLY.search(block):
            assert block.startswith(NEEDS_TORCH), f"{page} python block {i} needs torch"
