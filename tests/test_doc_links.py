"""Every relative link of docs/ and the README reaches its page and its anchor.

``mkdocs build --strict`` checks that a linked page exists, but neither that the
anchor after ``#`` does nor that a link named after a page goes to that page:
``see [Method](index.md)`` went to the home page. Anchors are made as the site
makes them: headings slugified as Python-Markdown's ``toc`` extension does, and
mkdocstrings' object ids under each ``::: object`` directive. Where mkdocs is
installed, the same links are also checked against the ids of the built site.
"""

import importlib
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]

_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_DIRECTIVE = re.compile(r"^::: ([\w.]+)", re.MULTILINE)
_NAV_ENTRY = re.compile(r'^\s*- (?:"([^"]+)"|([^":]+)): (\S+\.md)\s*$', re.MULTILINE)


def prose(page):
    """The page's markdown without its fenced code blocks."""
    return _FENCE.sub("", page.read_text(encoding="utf-8"))


def links(page):
    """``(text, target)`` of every relative link and image of ``page``."""
    return [
        (text, target)
        for _, text, target in _LINK.findall(prose(page))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def plain_text(markdown):
    """Heading or link text as rendered: no code ticks, emphasis or link syntax."""
    text = _LINK.sub(r"\2", markdown)
    return re.sub(r"[`*]", "", text).strip()


def slugify(text):
    """Python-Markdown's ``toc`` slug (its default ``slugify``, separator "-")."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def heading_anchors(page):
    """Ids of the page's headings; repeats get ``_1``, ``_2`` as the toc extension does."""
    anchors = set()
    for _, heading in _HEADING.findall(prose(page)):
        slug = base = slugify(plain_text(heading))
        n = 0
        while slug in anchors:
            n += 1
            slug = f"{base}_{n}"
        anchors.add(slug)
    return anchors


def documents_object(page, anchor):
    """Whether a ``::: target`` directive of ``page`` renders the object ``anchor`` names.

    mkdocstrings gives each rendered object its dotted path as id: the target and
    its public members (a module's ``__all__``, a class's public attributes).
    """
    for target in _DIRECTIVE.findall(page.read_text(encoding="utf-8")):
        if anchor == target:
            return True
        if not anchor.startswith(target + "."):
            continue
        module, _, name = target.rpartition(".")
        obj = getattr(importlib.import_module(module), name)
        for i, part in enumerate(anchor[len(target) + 1 :].split(".")):
            public = getattr(obj, "__all__", None) if i == 0 else None
            if part.startswith("_") or (public is not None and part not in public):
                break
            obj = getattr(obj, part, None)
            if obj is None:
                break
        else:
            return True
    return False


def nav_titles():
    """``{title: page}`` of the site's navigation, optional pages included."""
    entries = _NAV_ENTRY.findall((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    titles = {(quoted or plain).strip(): page for quoted, plain, page in entries}
    sys.path.insert(0, str(DOCS))
    try:
        hooks = importlib.import_module("_hooks")
    finally:
        sys.path.remove(str(DOCS))
    titles.update(dict(hooks.OPTIONAL_PAGES))
    return titles


def resolve(page, target):
    """``(file, anchor)`` a relative link of ``page`` points to (its own file for ``#x``)."""
    path, _, anchor = target.partition("#")
    return (page.parent / path).resolve() if path else page, anchor


def broken_links(page, titles):
    """Why each broken link of ``page`` is broken."""
    broken = []
    for text, target in links(page):
        file, anchor = resolve(page, target)
        where = f"{page.name}: [{text}]({target})"
        if not file.exists():
            broken.append(f"{where}: no file {file}")
        elif anchor and file.suffix == ".md" and not (
            anchor in heading_anchors(file) or documents_object(file, anchor)
        ):
            broken.append(f"{where}: no heading or object #{anchor} in {file.name}")
        named = titles.get(plain_text(text))
        if named and file != DOCS / named:
            broken.append(f"{where}: the text names the page {named}, the link goes elsewhere")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_reach_page_and_anchor(page):
    assert not broken_links(page, nav_titles())


def test_link_check_catches_what_it_should(tmp_path):
    # A page with one link of each broken kind, and correct ones beside them.
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# A title\n\n## Stage 1: align (`fit_align`)\n\n"
        "[ok](#stage-1-align-fit_align) [ok](../docs/page.md#a-title) "
        "[`ranking_score`](" + str(DOCS / "api.md") + "#era_sklearn.metrics.ranking_score)\n"
        "[gone](missing.md) [bad](#no-such-heading) [Method](page.md) "
        "[private](" + str(DOCS / "api.md") + "#era_sklearn.metrics._reduce) "
        "[imported](" + str(DOCS / "api.md") + "#era_sklearn.metrics.normalize)\n"
        "```python\n[not a link](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    broken = broken_links(page, {"Method": "method.md"})
    assert [b.split(": ", 2)[1] for b in broken] == [
        "[gone](missing.md)", "[bad](#no-such-heading)", "[Method](page.md)",
        f"[private]({DOCS / 'api.md'}#era_sklearn.metrics._reduce)",
        f"[imported]({DOCS / 'api.md'}#era_sklearn.metrics.normalize)",
    ]


def html_ids(site, file):
    """The ``id`` attributes of the built page of the docs file ``file``."""
    rel = file.relative_to(DOCS)
    html = site / ("index.html" if rel.stem == "index" else f"{rel.with_suffix('')}/index.html")
    return set(re.findall(r'\bid="([^"]+)"', html.read_text(encoding="utf-8")))


def test_links_reach_ids_of_the_built_site(tmp_path):
    """The same links against the real site: built with --strict, each anchor an id there."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    missing, checked = [], 0
    for page in PAGES:
        for text, target in links(page):
            file, anchor = resolve(page, target)
            if not anchor or file.suffix != ".md" or not file.is_relative_to(DOCS):
                continue
            checked += 1
            if anchor not in html_ids(site, file):
                missing.append(f"{page.name}: [{text}]({target})")
    assert checked >= 10 and not missing
