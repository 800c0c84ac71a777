"""Execute the ```python blocks of the documentation pages.

Each page's blocks run in order in one namespace, as a reader would paste
them, so the examples in the docs cannot drift from the API.
"""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ["quickstart.md", "user_guide.md", "persistence.md", "../README.md"]
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", flags=re.DOTALL | re.MULTILINE)


def python_blocks(page):
    return _BLOCK.findall((DOCS / page).read_text())


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page, monkeypatch, tmp_path):
    blocks = python_blocks(page)
    assert blocks, f"{page} has no python code block"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{Path(page).stem}"}
    import sklearn

    with sklearn.config_context():  # a page that changes the global config cannot leak it
        for i, block in enumerate(blocks):
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
